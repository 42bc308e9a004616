"""The plan being made: the public object that the planners fill in, and `planner` turns into a `Plan`.

A planner (`session_plan`, `schema_plan`) reads the audit context and the options, and adds steps,
notes and what the preflight must check (index names it claims, tables it alters, tables its foreign
keys reference). The preflight is built once, last, from what the draft holds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..catalog import QualifiedName
from ..context import AuditContext
from ..engine.steps import Step
from .cascade import Removal
from .ddl import Built
from .plan import FixOptions


@dataclass
class Draft:
    ctx: AuditContext
    options: FixOptions
    version: int                                    # server_version_num
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # (schema, index name, table, column) of every index the plan creates: the name must be free
    index_claims: list[tuple[str, str, str, str]] = field(default_factory=list)
    altered: list[QualifiedName] = field(default_factory=list)     # tables altered (owner needed)
    referenced: list[QualifiedName] = field(default_factory=list)  # tables FKs reference (REFERENCES needed)
    migrated: list = field(default_factory=list)    # the key tables the session migration covers
    session_last: list[str] = field(default_factory=list)   # the session migration's last changes
    # (table, reason) -> each delete of the plan, for its counts and the preflight's refusals
    removals: dict[tuple[QualifiedName, str], Removal] = field(default_factory=dict)
    # (table, column) -> (table, the predicate as the database is now, label): each null-out of the plan
    # (user ids set NULL), for the share each table loses (fix/shares.py)
    nulled: dict[tuple, tuple] = field(default_factory=dict)
    # what the data said, by probe key (`measure_probes`): implied FKs, missing users, early writes
    evidence: dict[str, list[tuple]] = field(default_factory=dict)

    @property
    def master(self) -> QualifiedName:
        return self.ctx.config.master

    @property
    def key(self) -> str:
        return self.ctx.config.key_column

    @property
    def our_indexes(self) -> list[str]:
        return [c[1] for c in self.index_claims]

    def add(self, step: Step) -> Step:
        self.steps.append(step)
        return step

    def take(self, built: Built) -> list[str]:
        """Add what a builder made; returns the ids after which its result is in place."""
        self.steps += built.steps
        self.index_claims += built.claims
        return list(built.last)

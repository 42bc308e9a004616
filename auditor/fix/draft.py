"""The plan being made: the public object that the planners fill in, and `planner` turns into a `Plan`.

A planner (`session_plan`, `schema_plan`, `users_plan`) reads the audit context and the options, decides
which operations of fix/ops/ to add and in what order, and adds their steps and its notes. What the
preflight must check, each step declares itself (fix/ops/__init__.py, `Needs`); the preflight is built
once, last, from the draft's steps.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..catalog import QualifiedName
from ..context import AuditContext, KeyTable
from ..engine.steps import Step
from .ddl import Built
from .plan import FixOptions


@dataclass
class Draft:
    ctx: AuditContext
    options: FixOptions
    version: int                                    # server_version_num
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    migrated: list[KeyTable] = field(default_factory=list)   # the key tables the session migration covers
    # what the data said, by probe key (`measure_probes`): implied FKs, missing users, early writes
    evidence: dict[str, list[tuple]] = field(default_factory=dict)
    # reasons not to start that the planning itself found: the preflight returns them (before the first change)
    refusals: list[str] = field(default_factory=list)

    @property
    def master(self) -> QualifiedName:
        return self.ctx.config.master

    @property
    def key(self) -> str:
        return self.ctx.config.key_column

    def add(self, step: Step) -> Step:
        self.steps.append(step)
        return step

    def take(self, built: Built) -> list[str]:
        """Add what a builder made; returns the ids after which its result is in place."""
        self.steps += built.steps
        return list(built.last)

"""Operation: rows moved out to the quarantine (yumai_quarantine.<schema>__<table>) before a change.

The malformed step moves the rows whose key is not of the key type (`malformed_step`); the orphans,
the catch-ups, the gate and `--missing-users quarantine` move theirs with the same statements
(`move_rows`): every row a cascade would delete goes to its own quarantine table, in the transaction
of the delete (auditor/fix/cascade.py). Guard: the key has the key type, or no row is malformed. What
the moves reach through foreign keys is refused by the preflight when it cannot be done, and so is a
table the plan would take too large a share of (`refusals`, from the steps' `Removal`s).
"""
from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from yumai_audit.checks.malformed_session_ids import MalformedSessionIds
from yumai_audit.checks.predicates import key_malformed

from ...catalog import QualifiedName
from ...context import KeyTable
from ...engine.steps import LockMode, Query, Step
from ...operations import Operation
from ...sqlparts import table_ref
from .. import cascade, shares
from ..ddl import column_has_type
from ..draft import Draft
from ..orphans_now import OrphansNow
from . import Declared, Needs

REPAIRS = (MalformedSessionIds.id,)   # a key value that is not of the key type


def quarantine_name(k: KeyTable) -> QualifiedName:
    return cascade.quarantine_name(k.name)


@dataclass(frozen=True)
class Moved:
    """Statements that take rows out of a table (to the quarantine, or deleted), and their `Removal`
    for the preflight (None: they take nothing out)."""

    statements: tuple[Query, ...]
    removal: cascade.Removal | None = None

    @property
    def needs(self) -> Needs:
        return Needs(removals=(self.removal,)) if self.removal is not None else Needs()


def move_rows(d: Draft, k: KeyTable, predicate: sql.Composable, reason: str,
              now: OrphansNow | None = None) -> Moved:
    """Statements that move the rows matching `predicate` to the quarantine table, with every row a
    cascade would delete, each to its own (one transaction; auditor/fix/cascade.py). `now`: the rows
    (orphans) as the database is when the plan is made (counts, preflight), when they differ."""
    g = cascade.of_table(d.ctx.catalog, k.table)
    label = f"the quarantine of {reason} rows of {k.name}"
    return Moved(cascade.quarantine_statements(g, predicate, reason),
                 cascade.Removal(g, now.predicate if now is not None else predicate, label, True, now))


def malformed_step(d: Draft, k: KeyTable, after: str) -> Step:
    """A text key's rows whose value is not of the key type, to the quarantine (before the conversion)."""
    name = str(k.name)
    moved = move_rows(d, k, key_malformed(k.key), "malformed")
    return cascade.widen(Declared(
        id=f"malformed:{name}", operation=Operation.QUARANTINE_MALFORMED,
        description=f"Move rows of {name} whose {k.key.name} is not {d.ctx.key_type_phrase} to {quarantine_name(k)}",
        statements=moved.statements, lock=LockMode.ROW_EXCLUSIVE, tables=(name,), depends_on=(after,),
        guard=sql.SQL("SELECT {} OR NOT EXISTS (SELECT 1 FROM {} t WHERE {})").format(
            column_has_type(k.name, k.key.name, d.ctx.key_type.name), table_ref(k.name), key_malformed(k.key)),
        changes=(name,), target=name, column=k.key.name, repairs=REPAIRS, needs=moved.needs),
        cascade.of_table(d.ctx.catalog, k.table))


def refusals(removals: tuple[cascade.Removal, ...], nulled: tuple[shares.NullOut, ...],
             limit: float) -> list[sql.Composable]:
    """What the plan's removals cannot do (fix/cascade.py), and a table the removals and the null-outs
    would take more than `limit` percent of (fix/shares.py)."""
    return [*cascade.preflight_parts(removals), *shares.refusal(removals, nulled, limit)]

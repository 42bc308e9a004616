"""Operation: the rows whose session exists nowhere (neither in the master nor in the source table).

`--orphans quarantine` (default) moves them to the quarantine with what their foreign keys reach,
`register` registers their sessions in the master, `delete` deletes them (`orphan_statements`; the
catch-ups and the gate run the same statements again). Guard: no orphan is left (`orphan_guard`). The
rows taken out are refused by the preflight when a table would lose too much (fix/ops/quarantine.py).
When the plan migrates the source table, these steps come after its validated foreign key to the master,
so the guard and the statements look a key up in the master alone (`registration.after_source_fk`): the
same rows, one hashed or indexed lookup instead of a probe of every source partition per row. A guard
evaluated earlier (a resumed plan, before that FK) can only count more rows: the step then runs, and its
guard, evaluated again right before it, is exact.
"""
from __future__ import annotations

from psycopg import sql

from yumai_audit.checks.orphaned_session_ids import OrphanedSessionIds
from yumai_audit.checks.predicates import key_uuid

from ...context import KeyTable
from ...engine.guards import no_rows
from ...engine.steps import LockMode, Step
from ...operations import Operation
from ...sqlparts import table_ref
from .. import cascade
from ..draft import Draft
from ..registration import after_source_fk, key_after, orphaned, register_sessions
from . import Declared
from .quarantine import Moved, move_rows, quarantine_name

REPAIRS = (OrphanedSessionIds.id,)   # a valid key whose session exists nowhere


def orphan_statements(d: Draft, k: KeyTable) -> Moved:
    key = key_after(k)
    pred = orphaned(d, key, after_source_fk(d, k))
    mode = d.options.orphans
    if mode == "quarantine":
        return move_rows(d, k, pred, "orphaned", cascade.orphans_now(d.ctx, k))
    if mode == "register":
        return Moved((register_sessions(d, k, sql.SQL("SELECT DISTINCT {} AS sid FROM {} t WHERE {}").format(
            key_uuid(key), table_ref(k.name), pred)),))
    now = cascade.orphans_now(d.ctx, k)
    return Moved((sql.SQL("DELETE FROM {} AS t WHERE {}").format(table_ref(k.name), pred),), cascade.Removal(
        cascade.of_table(d.ctx.catalog, k.table), now.predicate, f"the delete of orphaned rows of {k.name}", False,
        now))


def orphan_guard(d: Draft, k: KeyTable) -> sql.Composed:
    return no_rows(table_ref(k.name), orphaned(d, key_after(k), after_source_fk(d, k)))


def orphan_description(d: Draft, k: KeyTable) -> str:
    what = {"quarantine": f"move to {quarantine_name(k)} (same transaction as the delete)",
            "register": f"register their sessions in {d.master}",
            "delete": "delete them"}[d.options.orphans]
    return f"Rows of {k.name} whose session is in neither {d.master} nor the source table: {what}"


def orphans_step(d: Draft, k: KeyTable, after: list[str]) -> Step:
    """The orphans of key table `k` (not the source), after the steps `after`."""
    name, m = str(k.name), str(d.master)
    register = d.options.orphans == "register"
    taken = orphan_statements(d, k)
    return cascade.widen_orphans(d.ctx, d.options.orphans, k, Declared(
        id=f"orphans:{name}", operation=Operation.ORPHANS, description=orphan_description(d, k),
        statements=taken.statements, lock=LockMode.ROW_EXCLUSIVE, tables=(name, m) if register else (name,),
        depends_on=tuple(after), guard=orphan_guard(d, k), changes=(m,) if register else (name,), target=name,
        column=k.key.name, repairs=REPAIRS, needs=taken.needs))

"""Operation: the catch-up, between a key table's NOT VALID foreign key and VALIDATE (the settle), and on the
source table also right before its foreign key.

It registers the sessions written since the backfill (what the master lacks, from the whole source)
and drops the backfill's bookkeeping; on a table other than the source it also handles its new
orphans (`--orphans`, the orphans' statements). Guard: the backfill's progress table is gone and no
row of the table lacks its session in the master (or, without a source, no orphan is left). Another
key table has no catch-up before its key: its settle does the same, later (fix/session_plan.py, `fk_steps`).
The settle runs on demand in `fix --apply` (ops/foreign_key.py, `fk_sequence`): only when a step that checks the
key's rows fails on one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from psycopg import sql

from ...context import KeyTable
from ...engine.steps import LockMode, Query
from ...operations import Operation
from .. import cascade
from ..ddl import Built
from ..draft import Draft
from ..registration import backfill_all, backfill_guard, key_after
from . import Declared, Deliberate, Needs, backfill, master, orphans

REPAIRS = master.REPAIRS + orphans.REPAIRS   # the source's catch-up repairs the master's only

LINT = (
    Deliberate(("ban-drop-table",), Operation.CATCHUP,
               re.compile(r"^DROP TABLE IF EXISTS "
                          + re.escape(f'"{backfill.PROGRESS.schema}"."{backfill.PROGRESS.name}"')),
               "the backfill's own bookkeeping in the tool's schema, never the application's: once the catch-up "
               "has registered every session, the walks' positions are moot"),
)


@dataclass(frozen=True)
class CatchUp:
    """Key table `k`'s catch-up: its statements (none: no step), when it is done, what it takes out."""

    d: Draft
    k: KeyTable
    statements: tuple[Query, ...]
    guards: tuple[sql.Composable, ...]
    needs: Needs

    def steps(self, step_id: str, deps: list[str], why: str) -> Built:
        """The catch-up step after `deps` (`why`: when it runs); without statements, nothing after `deps`."""
        d, k = self.d, self.k
        name, m = str(k.name), str(d.master)
        out = Built(last=list(deps))
        if not self.statements:
            return out
        out.last = [out.add(cascade.widen_orphans(d.ctx, d.options.orphans, k, Declared(
            id=step_id, operation=Operation.CATCHUP,
            description=f"Catch-up {why}: register sessions created since the backfill"
            + ("" if k.is_source else f"; {d.options.orphans} new orphans of {name}"),
            statements=self.statements, lock=LockMode.ROW_EXCLUSIVE,
            tables=(m,) if k.is_source else (m, name), depends_on=tuple(deps),
            guard=sql.SQL("SELECT {}").format(sql.SQL(" AND ").join(sql.SQL("({})").format(g) for g in self.guards)),
            changes=(m,) if k.is_source else (m, name), target=name,
            repairs=master.REPAIRS + (() if k.is_source else orphans.REPAIRS), needs=self.needs))).id]
        return out


def catch_up(d: Draft, k: KeyTable) -> CatchUp:
    source_known = d.ctx.source is not None and d.ctx.source.key_checkable
    statements: tuple[Query, ...] = (backfill_all(d), backfill.drop_tables()) if source_known else ()
    needs = Needs()
    if not k.is_source:
        taken = orphans.orphan_statements(d, k)
        statements += taken.statements
        needs = taken.needs
    # the cheap test first: while the walks' table is there (the backfills ran), the catch-up runs to drop it
    guards: list[sql.Composable] = [backfill.progress_gone()] if source_known else []
    if k.is_source:
        guards += [backfill_guard(d, k.name, key_after(k))] if source_known else []
    elif source_known:
        # done when no row of k lacks its session in the master (nothing to register for k, no orphan of
        # k): what k's VALIDATE needs, in one pass over k. Not also a pass over the source each time: the
        # source's own catch-ups and its foreign key (added before this) keep its sessions in the master.
        guards.append(backfill_guard(d, k.name, key_after(k)))
    else:
        guards.append(orphans.orphan_guard(d, k))
    return CatchUp(d, k, statements, tuple(guards), needs)

"""Operation: the gate (`--bridge none`), right before each key table's foreign key (Kind.GATE).

It registers what the master lacks (the catch-up's statements: the sweep), watches the application's
writes for `--gate-window` seconds, and counts the sessions written meanwhile that the master lacks; if
there are any, it sweeps again (nothing is lost) and stops the run (exit code 1) before the FK, with
`gate_message`; a later apply resumes there. No guard: it runs each time. It repairs no finding
(`REPAIRS`): it checks that the application registers its sessions.
"""
from __future__ import annotations

import functools

from psycopg import sql

from yumai_audit.checks.predicates import key_uuid

from ...context import KeyTable
from ...engine.steps import Kind, LockMode, Query, Step
from ...operations import Operation
from ...sqlparts import table_ref
from ..draft import Draft
from ..registration import backfill_all, existing_fk, key_after, not_in_master
from . import Declared, Needs
from .orphans import orphan_statements

REPAIRS: tuple[str, ...] = ()


def gate_steps(d: Draft, k: KeyTable, depends_on: list[str]) -> list[Step]:
    """--bridge none: the gate right before `k`'s FK (none when the FK exists already). Its first statement
    measures: the sessions of `k` the master lacks; the others are the sweep (the catch-up's statements:
    register them, or the orphans' mode). The executor runs it as: sweep, watch the writes for
    `--gate-window` seconds (the run's first gate only), measure; any session: sweep again and stop."""
    if d.options.bridge != "none" or existing_fk(d, k.table.foreign_keys, k.name) is not None:
        return []
    src = d.ctx.source
    sweep: tuple[Query, ...] = (backfill_all(d),) if src is not None and src.key_checkable else ()
    needs = Needs()
    if not k.is_source:
        taken = orphan_statements(d, k)
        sweep += taken.statements
        needs = taken.needs
    master, key = d.master, key_after(k)
    measure = sql.SQL("SELECT count(DISTINCT {k}) FROM {t} t WHERE {missing}").format(
        k=key_uuid(key), t=table_ref(k.name), missing=not_in_master(d, key))
    return [Declared(
        id=f"gate:{k.name}", description=f"Gate (--bridge none): register what {master} lacks, watch the writes; "
        f"sessions written to {k.name} meanwhile that {master} lacks stop the apply before the foreign key",
        statements=(measure, *sweep), lock=LockMode.ROW_EXCLUSIVE, tables=(str(master), str(k.name)),
        depends_on=tuple(depends_on), kind=Kind.GATE, changes=(str(master), str(k.name)),
        operation=Operation.GATE, target=str(k.name), column=k.key.name,
        stop_message=functools.partial(gate_message, str(master), str(k.name)), needs=needs)]


def gate_message(master: str, table: str, count: int, seconds: float | None) -> str:
    """Why a gate before `table`'s FK stopped the run: `count` sessions the master lacked."""
    during = f"in the last {seconds:.0f}s" if seconds is not None else "since the last sweep"
    return (f"{count} session{'s' if count != 1 else ''} written to {table} {during} had no row in {master}: "
            "the application does not register its sessions yet, and after the foreign key those writes would "
            "fail. Deploy the registration (register the session before its first row), then run fix --apply "
            "again; or run fix --apply --bridge auto")

"""The engine runs any plan: what is particular to an operation (a precondition's refusal, a gate's
stop line) travels with its step, never in a test of the step's id. Real PostgreSQL."""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

import pytest
from psycopg import sql

from yumai_audit.connection import resolve_target
from yumai_audit.engine.executor import Executor, PreflightFailed
from yumai_audit.engine.plan import Plan
from yumai_audit.engine.steps import Kind, LockMode, Step
from yumai_audit.errors import GateClosed
from yumai_audit.operations import Operation


@dataclass(frozen=True)
class Options:
    """The engine's RunOptions, and nothing of the migration's."""

    lock_timeout: float = 1.0
    wait_timeout: float = 10.0
    batch_size: int = 10
    gate_window: float = 0.0
    max_replica_lag: float = 0.0    # no throttle

    def to_dict(self) -> dict:
        return asdict(self)


def _make_table(db) -> Step:
    return Step(id="make", description="a table", statements=(sql.SQL("CREATE TABLE made (n int)"),),
                lock=LockMode.ACCESS_EXCLUSIVE, tables=(), operation=Operation.VERIFY,
                guard=sql.SQL("SELECT to_regclass('made') IS NOT NULL"))


def test_a_precondition_step_of_any_id_refuses_the_run_before_the_first_change(db):
    ready = Step(id="ready-check", description="refuses", statements=(sql.SQL("SELECT 'not today'"),),
                 lock=LockMode.NONE, tables=(), kind=Kind.CHECK, precondition=True, operation=Operation.VERIFY)
    plan = Plan([ready, _make_table(db)], 150000, Options())
    with pytest.raises(PreflightFailed) as exc:
        Executor(resolve_target(db.conninfo), plan).run()
    assert str(exc.value) == "ready-check: not today"
    assert db.scalar("SELECT to_regclass('made') IS NULL") is True


def test_a_gate_stops_with_the_line_its_step_carries(db):
    gate = Step(id="a-gate", description="counts", statements=(sql.SQL("SELECT 3"),), lock=LockMode.NONE,
                tables=(), kind=Kind.GATE, operation=Operation.GATE,
                stop_message=lambda count, seconds: f"{count} counted, the step's own words")
    plan = Plan([_make_table(db), gate], 150000, Options())
    with pytest.raises(GateClosed) as exc:
        Executor(resolve_target(db.conninfo), plan).run()
    assert str(exc.value) == "3 counted, the step's own words"
    assert db.scalar("SELECT to_regclass('made') IS NOT NULL") is True


def test_a_steps_sql_text_is_composed_once_and_is_no_part_of_its_identity():
    step = _make_table(None)
    text = step.sql_text()
    assert text == "CREATE TABLE made (n int);" and step.sql_text() is text      # composed once
    assert step == _make_table(None)
    assert "_sql_text" not in asdict(step)
    other = dataclasses.replace(step, statements=(sql.SQL("CREATE TABLE other (n int)"),))
    assert other.sql_text() == "CREATE TABLE other (n int);"                   # a copy composes its own

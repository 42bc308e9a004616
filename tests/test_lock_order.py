"""The lock order of the steps that add a foreign key (issue 24; auditor/fix/ops/foreign_key.py, "Lock order").

ADD FOREIGN KEY takes the table, then the referenced one; an application that registers a session in the
master and then writes its rows takes them the other way round. A writer inside such a transaction and the
step then wait for each other until the step's lock_timeout ends it, every other writer queued meanwhile. The
steps lock the referenced table first, except on a table the cutover bridge is on (its trigger writes the
master while the row's insert holds the table). Planner cases need no database; the others run on the real
server (PostgreSQL 18 embedded, or YUMAI_TEST_DSN), with a writer in the middle of its transaction while
the step waits for it.
"""
from __future__ import annotations

import threading
import time

import psycopg
import pytest
from test_planner import plan_for

from yumai_audit import api
from yumai_audit.catalog import QualifiedName
from yumai_audit.config import Config
from yumai_audit.demo import build_demo_database
from yumai_audit.engine.steps import LockMode
from yumai_audit.fix.ops.foreign_key import FkSpec, add_fk
from yumai_audit.fix.planner import FixOptions

MASTER = "chatbot.session_master"
SRC = "chatbot.conversations"
LOCK_MASTER = 'LOCK TABLE "chatbot"."session_master" IN {} MODE'


def _first_change(step) -> str:
    """The step's first statement after its planner settings (PROBE's SET LOCAL)."""
    return next(s.as_string(None) for s in step.statements if not s.as_string(None).startswith("SET "))


# --- the plan (no database) ------------------------------------------------------------------------

def test_without_the_bridge_every_step_adding_a_key_locks_the_master_first():
    plan = plan_for(150000, FixOptions(bridge="none"))
    adds = [s for s in plan.steps if s.id.startswith("fk-add:")]
    assert len(adds) >= 4
    for step in adds:
        assert _first_change(step) == LOCK_MASTER.format(step.lock.label), step.id
        assert step.tables[0] == MASTER, step.id         # declared in the order they are locked
    # the partitioned parent's key (PostgreSQL 12-17) takes the master's ACCESS EXCLUSIVE at once
    parent = plan.step(f"fk-add:{SRC}")
    assert parent.lock is LockMode.ACCESS_EXCLUSIVE and parent.tables == (MASTER,)
    # VALIDATE takes nothing a writer holds: no lock first
    assert all(_first_change(s).startswith("ALTER TABLE") for s in plan.steps if s.id.startswith("fk-validate:"))


def test_with_the_bridge_its_table_keeps_the_order_of_its_trigger_the_others_lock_the_master_first():
    plan = plan_for(150000)   # --bridge auto: the bridge on the source table only
    for step in plan.steps:
        if not step.id.startswith("fk-add:"):
            continue
        if step.target == SRC:
            assert not _first_change(step).startswith("LOCK TABLE"), step.id
            if step.lock is LockMode.SHARE_ROW_EXCLUSIVE:
                assert step.tables[-1] == MASTER, step.id
        else:
            assert _first_change(step) == LOCK_MASTER.format("SHARE ROW EXCLUSIVE"), step.id


def test_a_key_to_any_other_table_locks_it_first_by_default():
    """The users keys of --include users and the schema steps' keys: the parent row is written first."""
    users = QualifiedName("chatbot", "users")
    spec = FkSpec(("user_id",), users, ("id",))
    step = add_fk("fk-add:chatbot.user_interactions.user_id", QualifiedName("chatbot", "user_interactions"), spec,
                  "user_interactions_user_id_fkey", [])
    assert _first_change(step) == 'LOCK TABLE "chatbot"."users" IN SHARE ROW EXCLUSIVE MODE'
    assert step.tables == ("chatbot.users", "chatbot.user_interactions")


# --- on the server: a writer mid-transaction while the step waits for it -------------------------------

def _run_with_a_writer(db, options: FixOptions, starters: tuple[str, ...], first: str, second: str):
    """Apply the demo's plan; in the first of `starters` that runs (before the key's steps), a writer opens
    its transaction with `first`; once the apply's connection waits for a lock (the step that adds the key,
    behind the writer), the writer runs `second` and commits. Returns the apply's result, the seconds
    `second` and the commit took, whether the apply was seen waiting, the writer's errors."""
    build_demo_database(db.conninfo)
    inserted = threading.Event()
    state: dict = {"errors": [], "seen_waiting": False, "seconds": None}

    def writer(pid: int) -> None:
        try:
            with psycopg.connect(db.conninfo) as w, psycopg.connect(db.conninfo, autocommit=True) as watch:
                w.execute(first)
                inserted.set()
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    if watch.execute("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted)",
                                     (pid,)).fetchone()[0]:
                        state["seen_waiting"] = True
                        break
                    time.sleep(0.01)
                started = time.monotonic()
                w.execute(second)
                w.commit()
                state["seconds"] = time.monotonic() - started
        except psycopg.Error as exc:
            state["errors"].append(str(exc).splitlines()[0])
        finally:
            inserted.set()

    threads: list[threading.Thread] = []

    def hook(step, conn):
        if step.id in starters and not threads:
            threads.append(threading.Thread(target=writer, args=(conn.info.backend_pid,)))
            threads[0].start()
            assert inserted.wait(15)

    try:
        result = api.apply(db.conninfo, Config(), rescan=False, options=options, step_hook=hook)
    finally:
        for t in threads:
            t.join(timeout=30)
    assert threads, f"none of {starters} ran"
    return result, state


def _fk_tries(result, starters: tuple[str, ...]) -> tuple[str, int]:
    """The first step that added a key after the starter: its id and its tries."""
    order = [o for o in result.outcomes]
    start = next(i for i, o in enumerate(order) if o.step in starters)
    fk = next(o for o in order[start:] if o.step.startswith("fk-add:"))
    return fk.step, fk.tries


LOCK_TIMEOUT = 0.5


def _assert_no_wait_for_each_other(result, state, starters):
    assert state["errors"] == []
    assert state["seen_waiting"], "the step never waited for the writer: the case was not exercised"
    step, tries = _fk_tries(result, starters)
    # the step waited behind the writer, the writer never behind the step: one try, the writer's row at once
    assert tries == 1, (step, tries)
    assert state["seconds"] < LOCK_TIMEOUT, (step, state["seconds"])
    assert result.ok, result.problems


REGISTER = "INSERT INTO chatbot.session_master (session_id, user_id) VALUES (md5('lock-order')::uuid, 1)"


@pytest.mark.parametrize("starters, then", [
    # the cutover's case (benchmarks/README.md, "a lock-order stall"): the session's message, while the step adds
    # the source table's key (its first partition: the first step that adds a key before PostgreSQL 18; 18: the
    # parent's)
    ((f"catchup:{SRC}",), "INSERT INTO chatbot.conversations (session_id, user_id, role, message, created_at) "
                          "VALUES (md5('lock-order')::uuid, 1, 'user', 'registered first', '2026-08-15')"),
    # another key table's row
    (("orphans:chatbot.user_interactions",),
     "INSERT INTO chatbot.user_interactions (session_id, user_id, interaction_type, created_at) "
     "VALUES (md5('lock-order')::uuid, 1, 'registered first', now())"),
], ids=["conversations", "user_interactions"])
def test_bridge_none_a_session_registered_then_its_rows_while_the_key_is_added(db, starters, then):
    """The application registers the session in the master, then writes its rows; meanwhile the step that adds
    the table's key."""
    result, state = _run_with_a_writer(
        db, FixOptions(bridge="none", gate_window=0, lock_timeout=LOCK_TIMEOUT), starters, REGISTER, then)
    _assert_no_wait_for_each_other(result, state, starters)
    table = then.split()[2]
    assert db.scalar(f"SELECT count(*) FROM {table} WHERE session_id = md5('lock-order')::uuid") == 1


def test_with_the_bridge_a_message_then_a_new_sessions_message_while_the_source_key_is_added(db):
    """The bridge's order: the row's insert holds the table, its trigger then writes the master. A step that
    took the master first would wait for the writer's first row while the writer's second (a session the
    master lacks) waited for the master."""
    starters = (f"catchup:{SRC}",)
    known = ("INSERT INTO chatbot.conversations (session_id, user_id, role, message, created_at) "
             "SELECT session_id, 1, 'user', 'bridged', '2026-08-15' FROM chatbot.session_master LIMIT 1")
    new = ("INSERT INTO chatbot.conversations (session_id, user_id, role, message, created_at) "
           "VALUES (md5('lock-order-new')::uuid, 1, 'user', 'bridged', '2026-08-15')")
    result, state = _run_with_a_writer(db, FixOptions(bridge="auto", lock_timeout=LOCK_TIMEOUT), starters, known, new)
    _assert_no_wait_for_each_other(result, state, starters)
    assert db.scalar("SELECT count(*) FROM chatbot.session_master WHERE session_id = md5('lock-order-new')::uuid") == 1

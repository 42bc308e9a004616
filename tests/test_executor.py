"""The executor under live conditions: killed mid-run and resumed, writers during the run, declared
locks against pg_locks, lock_timeout with retries."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest
from test_fix import DEMO_NULLS, KEY_TABLES, assert_demo_migrated, snapshot

from yumai_audit import api
from yumai_audit.config import Config
from yumai_audit.demo import SESSIONS, build_demo_database
from yumai_audit.engine.executor import StepFailed
from yumai_audit.engine.steps import LockMode

CLI = [sys.executable, "-c", "from yumai_audit.cli import main; main()"]


def _wait_for(predicate, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _started(db, prefix):
    if db.scalar("SELECT to_regclass('yumai_audit.journal')") is None:
        return None
    found = db.fetchall("SELECT step FROM yumai_audit.journal WHERE finished_at IS NULL AND step LIKE %s",
                        (prefix + "%",))
    return found[0][0] if found else None


def _apply_until_converged(db, tries=40):
    for _ in range(tries):
        proc = subprocess.run(CLI + ["fix", "--dsn", db.conninfo, "--apply", "--yes"], capture_output=True,
                              text=True, timeout=300)
        if proc.returncode == 2 and "another yumai-audit fix --apply is running" in proc.stderr:
            time.sleep(0.5)    # the killed run's server process has not noticed yet
            continue
        return proc
    raise AssertionError("the killed run's advisory lock was never released")


@pytest.mark.parametrize("blocked_step", ["index:chatbot.user_feedback", "orphans:chatbot.user_interactions"])
def test_resume_after_the_apply_process_is_killed(db, blocked_step):
    """Kill -9 the CLI while a step runs (held up by another session), then rerun: it converges."""
    build_demo_database(db.conninfo)
    before = snapshot(db)
    blocker = psycopg.connect(db.conninfo)
    if blocked_step.startswith("index:"):
        # an open snapshot: CREATE INDEX CONCURRENTLY waits for it, with its index built but not yet valid
        blocker.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        blocker.execute("SELECT count(*) FROM chatbot.users")
    else:
        blocker.execute("LOCK TABLE chatbot.user_interactions IN SHARE MODE")
    proc = subprocess.Popen(CLI + ["fix", "--dsn", db.conninfo, "--apply", "--yes"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        step = _wait_for(lambda: _started(db, blocked_step), f"step {blocked_step} to start")
        time.sleep(0.3)
        if blocked_step.startswith("index:"):
            # CREATE INDEX CONCURRENTLY, waiting for the open snapshot, holds what the step declares
            modes = {LockMode.from_pg_locks(m) for (m,) in db.fetchall(
                "SELECT l.mode FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE a.application_name = 'yumai-audit fix' AND l.granted "
                "AND l.relation = 'chatbot.user_feedback'::regclass")}
            declared = api.plan(db.conninfo, Config()).step("index:chatbot.user_feedback").lock
            assert modes == {declared} == {LockMode.SHARE_UPDATE_EXCLUSIVE}
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        blocker.rollback()
        blocker.close()
    if blocked_step.startswith("index:"):
        assert db.scalar("SELECT count(*) FROM pg_index WHERE NOT indisvalid") >= 1   # left by the killed run
    assert db.scalar("SELECT to_regclass('chatbot.session_master')") is not None      # it got somewhere
    done = _apply_until_converged(db)
    assert done.returncode == 1 and "Verdict: Migrated, bridge on. " in done.stdout, done.stdout + done.stderr   # the demo's user findings are left undecided: migrated, with debt (exit 1)
    assert f"resumed after an interrupted run: {step}" in done.stdout
    assert db.scalar("SELECT count(*) FROM yumai_audit.journal WHERE step = %s AND outcome = 'interrupted'",
                     (step,)) == 1
    assert db.scalar("SELECT count(*) FROM pg_index WHERE NOT indisvalid") == 0
    assert_demo_migrated(db, before)
    again = subprocess.run(CLI + ["fix", "--dsn", db.conninfo, "--apply", "--yes"], capture_output=True, text=True)
    assert again.returncode == 1 and "Nothing to do" in again.stdout and "Verdict: Migrated, bridge on. " in again.stdout


def test_writers_inserting_for_existing_sessions_never_fail_during_apply(db):
    build_demo_database(db.conninfo)
    before = snapshot(db)
    stop = threading.Event()
    failures: list[str] = []
    written = [0, 0]

    def writer(n):
        with psycopg.connect(db.conninfo, autocommit=True) as conn:
            i = 0
            while not stop.is_set():
                s = 1 + (i * 7 + n) % SESSIONS
                try:
                    conn.execute("INSERT INTO chatbot.conversations (session_id, user_id, role, message, created_at) "
                                 "VALUES (md5('session-' || %s)::uuid, 1, 'user', 'live', "
                                 "timestamptz '2026-09-15' + %s * interval '1 second')", (s, i))
                    conn.execute("INSERT INTO chatbot.user_interactions (session_id, user_id, interaction_type, "
                                 "created_at) VALUES (md5('session-' || %s)::uuid, 1, 'live', now())", (s,))
                    written[n] += 1
                except psycopg.Error as exc:
                    failures.append(str(exc).splitlines()[0])
                i += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.2)
        result = api.apply(db.conninfo, Config(), rescan=False)
        time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert result.ok, result.problems
    assert all(w > 0 for w in written)
    total = sum(written)
    assert db.scalar("SELECT count(*) FROM chatbot.conversations WHERE message = 'live'") == total
    assert db.scalar("SELECT count(*) FROM chatbot.user_interactions WHERE interaction_type = 'live'") == total
    db.execute("DELETE FROM chatbot.conversations WHERE message = 'live'")
    db.execute("DELETE FROM chatbot.user_interactions WHERE interaction_type = 'live'")
    assert_demo_migrated(db, before)


HELD = """
SELECT n.nspname || '.' || c.relname, l.mode
FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE l.pid = %s AND l.granted AND l.locktype = 'relation' AND c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'yumai_audit', 'yumai_quarantine')
"""


@pytest.mark.parametrize("bridge", ["auto", "none"])
def test_each_steps_declared_lock_is_what_pg_locks_shows(db, bridge):
    """Inside each transactional step, after its statements and before its commit, another session
    reads pg_locks: the strongest mode on the declared tables is the declared one, and no user table
    is held in a stronger mode. With the bridge and without it: the steps that add a key lock the master
    first without it (its parent's key before PostgreSQL 18: ACCESS EXCLUSIVE at once)."""
    options = api.FixOptions(bridge=bridge, gate_window=0)
    build_demo_database(db.conninfo)
    seen = {}
    watcher = psycopg.connect(db.conninfo, autocommit=True)

    def hook(step, conn):
        if not step.transactional:
            return
        held: dict[str, LockMode] = {}
        for table, mode in watcher.execute(HELD, (conn.info.backend_pid,)).fetchall():
            held[table] = max(held.get(table, LockMode.NONE), LockMode.from_pg_locks(mode))
        if step.id == "master":
            held.pop("chatbot.session_master", None)      # created by this very step
        declared = max((held.get(t, LockMode.NONE) for t in step.tables), default=LockMode.NONE)
        seen[step.id] = (declared, max(held.values(), default=LockMode.NONE))
        if step.id.startswith("backfill:") and step.id == last_backfill:
            # a session starts while the run goes on: the catch-up must register it
            watcher.execute("INSERT INTO chatbot.conversations (session_id, user_id, role, message, created_at) "
                            "VALUES (md5('late')::uuid, 1, 'user', 'late', '2026-08-15')")  # an earlier partition

    last_backfill = [s.id for s in api.plan(db.conninfo, Config(), options=options).steps
                     if s.id.startswith("backfill:")][-1]
    try:
        result = api.apply(db.conninfo, Config(), rescan=False, step_hook=hook, options=options)
    finally:
        watcher.close()
    assert db.scalar("SELECT count(*) FROM chatbot.session_master WHERE session_id = md5('late')::uuid") == 1
    assert result.ok
    checked = [s for s in result.plan.steps if s.id in seen]
    assert len(checked) >= 20
    for step in checked:
        on_declared, strongest = seen[step.id]
        assert on_declared == step.lock, (step.id, on_declared, step.lock)
        assert strongest <= step.lock, (step.id, strongest, step.lock)
    kinds = {s.id.split(":")[0] for s in checked}
    assert {"master", "malformed", "to-uuid", "backfill", "orphans", "fk-add", "fk-validate", "catchup"} <= kinds


def test_a_lock_held_elsewhere_makes_the_step_retry_then_fail_cleanly(db):
    build_demo_database(db.conninfo)
    with psycopg.connect(db.conninfo) as holder:
        holder.execute("LOCK TABLE chatbot.recommendations_log IN ACCESS SHARE MODE")
        with pytest.raises(StepFailed, match="to-uuid:chatbot.recommendations_log: could not take its ACCESS EXCLUSIVE"):
            api.apply(db.conninfo, Config(), rescan=False, options=api.FixOptions(lock_timeout=0.05))
        holder.rollback()
    # nothing of that step happened; a rerun completes
    assert db.scalar("SELECT data_type FROM information_schema.columns WHERE table_name = 'recommendations_log' "
                     "AND column_name = 'session_id'") == "character varying"
    assert db.scalar("SELECT outcome FROM yumai_audit.journal WHERE step = 'to-uuid:chatbot.recommendations_log'") == "failed"
    assert api.apply(db.conninfo, Config(), rescan=False).ok
    assert {t: snapshot(db)[t][1] for t in KEY_TABLES} == DEMO_NULLS

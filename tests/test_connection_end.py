"""A run whose connection the server ends (here: its backend terminated from another session, as an
administrator, a failover or a restart does) stops with one line saying what was done, that the
database is consistent and that the next `fix --apply` resumes; the next one finishes."""
from __future__ import annotations

import subprocess
import time

import psycopg
from test_executor import CLI, _apply_until_converged, _started, _wait_for
from test_fix import assert_demo_migrated, snapshot

from yumai_audit.demo import build_demo_database


def test_a_terminated_backend_ends_the_run_with_what_was_done_and_the_next_run_finishes(db):
    build_demo_database(db.conninfo)
    before = snapshot(db)
    # an open snapshot: the CREATE INDEX CONCURRENTLY step waits for it, so the run is caught mid-step
    blocker = psycopg.connect(db.conninfo)
    blocker.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    blocker.execute("SELECT count(*) FROM chatbot.users")
    proc = subprocess.Popen(CLI + ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--no-backup"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        step = _wait_for(lambda: _started(db, "index:chatbot.user_feedback"), "the index step to start")
        time.sleep(0.3)
        pids = db.fetchall("SELECT pid FROM pg_stat_activity WHERE application_name = 'yumai-audit fix' "
                           "AND datname = current_database()")
        assert len(pids) == 1, pids     # the run's one session (the watcher names itself apart)
        assert db.scalar("SELECT pg_terminate_backend(%s)", (pids[0][0],))
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        blocker.rollback()
        blocker.close()
    assert proc.returncode == 3, err   # did not finish (errors.DidNotFinish): a rerun resumes
    lines = [line for line in err.splitlines() if line.startswith("yumai-audit:")]
    assert len(lines) == 1, err
    line = lines[0]
    assert f"the connection to the server ended during step {step} (terminating connection due to administrator " \
           "command)" in line, line
    finished = db.scalar("SELECT count(*) FROM yumai_audit.journal WHERE outcome = 'done'")
    assert f": {finished} step(s) finished in this run (master, " in line, line
    assert "the database is consistent" in line and "run fix --apply again" in line and "it resumes there" in line
    assert "Traceback" not in err
    done = _apply_until_converged(db)
    assert done.returncode == 1 and "Verdict: Migrated, bridge on" in done.stdout, done.stdout + done.stderr
    assert f"resumed after an interrupted run: {step}" in done.stdout
    assert db.scalar("SELECT count(*) FROM pg_index WHERE NOT indisvalid") == 0
    assert_demo_migrated(db, before)

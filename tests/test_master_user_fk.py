"""The master's user_id foreign key after the backfill (auditor/fix/ops/master.py: `user_fk_steps`).

A master the migration creates (--master-user-delete set-null) gets its FK to users once the backfill has
filled it: NOT VALID, then the rows naming a user that no longer exists set NULL, VALIDATE and the mark (the
table's comment) dropped. The end state is the one the FK created with the table gives: the same rows, the
same user ids (a user deleted before the FK existed: NULL, as its ON DELETE SET NULL would have set it), the
same constraint; a run cut off or killed between the steps resumes; psql runs the script to the same end; a
master that exists is left as it is."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest
from test_backfill import EXPECTED, MASTER, SOURCE, apply_until_converged, run
from test_executor import CLI, _started, _wait_for

from yumai_audit import api
from yumai_audit.config import Config
from yumai_audit.connection import resolve_target
from yumai_audit.context import PENDING_USER_FK
from yumai_audit.engine.executor import StepFailed
from yumai_audit.engine.sqlscript import render_script

ADD = "user-fk-add:chatbot.session_master"
VALIDATE = "user-fk-validate:chatbot.session_master"
FK = ("SELECT conname, convalidated, pg_get_constraintdef(oid) FROM pg_constraint "
      "WHERE conrelid = 'chatbot.session_master'::regclass AND contype = 'f'")
THE_FK = [("session_master_user_id_fkey", True,
           "FOREIGN KEY (user_id) REFERENCES chatbot.users(id) ON DELETE SET NULL")]
COMMENT = "SELECT obj_description('chatbot.session_master'::regclass, 'pg_class')"
APP_SESSION = "5e55e55e-0000-4000-8000-000000000001"   # registered by the application itself, its user missing


def ends_as_the_fk_created_with_the_table_gives(db) -> None:
    """Every session of the source with its first row's user when that user exists now (`EXPECTED`: what the
    FK created with the table gives, its ON DELETE SET NULL having nulled the users deleted since), the FK
    validated and named as PostgreSQL names a REFERENCES of CREATE TABLE, the mark gone."""
    got = [r for r in db.fetchall(MASTER) if str(r[0]) != APP_SESSION]
    assert got == db.fetchall(EXPECTED)
    assert sum(1 for r in got if r[3] is None) > 0       # the missing user 10 (and the deleted ones): NULL
    assert db.fetchall(FK) == THE_FK
    assert db.scalar(COMMENT) is None
    assert api.plan(db.conninfo, Config()).pending == []


def test_the_master_is_created_without_the_user_fk_which_comes_after_the_backfill(db):
    db.execute(SOURCE)
    plan = api.plan(db.conninfo, Config())
    ids = [s.id for s in plan.steps]
    create = plan.steps[ids.index("master")]
    text = " ".join(s.as_string(None) for s in create.statements)
    assert "REFERENCES" not in text and PENDING_USER_FK.replace("'", "''") in text
    assert create.tables == ()           # no lock on users while the master is created
    merge = ids.index("backfill:chatbot.session_master")
    assert ids[merge + 1:merge + 3] == [ADD, VALIDATE]
    ran = run(db, batch_size=50)
    assert ran.outcome.ok, ran.outcome.problems
    ends_as_the_fk_created_with_the_table_gives(db)


def test_users_deleted_and_a_missing_user_registered_before_the_fk_end_as_set_null_would_leave_them(db):
    """Cut off right after the FK's NOT VALID add (rolled back): the master is filled, without the FK. Then
    the application deletes two users who have sessions and registers a session itself naming a user that
    does not exist (--bridge none). The next run's plan reads the mark, adds the FK and validates it."""
    db.execute(SOURCE)
    with pytest.raises(StepFailed, match="cut off by the test"):
        run(db, batch_size=50, stop_after=(ADD, 0))
    assert db.fetchall(FK) == [] and db.scalar(COMMENT) == PENDING_USER_FK
    named = db.scalar("SELECT count(*) FROM chatbot.session_master WHERE user_id IN (3, 4)")
    assert named > 0
    # the merge wrote each session's user as the source names it (no probe of users): the missing user 10
    # too, which the VALIDATE's step sets NULL with the rest
    unchecked = db.scalar("SELECT count(*) FROM chatbot.session_master m WHERE m.user_id IS NOT NULL AND NOT EXISTS "
                          "(SELECT 1 FROM chatbot.users u WHERE u.id = m.user_id)")
    assert unchecked > 0
    db.execute("DELETE FROM chatbot.users WHERE id IN (3, 4)")
    db.execute("INSERT INTO chatbot.session_master (session_id, user_id, session_start) VALUES (%s, 42, '2026-01-05')",
               (APP_SESSION,))
    assert {ADD, VALIDATE} <= {s.id for s in api.plan(db.conninfo, Config()).pending}   # the mark read
    resumed = run(db, batch_size=50)
    assert resumed.outcome.ok, resumed.outcome.problems
    assert [(o.step, o.rows) for o in resumed.outcome.outcomes if o.step in (ADD, VALIDATE)] == [(ADD, 0), (VALIDATE, named + unchecked + 1)]
    ends_as_the_fk_created_with_the_table_gives(db)
    assert db.scalar("SELECT count(*) FROM chatbot.session_master WHERE user_id IN (3, 4)") == 0
    # the rows it nulled: the deleted users' and the application's; the application's own row kept, its user NULL (what the key's ON DELETE SET NULL would leave of it)
    assert db.fetchall("SELECT user_id, session_start::date::text FROM chatbot.session_master WHERE session_id = %s",
                       (APP_SESSION,)) == [(None, "2026-01-05")]


def test_a_run_cut_off_before_the_validate_resumes_with_it_alone(db):
    """Cut off in the VALIDATE's transaction (rolled back): the FK stands NOT VALID, the mark stays; a user deleted
    then is nulled by the FK's own ON DELETE; the next run validates."""
    db.execute(SOURCE)
    with pytest.raises(StepFailed, match="cut off by the test"):
        run(db, batch_size=50, stop_after=(VALIDATE, 0))
    assert db.fetchall(FK) == [(THE_FK[0][0], False, THE_FK[0][2] + " NOT VALID")]
    assert db.scalar(COMMENT) == PENDING_USER_FK
    db.execute("DELETE FROM chatbot.users WHERE id = 5")
    pending = {s.id for s in api.plan(db.conninfo, Config()).pending}
    assert VALIDATE in pending and ADD not in pending
    resumed = run(db, batch_size=50)
    assert resumed.outcome.ok, resumed.outcome.problems
    ends_as_the_fk_created_with_the_table_gives(db)


def test_a_run_killed_in_the_backfill_resumes_and_adds_the_fk(db):
    """kill -9 while the merge registers sessions (a few a batch), a user with sessions deleted, then a rerun."""
    db.execute(SOURCE)
    proc = subprocess.Popen(CLI + ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--batch-size", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _started(db, "backfill:chatbot.session_master")
                  and db.scalar("SELECT count(*) FROM chatbot.session_master WHERE user_id = 6"), "the merge to start")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert db.fetchall(FK) == [] and db.scalar(COMMENT) == PENDING_USER_FK
    db.execute("DELETE FROM chatbot.users WHERE id = 6")
    done = apply_until_converged(db)
    assert done.returncode in (0, 1), done.stderr
    ends_as_the_fk_created_with_the_table_gives(db)


def test_a_master_that_exists_is_left_as_it_is(db):
    """A master without a user FK (the user's own): no FK added; --master-user-delete no-action: created with it."""
    db.execute(SOURCE)
    db.execute("CREATE TABLE chatbot.session_master (session_id uuid PRIMARY KEY, user_id int, "
               "session_start timestamptz, session_end timestamptz, is_active boolean DEFAULT true)")
    ran = run(db, batch_size=50)
    assert ran.outcome.ok, ran.outcome.problems
    assert ADD not in [s.id for s in ran.outcome.plan.steps]
    assert db.fetchall(FK) == [] and db.scalar(COMMENT) is None
    db.execute("DROP TABLE chatbot.session_master CASCADE")
    target = resolve_target(db.conninfo)
    plan = api.plan(target, Config(), options=api.FixOptions(master_user_delete="no-action"))
    assert ADD not in [s.id for s in plan.steps]
    assert "REFERENCES" in plan.steps[[s.id for s in plan.steps].index("master")].statements[0].as_string(None)


@pytest.mark.skipif(shutil.which("psql") is None, reason="needs the psql client (on CI: Debian's postgresql-client)")
def test_psql_runs_the_script_to_the_same_end(db, tmp_path):
    db.execute(SOURCE)
    path = tmp_path / "plan.sql"
    path.write_text(render_script(api.plan(resolve_target(db.conninfo), Config(), options=api.FixOptions(batch_size=50))))
    done = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db.conninfo, "-f", str(path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    ends_as_the_fk_created_with_the_table_gives(db)


def test_a_bigint_user_no_int_can_hold_is_checked_by_the_merge_and_ends_null(db):
    """The merge writes each session's user unchecked only when every value of the source's user type fits the
    master's user_id: a bigint user column beside an int users key keeps the probe, so a user id past the
    int range that no user has becomes NULL instead of failing the merge ('integer out of range')."""
    db.execute(SOURCE)
    db.execute("ALTER TABLE chatbot.conversations ALTER COLUMN user_id TYPE bigint")
    db.execute("INSERT INTO chatbot.conversations (session_id, user_id, created_at) "
               "VALUES ('b1b1b1b1-0000-4000-8000-000000000001', 5000000000, '2025-04-01')")
    merge = next(s for s in api.plan(db.conninfo, Config()).steps if s.id == "backfill:chatbot.session_master")
    assert "chatbot\".\"users\" u WHERE" in merge.statements[-1].as_string(None)     # the probe kept
    ran = run(db, batch_size=50)
    assert ran.outcome.ok, ran.outcome.problems
    ends_as_the_fk_created_with_the_table_gives(db)
    assert db.scalar("SELECT user_id FROM chatbot.session_master "
                     "WHERE session_id = 'b1b1b1b1-0000-4000-8000-000000000001'") is None


def test_an_int_user_is_written_unchecked_by_the_merge(db):
    """With the FK after the merge and an int user column, the merge reads no users (its validation step
    sets NULL the users that do not exist: `ends_as_the_fk_created_with_the_table_gives`)."""
    db.execute(SOURCE)
    merge = next(s for s in api.plan(db.conninfo, Config()).steps if s.id == "backfill:chatbot.session_master")
    assert "chatbot\".\"users\"" not in merge.statements[-1].as_string(None)
    ran = run(db, batch_size=50)
    assert ran.outcome.ok, ran.outcome.problems
    ends_as_the_fk_created_with_the_table_gives(db)

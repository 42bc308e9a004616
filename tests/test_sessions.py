"""sessions close-idle and sessions prune on a real migrated database: exact counts, the cascade
preview equals what is deleted, batches bounded (one transaction each), locks time out cleanly."""
from __future__ import annotations

import shutil
import subprocess
from datetime import timedelta

import psycopg
import pytest
from click.testing import CliRunner
from migrated import add_rows, add_session, build, counts, sid
from recording import RecordingCursor, RecordingExecutor

from yumai_audit.cli import cli
from yumai_audit.engine.sqlscript import render_block, render_script
from yumai_audit.engine.steps import Kind, step_block
from yumai_audit.errors import AuditError
from yumai_audit.maintenance import sessions as sessions_module
from yumai_audit.maintenance.sessions import SCRIPT_OPTIONS, close_idle, prune, script_title


def _idle_db(db):
    build(db)
    # 1: active, last row 2h ago -> idle; 2: active, interaction 5 min ago -> busy
    # 3: active, no rows, started 3h ago -> idle; 4: already ended -> not counted
    # 5: active, message 1h ago but feedback 1 min ago -> busy; 6: active, started 2 min ago, no rows -> busy
    for n in (1, 2, 3, 5):
        add_session(db, n, start_ago="3 hours")
    add_session(db, 4, start_ago="3 hours", ended_ago="2 hours", active=False)
    add_session(db, 6, start_ago="2 minutes")
    add_rows(db, "chatbot.conversations", 1, 3, "2 hours")
    add_rows(db, "chatbot.user_interactions", 1, 1, "150 minutes")
    add_rows(db, "chatbot.conversations", 2, 2, "2 hours")
    add_rows(db, "chatbot.user_interactions", 2, 1, "5 minutes")
    add_rows(db, "chatbot.conversations", 5, 1, "1 hour")
    add_rows(db, "chatbot.user_feedback", 5, 1, "1 minute")


def test_close_idle_dry_run_counts_and_changes_nothing(db):
    _idle_db(db)
    r = close_idle(db.conninfo, None, timedelta(minutes=30))
    assert (r.active, r.idle, r.closed, r.applied) == (5, 2, 0, False)
    assert db.scalar("SELECT count(*) FROM chatbot.session_master WHERE is_active") == 5


def test_close_idle_apply_closes_exactly_the_idle_sessions_with_their_last_activity(db):
    _idle_db(db)
    r = close_idle(db.conninfo, None, timedelta(minutes=30), apply=True, batch_size=1)
    assert (r.idle, r.closed, r.batches) == (2, 2, [1, 1])
    closed = {row[0] for row in db.fetchall("SELECT session_id::text FROM chatbot.session_master "
                                            "WHERE NOT is_active AND session_id <> %s", (sid(4),))}
    assert closed == {sid(1), sid(3)}
    # session_end = the last activity: the latest row for 1, session_start for 3 (no rows)
    assert db.scalar("SELECT session_end = (SELECT max(created_at) FROM chatbot.conversations WHERE session_id = %s)::timestamp "
                     "FROM chatbot.session_master WHERE session_id = %s", (sid(1), sid(1))) is True
    assert db.scalar("SELECT session_end = session_start FROM chatbot.session_master WHERE session_id = %s", (sid(3),)) is True
    # session 4 keeps its own end
    assert db.scalar("SELECT session_end < now() - interval '119 minutes' FROM chatbot.session_master "
                     "WHERE session_id = %s", (sid(4),)) is True
    assert close_idle(db.conninfo, None, timedelta(minutes=30)).idle == 0


def _prune_db(db):
    build(db)
    # sessions 1-5: ended 200 days ago (pruned at 180d); 6: ended 10 days ago; 7: active since 300 days
    for n in range(1, 6):
        add_session(db, n, start_ago="201 days", ended_ago="200 days", active=False)
    add_session(db, 6, start_ago="11 days", ended_ago="10 days", active=False)
    add_session(db, 7, start_ago="300 days")
    for n in range(1, 8):
        add_rows(db, "chatbot.conversations", n, n, "200 days")
        add_rows(db, "chatbot.user_interactions", n, n % 3, "200 days")
    add_rows(db, "chatbot.recommendations_log", 2, 4, "200 days")
    add_rows(db, "chatbot.user_feedback", 5, 2, "200 days")
    add_rows(db, "chatbot.user_feedback", 6, 1, "10 days")


EXPECTED_CASCADE = {"chatbot.conversations": 15, "chatbot.user_interactions": 1 + 2 + 0 + 1 + 2,
                    "chatbot.recommendations_log": 4, "chatbot.user_feedback": 2}


def test_prune_dry_run_previews_the_cascade_and_changes_nothing(db):
    _prune_db(db)
    before = counts(db)
    r = prune(db.conninfo, None, timedelta(days=180))
    assert r.sessions == 5
    assert r.cascade == EXPECTED_CASCADE
    assert counts(db) == before


def test_prune_apply_deletes_in_bounded_batches_exactly_the_previewed_rows(db):
    _prune_db(db)
    db.execute("CREATE TABLE public.deleted_log (txid bigint, sid uuid)")
    db.execute("CREATE FUNCTION public.log_delete() RETURNS trigger LANGUAGE plpgsql AS $$ "
               "BEGIN INSERT INTO public.deleted_log VALUES (txid_current(), OLD.session_id); RETURN OLD; END $$")
    db.execute("CREATE TRIGGER log_delete AFTER DELETE ON chatbot.session_master "
               "FOR EACH ROW EXECUTE FUNCTION public.log_delete()")
    before = counts(db)
    preview = prune(db.conninfo, None, timedelta(days=180))
    r = prune(db.conninfo, None, timedelta(days=180), apply=True, batch_size=2)
    after = counts(db)
    lost = {t: before[t] - after[t] for t in before}
    assert lost == preview.cascade == r.deleted_rows == EXPECTED_CASCADE
    assert (r.deleted_sessions, r.batches) == (5, [2, 2, 1])
    per_tx = [row[0] for row in db.fetchall("SELECT count(*) FROM public.deleted_log GROUP BY txid ORDER BY 1 DESC")]
    assert per_tx == [2, 2, 1]       # three transactions, none deleting more than 2 sessions
    left = {row[0] for row in db.fetchall("SELECT session_id::text FROM chatbot.session_master")}
    assert left == {sid(6), sid(7)}
    assert prune(db.conninfo, None, timedelta(days=180)).sessions == 0


def test_prune_batch_that_cannot_lock_rolls_back_whole_and_a_rerun_resumes(db):
    _prune_db(db)
    before = counts(db)
    with psycopg.connect(db.conninfo) as blocker:
        # SHARE lets the catalog reads and the preview through but blocks the cascade's DELETE
        blocker.execute("LOCK TABLE chatbot.user_feedback IN SHARE MODE")
        with pytest.raises(AuditError, match="rolled back"):
            prune(db.conninfo, None, timedelta(days=180), apply=True, batch_size=10, lock_timeout=0.2)
        assert counts(db) == before
        assert db.scalar("SELECT count(*) FROM chatbot.session_master") == 7
        blocker.rollback()
    r = prune(db.conninfo, None, timedelta(days=180), apply=True, batch_size=10)
    assert r.deleted_rows == EXPECTED_CASCADE and r.batches == [5]


def test_prune_refuses_when_a_key_table_lacks_the_cascading_foreign_key(db):
    _prune_db(db)
    db.execute("CREATE TABLE chatbot.extra (session_id uuid REFERENCES chatbot.session_master(session_id))")
    db.execute("CREATE TABLE chatbot.loose (session_id uuid)")
    result = CliRunner().invoke(cli, ["sessions", "prune", "--older-than", "180d", "--apply", "--dsn", db.conninfo])
    assert result.exit_code == 2
    assert "chatbot.extra (foreign key without ON DELETE CASCADE)" in result.output
    assert "chatbot.loose (no foreign key)" in result.output
    assert "Traceback" not in result.output
    assert db.scalar("SELECT count(*) FROM chatbot.session_master") == 7


def test_lifecycle_commands_refuse_a_database_without_master(db):
    db.execute("CREATE TABLE public.t (session_id uuid, created_at timestamptz)")
    result = CliRunner().invoke(cli, ["sessions", "close-idle", "--dsn", db.conninfo])
    assert result.exit_code == 2
    assert "session master chatbot.session_master does not exist" in result.output


def test_cli_prune_dry_run_and_apply_output(db):
    _prune_db(db)
    runner = CliRunner()
    dry = runner.invoke(cli, ["sessions", "prune", "--older-than", "180d", "--dsn", db.conninfo])
    assert dry.exit_code == 0, dry.output
    assert "5 inactive session(s) ended before" in dry.output
    assert "  chatbot.conversations: 15 row(s)" in dry.output
    assert "Dry run: nothing changed" in dry.output
    applied = runner.invoke(cli, ["sessions", "prune", "--older-than", "180d", "--apply", "--batch-size", "2",
                                  "--dsn", db.conninfo])
    assert applied.exit_code == 0, applied.output
    assert "Deleted 5 session(s) in 3 batch(es) (largest 2), 27 row(s) with them." in applied.output
    assert "batch 3: 1 sessions deleted (total 5)" in applied.output


def test_cli_close_idle_dry_run(db):
    _idle_db(db)
    result = CliRunner().invoke(cli, ["sessions", "close-idle", "--idle", "30m", "--dsn", db.conninfo])
    assert result.exit_code == 0, result.output
    assert "5 active session(s); 2 with no activity since" in result.output
    assert db.scalar("SELECT count(*) FROM chatbot.session_master WHERE is_active") == 5


@pytest.mark.parametrize("args, message", [
    (["sessions", "prune", "--older-than", "180"], "'180' is not a duration"),
    (["sessions", "prune", "--older-than", "0d"], "must be longer than zero"),
    (["sessions", "prune"], "Missing option '--older-than'"),
    (["sessions", "close-idle", "--idle", "soon"], "'soon' is not a duration"),
    (["sessions", "prune", "--older-than", "1d", "--batch-size", "0"], "--batch-size"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = CliRunner().invoke(cli, args + ["--dsn", "postgresql://nobody@127.0.0.1:1/none"])
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


CHILDREN = """
CREATE TABLE chatbot.feedback_attachments (id serial PRIMARY KEY,
    feedback_id bigint NOT NULL REFERENCES chatbot.user_feedback(id) ON DELETE CASCADE);
INSERT INTO chatbot.feedback_attachments (feedback_id) SELECT id FROM chatbot.user_feedback, generate_series(1, 2);
CREATE TABLE chatbot.attachment_notes (id serial PRIMARY KEY,
    attachment_id int REFERENCES chatbot.feedback_attachments(id) ON DELETE CASCADE);
INSERT INTO chatbot.attachment_notes (attachment_id) SELECT id FROM chatbot.feedback_attachments;
CREATE TABLE chatbot.feedback_links (id serial PRIMARY KEY,
    feedback_id bigint REFERENCES chatbot.user_feedback(id) ON DELETE SET NULL);
INSERT INTO chatbot.feedback_links (feedback_id) SELECT id FROM chatbot.user_feedback;
"""


def test_prune_counts_and_deletes_every_table_the_cascade_reaches(db):
    _prune_db(db)
    db.execute(CHILDREN)
    extra = ("chatbot.feedback_attachments", "chatbot.attachment_notes", "chatbot.feedback_links")
    before = {**counts(db), **{t: db.scalar(f"SELECT count(*) FROM {t}") for t in extra}}
    preview = prune(db.conninfo, None, timedelta(days=180))
    # session 5's two feedback rows (pruned) have 2 attachments each, each with a note; session 6's is kept
    expected = {**EXPECTED_CASCADE, "chatbot.feedback_attachments": 4, "chatbot.attachment_notes": 4}
    assert preview.cascade == expected
    assert preview.changed == {"chatbot.feedback_links": 2} and preview.blocked == {}
    r = prune(db.conninfo, None, timedelta(days=180), apply=True, batch_size=2)
    after = {**counts(db), **{t: db.scalar(f"SELECT count(*) FROM {t}") for t in extra}}
    assert {t: before[t] - after[t] for t in expected} == r.deleted_rows == expected
    assert after["chatbot.feedback_links"] == before["chatbot.feedback_links"]
    assert r.changed_rows == {"chatbot.feedback_links": 2}
    assert db.scalar("SELECT count(*) FROM chatbot.feedback_links WHERE feedback_id IS NULL") == 2


def test_prune_refuses_before_any_delete_when_a_restrict_key_would_fail_it(db):
    _prune_db(db)
    db.execute("CREATE TABLE chatbot.feedback_reviews (feedback_id bigint REFERENCES chatbot.user_feedback(id) "
               "ON DELETE RESTRICT); INSERT INTO chatbot.feedback_reviews SELECT id FROM chatbot.user_feedback")
    before = counts(db)
    assert prune(db.conninfo, None, timedelta(days=180)).blocked == {"chatbot.feedback_reviews": 2}
    result = CliRunner().invoke(cli, ["sessions", "prune", "--older-than", "180d", "--apply", "--dsn", db.conninfo])
    assert result.exit_code == 2, result.output
    assert "2 row(s) of chatbot.feedback_reviews reference" in result.output and "Traceback" not in result.output
    assert counts(db) == before and db.scalar("SELECT count(*) FROM chatbot.session_master") == 7


# --- through the executor: the --sql script is what --apply sends ------------------------------------

@pytest.mark.parametrize("command", ["prune", "close-idle"])
def test_the_sql_script_holds_exactly_what_the_executor_sends_per_batch(db, monkeypatch, command):
    monkeypatch.setattr(sessions_module, "Executor", RecordingExecutor)
    RecordingCursor.sent = []
    if command == "prune":
        _prune_db(db)
        r = prune(db.conninfo, None, timedelta(days=180), apply=True, batch_size=2)
        assert r.batches == [2, 2, 1]
    else:
        _idle_db(db)
        r = close_idle(db.conninfo, None, timedelta(minutes=30), apply=True, batch_size=1)
        assert r.batches == [1, 1]
    [step] = r.plan.steps
    assert step.kind is Kind.BATCHED and step.operation.value == command
    script = render_script(r.plan, script_title(command), SCRIPT_OPTIONS)
    block = step_block(step, r.plan.options.lock_timeout, r.plan.options.batch_size)
    assert "\n".join(render_block(block, step)) in script and "DO $yumai$" in script
    statements = [s.as_string(None) for s in block.statements]
    sent = RecordingCursor.sent
    runs = [i for i in range(len(sent)) if sent[i:i + len(statements)] == statements]
    # one run of the block per batch, plus the last, empty one when the last batch was full
    assert len(runs) == len(r.batches) + (r.batches[-1] == r.plan.options.batch_size)
    assert db.scalar("SELECT count(*) FROM yumai_audit.journal WHERE step = %s AND outcome = 'done'", (step.id,)) == 1


def test_cli_sessions_sql_writes_the_script_and_changes_nothing(db, tmp_path):
    _prune_db(db)
    before = counts(db)
    path = tmp_path / "prune.sql"
    result = CliRunner().invoke(cli, ["sessions", "prune", "--older-than", "180d", "--sql", str(path),
                                      "--dsn", db.conninfo])
    assert result.exit_code == 0, result.output
    assert f"SQL script: {path}" in result.output and "Dry run: nothing changed" in result.output
    text = path.read_text()
    assert text.startswith("-- yumai-audit sessions prune:") and "DELETE FROM" in text and "LIMIT 500" in text
    assert counts(db) == before


@pytest.mark.skipif(shutil.which("psql") is None, reason="needs the psql client (on CI: Debian's postgresql-client)")
def test_psql_runs_the_prune_script_to_the_same_end_as_apply(db, tmp_path):
    _prune_db(db)
    before = counts(db)
    path = tmp_path / "prune.sql"
    result = CliRunner().invoke(cli, ["sessions", "prune", "--older-than", "180d", "--batch-size", "2",
                                      "--sql", str(path), "--dsn", db.conninfo])
    assert result.exit_code == 0, result.output
    done = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db.conninfo, "-f", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    after = counts(db)
    assert {t: before[t] - after[t] for t in before} == EXPECTED_CASCADE
    left = {row[0] for row in db.fetchall("SELECT session_id::text FROM chatbot.session_master")}
    assert left == {sid(6), sid(7)}


def test_lifecycle_lock_timeout_keeps_its_own_range_beyond_fixs_hour(db):
    _prune_db(db)
    result = CliRunner().invoke(cli, ["sessions", "prune", "--older-than", "180d", "--lock-timeout", "7200",
                                      "--apply", "--dsn", db.conninfo])
    assert result.exit_code == 0, result.output
    assert "Deleted 5 session(s) in 1 batch(es)" in result.output

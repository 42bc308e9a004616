"""`fix --apply`'s exit codes (docs/outputs.md), on a real database: 0 finished with no error
finding that counts, 1 finished with debt (error findings no step repairs), 2 did not start, 3 did
not finish (a step could not take its lock in time; the gate's stop is tested in test_bridge.py)."""
from __future__ import annotations

from click.testing import CliRunner

from yumai_audit.cli import cli
from yumai_audit.demo import DECISIONS, build_demo_database


def apply(db, tmp_path, *extra: str):
    out = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}"
    return CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--no-backup",
                                    "--out", str(out), *extra])


def test_finished_clean_is_0(db, tmp_path):
    build_demo_database(db.conninfo)
    config = tmp_path / "yumai-audit.toml"
    config.write_text(DECISIONS)   # the conflicting users accepted; the missing users set NULL by the plan
    res = apply(db, tmp_path, "--config", str(config), "--include", "users", "--missing-users", "null")
    assert res.exit_code == 0, res.output
    assert "0 counting for the exit code" in res.output


def test_finished_with_debt_is_1_and_did_not_finish_is_3(db, tmp_path):
    build_demo_database(db.conninfo)
    # another session holds a table the plan's deletes must write (reads still go: the scan and the
    # guards run): the quarantine step cannot take its lock within --lock-timeout, every try
    with db.connect(autocommit=False) as holder:
        holder.execute("LOCK TABLE chatbot.user_interactions IN EXCLUSIVE MODE")
        stopped = apply(db, tmp_path, "--lock-timeout", "0.05")
        holder.rollback()
    assert stopped.exit_code == 3, stopped.output
    assert "could not take its" in stopped.output and "chatbot.user_interactions" in stopped.output
    assert "Traceback" not in stopped.output
    # run again: it resumes and finishes, leaving the users' findings (no step repairs them): debt
    done = apply(db, tmp_path)
    assert done.exit_code == 1, done.output
    assert "Verdict: Migrated" in done.output and "orphaned_user_ids" in done.output


def test_did_not_start_is_2(db, tmp_path):
    build_demo_database(db.conninfo)
    res = apply(db, tmp_path, "--lock-timeout", "0")
    assert res.exit_code == 2 and "--lock-timeout must be" in res.output, res.output
    assert db.scalar("SELECT to_regclass('chatbot.session_master')") is None

"""fix --apply backs up the tables it changes before the first change; a failed backup stops it."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from yumai_audit.api import apply
from yumai_audit.cli import cli
from yumai_audit.config import Config
from yumai_audit.demo import build_demo_database
from yumai_audit.errors import AuditError


def test_apply_takes_a_backup_first_unless_told_not_to(db, tmp_path):
    build_demo_database(db.conninfo)
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--out", str(out)])
    assert res.exit_code == 1 and "Verdict: Migrated. " in res.output, res.output   # the demo's user findings are left undecided: migrated, with debt (exit 1)
    dumps = list(out.glob("backup-*.dump"))
    assert len(dumps) == 1 and dumps[0].stat().st_size > 0
    assert "Restore with:" in res.output
    # a migrated database: nothing changes, so nothing is backed up either
    again = tmp_path / "again"
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--out", str(again)])
    assert res.exit_code == 1 and "Nothing to do" in res.output
    assert list(again.glob("backup-*.dump")) == []


def test_no_backup_flag_skips_it(db, tmp_path):
    build_demo_database(db.conninfo)
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--no-backup", "--out", str(tmp_path)])
    assert res.exit_code == 1 and "Verdict: Migrated. " in res.output, res.output   # the demo's user findings are left undecided: migrated, with debt (exit 1)
    assert "No backup (--no-backup)." in res.output
    assert list(tmp_path.glob("backup-*.dump")) == []


def test_failed_backup_stops_apply_before_any_change(db):
    build_demo_database(db.conninfo)
    counts = ("SELECT (SELECT count(*) FROM chatbot.user_interactions), (SELECT count(*) FROM chatbot.recommendations_log), "
              "(SELECT count(*) FROM pg_indexes WHERE schemaname = 'chatbot'), (SELECT count(*) FROM pg_namespace)")
    before = db.fetchall(counts)
    seen = []

    def failing_backup(tables):
        seen.append(sorted(tables))
        raise AuditError("backup failed: disk full")

    with pytest.raises(AuditError, match="backup failed"):
        apply(db.conninfo, Config(), before_first_change=failing_backup)
    assert seen and "chatbot.recommendations_log" in seen[0]
    assert db.scalar("SELECT to_regclass('chatbot.session_master')") is None
    assert db.fetchall(counts) == before


def test_preflight_refuses_when_an_index_name_it_needs_belongs_to_another_index(db):
    """An index step drops an invalid index of its own name first: a user's index that happens to
    carry that name on another column must stop the run, never be dropped."""
    build_demo_database(db.conninfo)
    db.execute("CREATE INDEX user_feedback_session_id_idx ON chatbot.user_feedback (rating)")
    with pytest.raises(AuditError, match="user_feedback_session_id_idx already exists"):
        apply(db.conninfo, Config())
    assert db.scalar("SELECT indexdef FROM pg_indexes WHERE indexname = 'user_feedback_session_id_idx'").endswith(
        "(rating)")
    assert db.scalar("SELECT to_regclass('chatbot.session_master')") is None

"""fix --apply backs up the tables it changes before the first change; a failed backup stops it."""
from __future__ import annotations

import os
import subprocess

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
    assert res.exit_code == 1 and "Verdict: Migrated, bridge on. " in res.output, res.output   # the demo's user findings are left undecided: migrated, with debt (exit 1)
    dumps = list(out.glob("backup-*.dump"))
    assert len(dumps) == 1 and dumps[0].stat().st_size > 0
    assert "Restore with:" in res.output
    # both reports say so: the one before, what will be backed up; the one after, the file
    assert "a pg_dump backup of " in (out / "before" / "report.html").read_text()
    assert f"Backup taken before the first change: {dumps[0].name} (" in (out / "report.html").read_text()
    # a migrated database: nothing changes, so nothing is backed up either
    again = tmp_path / "again"
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--out", str(again)])
    assert res.exit_code == 1 and "Nothing to do" in res.output
    assert list(again.glob("backup-*.dump")) == []


def test_no_backup_flag_skips_it(db, tmp_path):
    build_demo_database(db.conninfo)
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--no-backup", "--out", str(tmp_path)])
    assert res.exit_code == 1 and "Verdict: Migrated, bridge on. " in res.output, res.output   # the demo's user findings are left undecided: migrated, with debt (exit 1)
    assert "No backup (--no-backup)." in res.output
    assert "No backup was taken before the first change" in (tmp_path / "report.html").read_text()
    assert list(tmp_path.glob("backup-*.dump")) == []


def test_pg_bin_is_what_the_backup_uses(db, tmp_path):
    build_demo_database(db.conninfo)
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--out", str(tmp_path / "o"),
                                   "--pg-bin", str(tmp_path / "nothing")])
    assert res.exit_code == 2
    assert f"{tmp_path / 'nothing' / 'pg_dump'} (not found) cannot back up a PostgreSQL" in res.output
    assert db.scalar("SELECT to_regclass('chatbot.session_master')") is None


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


def _sentinels(out):
    out.mkdir(parents=True, exist_ok=True)
    files = {name: f"the running apply's {name}\n" for name in ("apply-log.json", "plan.json", "plan.sql")}
    for name, text in files.items():
        (out / name).write_text(text)
    return files


def test_second_apply_on_a_running_database_is_refused_before_it_writes(db, tmp_path):
    """Another apply holds the database (its advisory lock): the second one, with the same --out, is
    refused with exit 2 and leaves that apply's files and the database as they were."""
    from yumai_audit.engine.executor import ADVISORY_KEY

    build_demo_database(db.conninfo)
    out = tmp_path / "run"
    files = _sentinels(out)
    with db.connect(autocommit=True) as running:
        running.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_KEY,))
        pid = running.info.backend_pid
        res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert f"another yumai-audit fix --apply is running on this database (server process {pid})" in res.output
    assert {p.name: p.read_text() for p in out.iterdir() if p.name in files} == files
    assert not [p for p in out.iterdir() if p.name not in files and p.name != ".yumai-audit.lock"]
    assert db.scalar("SELECT to_regclass('chatbot.session_master')") is None


def test_second_apply_with_the_same_out_is_refused_before_it_writes(db, tmp_path):
    """A run that holds the --out folder (another database, say): the second one is refused at once."""
    from yumai_audit.outputs import out_lock

    build_demo_database(db.conninfo)
    out = tmp_path / "run"
    files = _sentinels(out)
    with out_lock(out):
        res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert f"another yumai-audit run is writing into {out} (process {os.getpid()})" in res.output
    assert {p.name: p.read_text() for p in out.iterdir() if p.name in files} == files
    assert db.scalar("SELECT to_regclass('chatbot.session_master')") is None
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--out", str(out)])
    # released: the next run goes ahead (to the end: the demo's user findings are left undecided, exit 1)
    assert res.exit_code == 1 and "Verdict: Migrated, bridge on. " in res.output, res.output


def test_apply_backs_up_key_tables_in_a_schema_with_a_dot(db, tmp_path):
    """Key tables in "chat.bot": the backup holds every table the fix changes (not `nothing to back up`)."""
    from yumai_audit.catalog import QualifiedName
    from yumai_audit.fix.backup import backup_hook

    build_demo_database(db.conninfo)
    db.execute('ALTER SCHEMA chatbot RENAME TO "chat.bot"')
    config = Config(master=QualifiedName("chat.bot", "session_master"),
                    source=QualifiedName("chat.bot", "conversations"), users=QualifiedName("chat.bot", "users"))
    lines, results = [], []
    hook = backup_hook(db.conninfo, tmp_path, echo=lines.append)
    apply(db.conninfo, config, before_first_change=lambda tables: results.append(hook(tables)), rescan=False)
    (result,) = results
    assert lines[0] == f"Backup of {len(result.tables)} table(s): {result.path}"
    assert set(result.tables) >= {"chat.bot.conversations", "chat.bot.user_interactions",
                                  "chat.bot.recommendations_log", "chat.bot.user_feedback"}
    assert result.skipped == ("chat.bot.session_master",)
    listing = subprocess.run([str(result.pg_dump.with_name("pg_restore")), "--list", str(result.path)],
                             capture_output=True, text=True, check=True).stdout
    assert listing.count(" TABLE DATA chat.bot ") == len(result.tables) - 1  # the partitioned parent has none

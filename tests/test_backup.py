"""Backup before apply: pg_dump --format=custom of the named tables (partitions included), restorable
into a fresh database and by the printed command; the password never on a command line."""
from __future__ import annotations

import subprocess
import uuid

import psycopg
import pytest
from psycopg import sql

from migrated import add_rows, add_session, build, ident
from yumai_audit import backup as backup_mod
from yumai_audit.backup import BackupFailed, backup_tables, choose_tool, pattern
from yumai_audit.config import QualifiedName

TABLES = ["chatbot.users", "chatbot.session_master", "chatbot.conversations", "chatbot.user_interactions",
          "chatbot.recommendations_log", "chatbot.user_feedback", QualifiedName("chatbot", 'Odd "Name"')]
LEAVES = ["chatbot.users", "chatbot.session_master", "chatbot.conversations_2026_08", "chatbot.conversations_default",
          "chatbot.user_interactions", "chatbot.recommendations_log", "chatbot.user_feedback"]


def _data(db):
    build(db)
    db.execute('CREATE TABLE chatbot."Odd ""Name""" (id int PRIMARY KEY)')
    db.execute('INSERT INTO chatbot."Odd ""Name""" SELECT generate_series(1, 3)')
    for n in range(1, 4):
        add_session(db, n)
        add_rows(db, "chatbot.conversations", n, n)
        add_rows(db, "chatbot.user_interactions", n, 2)
    db.execute("INSERT INTO chatbot.conversations (session_id, created_at) VALUES (%s, '2026-08-03 00:00+00')",
               ("00000000-0000-4000-8000-000000000001",))


def _counts(conninfo):
    with psycopg.connect(conninfo) as conn:
        out = {t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident(t))).fetchone()[0] for t in LEAVES}
        out["odd"] = conn.execute('SELECT count(*) FROM chatbot."Odd ""Name"""').fetchone()[0]
        return out


def test_pattern_quotes_each_part():
    assert pattern(QualifiedName("chatbot", 'Odd "Name"')) == '"chatbot"."Odd ""Name"""'
    assert pattern(QualifiedName("a.b", "*")) == '"a.b"."*"'
    assert backup_mod._name('chatbot.Odd "Name"') == QualifiedName("chatbot", 'Odd "Name"')
    assert backup_mod._name('"My.Schema".T') == QualifiedName("My.Schema", "T")


def test_tool_choice_follows_the_server_version(pg_server):
    major = pg_server.version_num // 10000
    path, found = choose_tool(major)
    assert found >= major and path.name == "pg_dump"
    with pytest.raises(BackupFailed, match="no pg_dump of PostgreSQL 99"):
        choose_tool(99)


def test_backup_restores_into_a_fresh_database_with_the_same_rows(db, pg_server, tmp_path):
    _data(db)
    before = _counts(db.conninfo)
    assert before["chatbot.conversations_2026_08"] == 1 and before["chatbot.conversations_default"] == 6
    result = backup_tables(db.conninfo, TABLES, tmp_path)
    assert result.path.parent == tmp_path and result.path.stat().st_size > 0
    assert "chatbot.conversations_2026_09" in result.tables      # partitions came along
    fresh = f"yumai_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(fresh)))
    try:
        target = pg_server.database(fresh)
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA chatbot")
        restore = result.pg_dump.with_name("pg_restore")
        proc = subprocess.run([str(restore), "--exit-on-error", f"--dbname={target}", str(result.path)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert _counts(target) == before
    finally:
        with psycopg.connect(pg_server.conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(fresh)))


def test_printed_restore_command_puts_the_tables_back(db, tmp_path):
    _data(db)
    before = _counts(db.conninfo)
    result = backup_tables(db.conninfo, TABLES, tmp_path)
    db.execute("DELETE FROM chatbot.session_master WHERE session_id = %s", ("00000000-0000-4000-8000-000000000002",))
    db.execute('DELETE FROM chatbot."Odd ""Name"""')
    assert _counts(db.conninfo) != before
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", result.restore_command], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert _counts(db.conninfo) == before


def test_password_goes_through_the_environment_only(db, tmp_path, monkeypatch):
    _data(db)
    secret = "s3cret-" + uuid.uuid4().hex[:8]
    calls = []
    real_run = subprocess.run

    def spy(args, **kw):
        calls.append((list(args), dict(kw.get("env") or {})))
        return real_run(args, **kw)

    monkeypatch.setattr(backup_mod.subprocess, "run", spy)
    result = backup_tables(db.conninfo + f" password={secret}", ["chatbot.users"], tmp_path)
    dumps = [(a, e) for a, e in calls if "--format=custom" in a]
    assert len(dumps) == 1
    args, env = dumps[0]
    assert not any(secret in a for a in args)
    assert env["PGPASSWORD"] == secret
    assert secret not in result.restore_command


def test_missing_table_fails_before_anything(db, tmp_path):
    build(db)
    with pytest.raises(BackupFailed, match="chatbot.nope: no such table"):
        backup_tables(db.conninfo, ["chatbot.users", "chatbot.nope"], tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("usage, message", [
    (False, "cannot back up, nothing was changed: .*permission denied for schema chatbot"),
    (True, "backup with pg_dump failed, nothing was changed: .*permission denied for table users"),
])
def test_failed_backup_raises_and_leaves_no_file(db, tmp_path, usage, message):
    _data(db)
    role = f"yumai_nobody_{uuid.uuid4().hex[:8]}"
    db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        if usage:       # the role can see the table, so the pre-check passes and pg_dump itself fails
            db.execute(sql.SQL("GRANT USAGE ON SCHEMA chatbot TO {}").format(sql.Identifier(role)))
        with pytest.raises(BackupFailed, match=message):
            backup_tables(db.conninfo + f" user={role}", ["chatbot.users"], tmp_path)
        assert list(tmp_path.iterdir()) == []
    finally:
        db.execute(sql.SQL("DROP OWNED BY {}; DROP ROLE {}").format(sql.Identifier(role), sql.Identifier(role)))


def test_hook_skips_tables_the_fix_will_create_and_prints_the_restore_command(db, tmp_path):
    _data(db)
    lines = []
    hook = backup_mod.backup_hook(db.conninfo, tmp_path, echo=lines.append)
    result = hook(["chatbot.users", "chatbot.not_yet", "chatbot.user_feedback"])
    assert result.skipped == ("chatbot.not_yet",)
    assert result.tables == ("chatbot.users", "chatbot.user_feedback")
    assert lines == [f"Backup of 2 table(s): {result.path}", f"Restore with: {result.restore_command}"]
    assert result.path.exists()
    lines.clear()
    nothing = hook(["yumai_quarantine.user_feedback"])
    assert nothing.path is None and nothing.skipped == ("yumai_quarantine.user_feedback",)
    assert lines == ["Backup: nothing to back up (yumai_quarantine.user_feedback do not exist yet)"]
    assert len(list(tmp_path.iterdir())) == 1

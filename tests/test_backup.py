"""Backup before apply: pg_dump --format=custom of the named tables (partitions included), restorable
into a fresh database and by the printed command; the password never on a command line."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from migrated import add_rows, add_session, build, ident
from psycopg import sql

from yumai_audit.catalog import QualifiedName
from yumai_audit.fix import backup as backup_mod
from yumai_audit.fix.backup import (
    PG_BIN_ENV,
    BackupFailed,
    backup_tables,
    candidates,
    choose_tool,
    header_filter,
    pattern,
    tool_major,
    verified,
)

BACKUP_DOC = Path(__file__).resolve().parent.parent / "docs" / "migration.md"   # "Backup before the first change"
SETTING_LINE = "SET transaction_timeout = 0;"   # a value in the data that looks like the header's setting

TABLES = ["chatbot.users", "chatbot.session_master", "chatbot.conversations", "chatbot.user_interactions",
          "chatbot.recommendations_log", "chatbot.user_feedback", QualifiedName("chatbot", 'Odd "Name"')]
LEAVES = ["chatbot.users", "chatbot.session_master", "chatbot.conversations_2026_08", "chatbot.conversations_default",
          "chatbot.user_interactions", "chatbot.recommendations_log", "chatbot.user_feedback"]


def _data(db):
    build(db)
    db.execute('CREATE TABLE chatbot."Odd ""Name""" (id int PRIMARY KEY)')
    db.execute('INSERT INTO chatbot."Odd ""Name""" SELECT generate_series(1, 3)')
    db.execute("INSERT INTO chatbot.users (display_name) VALUES (%s)", (SETTING_LINE,))
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


def _tools(server_major: int) -> list[tuple[Path, int]]:
    """Every pg_dump this machine has that can dump the server: PATH (tests/matrix.sh puts the server's
    own first there), the system's, the wheels."""
    out = []
    for path in candidates():
        major = tool_major(path)
        if major is not None and major >= server_major:
            out.append((path, major))
    return out


def test_tool_choice_follows_the_server_version(pg_server, monkeypatch):
    monkeypatch.delenv(PG_BIN_ENV, raising=False)
    major = pg_server.version_num // 10000
    path, found = choose_tool(major)
    assert found >= major and path.name == "pg_dump"
    majors = [m for _p, m in _tools(major)]
    assert found == min(majors)                 # the server's own major when there is one, else the nearest newer
    with pytest.raises(BackupFailed, match="no pg_dump of PostgreSQL 99"):
        choose_tool(99)


def test_configured_pg_bin_wins_and_must_be_new_enough(pg_server, monkeypatch, tmp_path):
    major = pg_server.version_num // 10000
    newest, newest_major = max(_tools(major), key=lambda t: t[1])
    monkeypatch.setenv(PG_BIN_ENV, str(newest.parent))
    assert choose_tool(major) == (newest, newest_major)
    assert choose_tool(major, pg_bin=newest.parent) == (newest, newest_major)
    with pytest.raises(BackupFailed, match=r"pg_dump \(not found\) cannot back up a PostgreSQL"):
        choose_tool(major, pg_bin=tmp_path)
    with pytest.raises(BackupFailed, match=rf"\(PostgreSQL {newest_major}\) cannot back up a PostgreSQL 99 server"):
        choose_tool(99, pg_bin=newest.parent)


def test_header_filter_is_there_exactly_where_a_setting_is_refused():
    """No database: which (server, pg_dump) pairs get the filter. transaction_timeout is from 17."""
    for server in range(13, 19):
        for tool in range(server, 19):
            sed = header_filter(server, tool)
            assert bool(sed) == (server < 17 <= tool), (server, tool)
            if sed:
                assert sed == ["sed", "/^-- Name: /,$!{/^SET transaction_timeout = /d;}"]
            assert verified(server, tool)
    assert not verified(12, 15) and not verified(16, 19) and not verified(17, 16)



def test_printed_restore_command_puts_the_tables_back(db, pg_server, tmp_path):
    """With every pg_dump that can dump this server (its own major, and newer ones: the embedded
    wheel's 18): the command that is printed restores, on this server."""
    _data(db)
    before = _counts(db.conninfo)
    major = pg_server.version_num // 10000
    tools = _tools(major)
    assert any(m > major for _p, m in tools) or major >= 18    # a newer pg_dump is tried on every server below 18
    for pg_dump, tool in tools:
        result = backup_tables(db.conninfo, TABLES, tmp_path / str(tool), pg_bin=pg_dump.parent)
        assert result.pg_dump_major == tool
        assert ("transaction_timeout" in result.restore_command) == (major < 17 <= tool)   # the branch for this pair
        db.execute("DELETE FROM chatbot.session_master WHERE session_id = %s", ("00000000-0000-4000-8000-000000000002",))
        db.execute('DELETE FROM chatbot."Odd ""Name"""')
        db.execute("DELETE FROM chatbot.users WHERE display_name = %s", (SETTING_LINE,))
        assert _counts(db.conninfo) != before
        proc = subprocess.run(["bash", "-o", "pipefail", "-c", result.restore_command], capture_output=True, text=True)
        assert proc.returncode == 0, (tool, proc.stderr)
        assert _counts(db.conninfo) == before, tool
        assert db.scalar("SELECT count(*) FROM chatbot.users WHERE display_name = %s", (SETTING_LINE,)) == 1


def _readme_scratch_route() -> str:
    text = BACKUP_DOC.read_text(encoding="utf-8")
    block = re.search(r"<!-- run-by: tests/test_backup.py::test_readme_scratch_database_route_works_with_every_pg_dump -->"
                      r"\n```sh\n(.*?)```", text, re.S)
    assert block, "docs/migration.md: the scratch-database route is a ```sh block marked run-by this test"
    return block.group(1)


def test_readme_scratch_database_route_works_with_every_pg_dump(db, pg_server, tmp_path):
    """The docs' way (docs/migration.md) to look at a backup without touching the live tables, run as written (with the
    server in PG* variables, the programs of the pg_dump that made the backup first on PATH)."""
    _data(db)
    before = _counts(db.conninfo)
    route = _readme_scratch_route()
    params = psycopg.conninfo.conninfo_to_dict(db.conninfo)
    for pg_dump, tool in _tools(pg_server.version_num // 10000):
        result = backup_tables(db.conninfo, TABLES, tmp_path / str(tool), pg_bin=pg_dump.parent)
        assert "chatbot.conversations_2026_09" in result.tables      # partitions came along
        scratch = f"yumai_t_{uuid.uuid4().hex[:12]}"
        env = dict(os.environ, PATH=f"{pg_dump.parent}{os.pathsep}{os.environ['PATH']}", PGHOST=params["host"],
                   PGPORT=str(params.get("port", 5432)), PGUSER=params["user"], PGDATABASE=params["dbname"])
        script = route.replace("scratch", scratch).replace("backup-....dump", str(result.path))
        try:
            proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], capture_output=True, text=True, env=env)
            assert proc.returncode == 0, (tool, proc.stderr)
            assert _counts(pg_server.database(scratch)) == before, tool
        finally:
            with psycopg.connect(pg_server.conninfo, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))


def test_password_goes_through_the_environment_only(db, tmp_path, monkeypatch):
    _data(db)
    secret = "s3cret-" + uuid.uuid4().hex[:8]
    calls = []
    real_popen = subprocess.Popen

    def spy(args, **kw):
        calls.append((list(args), dict(kw.get("env") or {})))
        return real_popen(args, **kw)

    monkeypatch.setattr(backup_mod.subprocess, "Popen", spy)
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


ODD = [("chat.bot", "t"), ("chatbot", "tab\t"), ("chatbot", "space "), ("chatbot", "a*"), ("chatbot", "a?"),
       ("chatbot", "x$|(y)[z]{2}^+\\"), ("chatbot", 'q"uo"te'), ("chatbot", "Mixed.Case")]


def test_exact_names_are_backed_up_whatever_they_contain(db, tmp_path):
    """The executor hands the hook `schema.table` strings (catalog spelling): a dot in the schema, a
    trailing space or tab, and pg_dump's pattern characters must each name exactly that table (and no
    look-alike: `chatbot.ab` would match the pattern `a?`, `chatbot.tab` a stripped `tab\\t`)."""
    db.execute('CREATE SCHEMA chatbot; CREATE SCHEMA "chat.bot"; CREATE SCHEMA chat')
    for schema, name in ODD + [("chatbot", "ab"), ("chatbot", "tab"), ("chatbot", "space"), ("chatbot", "abc")]:
        db.execute(sql.SQL("CREATE TABLE {} (v text)").format(sql.Identifier(schema, name)))
        db.execute(sql.SQL("INSERT INTO {} VALUES (%s)").format(sql.Identifier(schema, name)), (f"{schema}|{name}",))
    lines = []
    result = backup_mod.backup_hook(db.conninfo, tmp_path, echo=lines.append)([f"{s}.{n}" for s, n in ODD])
    assert result.path is not None and result.skipped == ()
    assert sorted(result.tables) == sorted(f"{s}.{n}" for s, n in ODD)
    for schema, name in ODD:
        db.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(schema, name)))
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", result.restore_command], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for schema, name in ODD:
        assert db.fetchall(sql.SQL("SELECT v FROM {}").format(sql.Identifier(schema, name))) == [(f"{schema}|{name}",)]
    listing = subprocess.run([str(result.pg_dump.with_name("pg_restore")), "--list", str(result.path)],
                             capture_output=True, text=True, check=True).stdout
    assert listing.count(" TABLE DATA ") == len(ODD)      # the look-alikes are not in it


def test_a_string_that_names_two_tables_backs_up_both(db, tmp_path):
    """`a.b.c` is "a.b".c or a."b.c": both are backed up (one too many is harmless, one too few is not)."""
    db.execute('CREATE SCHEMA "a.b"; CREATE SCHEMA a; CREATE TABLE "a.b".c (v int); CREATE TABLE a."b.c" (v int)')
    result = backup_tables(db.conninfo, ["a.b.c"], tmp_path)
    assert sorted(result.tables) == ["a.b.c", "a.b.c"]
    assert backup_tables(db.conninfo, ['"a.b".c'], tmp_path).tables == ("a.b.c",)


def test_interrupted_backup_leaves_no_file(db, pg_server, tmp_path):
    """Ctrl-C while pg_dump runs (here: waiting for a lock another session holds): the process ends,
    and nothing in the folder looks like a backup, nor is any partial file left."""
    build(db)
    out = tmp_path / "out"
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "  # as in a terminal
            "from yumai_audit.fix.backup import backup_tables; "
            "backup_tables(sys.argv[1], ['chatbot.users', 'chatbot.user_feedback'], sys.argv[2])")
    with psycopg.connect(db.conninfo) as holder:
        holder.execute("LOCK TABLE chatbot.user_feedback IN ACCESS EXCLUSIVE MODE")
        proc = subprocess.Popen([sys.executable, "-c", code, db.conninfo, str(out)], start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while not db.scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump' "
                                "AND wait_event_type = 'Lock' AND datname = current_database()"):
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.1)
            assert [p.name for p in out.iterdir()]          # pg_dump has its file open
            os.killpg(proc.pid, signal.SIGINT)              # what Ctrl-C in a terminal does: the whole group
            _, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0 and "KeyboardInterrupt" in stderr
    assert list(out.iterdir()) == []


def test_failed_pg_dump_leaves_no_file(db, tmp_path):
    """pg_dump that gives up (its lock wait bounded) fails the backup and leaves nothing behind."""
    build(db)
    with psycopg.connect(db.conninfo) as holder:
        holder.execute("LOCK TABLE chatbot.users IN ACCESS EXCLUSIVE MODE")
        backup_mod_wait = backup_mod.LOCK_WAIT_SECONDS
        try:
            backup_mod.LOCK_WAIT_SECONDS = 1
            with pytest.raises(BackupFailed, match=r"backup with pg_dump failed, nothing was changed: no lock on chatbot.users within 1 s"):
                backup_tables(db.conninfo, ["chatbot.users"], tmp_path)
        finally:
            backup_mod.LOCK_WAIT_SECONDS = backup_mod_wait
    assert list(tmp_path.iterdir()) == []


def test_no_restore_command_is_printed_for_a_pair_never_tested(db, tmp_path, monkeypatch):
    """A pg_dump newer than any the matrix tests (here: pretend the newest tested is one below the one used)."""
    _data(db)
    _path, tool = choose_tool(db.server.version_num // 10000)
    monkeypatch.setattr(backup_mod, "NEWEST_VERIFIED_TOOL", tool - 1)
    lines = []
    result = backup_mod.backup_hook(db.conninfo, tmp_path, echo=lines.append)(["chatbot.users"])
    assert result.path.exists() and result.restore_command == ""
    assert lines == [f"Backup of 1 table(s): {result.path}",
                     f"Restore: no restore command is verified for a PostgreSQL {db.server.version_num // 10000} "
                     f"server with pg_dump {tool} (verified: servers 13-18, pg_dump up to {tool - 1}); "
                     "the file is a pg_dump custom archive (pg_restore)"]


def test_a_pg_dump_without_its_restore_programs_is_not_used(pg_server, tmp_path):
    major = pg_server.version_num // 10000
    real, _ = choose_tool(major)
    lonely = tmp_path / "bin"
    lonely.mkdir()
    (lonely / "pg_dump").symlink_to(real)
    with pytest.raises(BackupFailed, match=f"{lonely} has no pg_restore and no psql"):
        choose_tool(major, pg_bin=lonely)

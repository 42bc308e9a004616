"""What the server would refuse halfway, refused by the preflight before the first change (no backup,
no schema, nothing changed): a role that owns the tables but may not create schemas in the database
(as on managed databases), and a table the migration deletes from that a publication publishing deletes
covers without a replica identity."""
from __future__ import annotations

import uuid

import psycopg
import pytest
from click.testing import CliRunner
from fixtures import BASE, X, master_with
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from yumai_audit.cli import cli
from yumai_audit.demo import build_demo_database


def _untouched(db, out) -> None:
    assert list(out.glob("backup-*.dump")) == []
    assert db.scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'yumai%'") == 0
    assert db.scalar("SELECT to_regclass('chatbot.session_master') IS NULL")
    assert db.scalar("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conname LIKE '%session%'") == 0


def _one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("yumai-audit:")]
    assert len(lines) == 1, output
    return lines[0]


@pytest.fixture
def owner_role(db):
    """A login role that owns schema chatbot and every table in it, but not the database (no CREATE on it)."""
    role = f"yumai_owner_{uuid.uuid4().hex[:8]}"
    build_demo_database(db.conninfo)
    db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    db.execute(sql.SQL("ALTER SCHEMA chatbot OWNER TO {}").format(sql.Identifier(role)))
    for (name,) in db.fetchall("SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n "
                               "ON n.oid = c.relnamespace WHERE n.nspname = 'chatbot' AND c.relkind IN ('r', 'p')"):
        db.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.SQL(name), sql.Identifier(role)))
    params = conninfo_to_dict(db.conninfo)
    params["user"] = role
    try:
        yield role, make_conninfo(**params)
    finally:
        db.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(sql.Identifier(role)))
        db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_role_without_create_on_the_database_is_refused_before_the_first_change(db, owner_role, tmp_path):
    role, dsn = owner_role
    assert not db.scalar("SELECT has_database_privilege(%s, current_database(), 'CREATE')", (role,))
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["fix", "--dsn", dsn, "--apply", "--yes", "--out", str(out)])
    assert res.exit_code == 2, res.output
    line = _one_error_line(res.output)
    assert f'GRANT CREATE ON DATABASE {db.name} TO {role}' in line and "no CREATE privilege on database" in line, line
    _untouched(db, out)
    # the dry run says it too, before anyone tries
    dry = CliRunner().invoke(cli, ["fix", "--dsn", dsn])
    assert f"GRANT CREATE ON DATABASE {db.name} TO {role}" in " ".join(dry.output.split()), dry.output
    # granted as the message says: the same role migrates in one run
    db.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(db.name), sql.Identifier(role)))
    res = CliRunner().invoke(cli, ["fix", "--dsn", dsn, "--apply", "--yes", "--out", str(tmp_path / "again")])
    assert res.exit_code == 1 and "Verdict: Migrated, bridge on" in res.output, res.output


def test_an_existing_tool_schema_the_role_cannot_use_is_refused(db, owner_role, tmp_path):
    role, dsn = owner_role
    db.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(db.name), sql.Identifier(role)))
    db.execute("CREATE SCHEMA yumai_quarantine")   # an administrator's, no privilege for the role
    res = CliRunner().invoke(cli, ["fix", "--dsn", dsn, "--apply", "--yes", "--out", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    assert f"GRANT USAGE, CREATE ON SCHEMA yumai_quarantine TO {role}" in _one_error_line(res.output)
    assert db.scalar("SELECT to_regnamespace('yumai_audit') IS NULL")
    assert db.scalar("SELECT to_regclass('chatbot.session_master') IS NULL")


def test_a_published_table_without_replica_identity_is_refused_before_the_first_change(db, tmp_path):
    build_demo_database(db.conninfo)
    # the malformed keys of recommendations_log move to the quarantine: a DELETE there
    db.execute("ALTER TABLE chatbot.recommendations_log REPLICA IDENTITY NOTHING")
    with psycopg.connect(db.conninfo, autocommit=True) as conn:
        conn.execute("CREATE PUBLICATION yumai_t_pub FOR TABLE chatbot.recommendations_log "
                     "WITH (publish = 'insert, delete')")   # a warning where wal_level is not logical: enough
    before = db.scalar("SELECT count(*) FROM chatbot.recommendations_log")
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--out", str(out)])
    assert res.exit_code == 2, res.output
    line = _one_error_line(res.output)
    assert "chatbot.recommendations_log has no replica identity (REPLICA IDENTITY NOTHING)" in line, line
    assert "publication yumai_t_pub publishes its deletes" in line
    assert "ALTER TABLE chatbot.recommendations_log REPLICA IDENTITY FULL" in line
    _untouched(db, out)
    assert db.scalar("SELECT count(*) FROM chatbot.recommendations_log") == before
    # as the message says: the run then finishes
    db.execute("ALTER TABLE chatbot.recommendations_log REPLICA IDENTITY FULL")
    # (the publication also needs its subscribers prepared: this one has none, as the user says)
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--subscribers-ready",
                                   "--out", str(tmp_path / "again")])
    assert res.exit_code == 1 and "Verdict: Migrated, bridge on" in res.output, res.output


def test_a_table_without_primary_key_in_a_publication_for_all_tables_is_refused(db, tmp_path):
    build_demo_database(db.conninfo)
    # user_feedback's orphans move to the quarantine (a DELETE); without its primary key it has no replica identity
    pk = db.scalar("SELECT conname FROM pg_constraint WHERE contype = 'p' "
                   "AND conrelid = 'chatbot.user_feedback'::regclass")
    db.execute(sql.SQL("ALTER TABLE chatbot.user_feedback DROP CONSTRAINT {}").format(sql.Identifier(pk)))
    with psycopg.connect(db.conninfo, autocommit=True) as conn:
        conn.execute("CREATE PUBLICATION yumai_t_all FOR ALL TABLES")
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--out", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    line = _one_error_line(res.output)
    assert "chatbot.user_feedback has no replica identity (no primary key) and publication yumai_t_all publishes " \
           "its deletes and updates" in line, line
    assert "recommendations_log" not in line     # it has its primary key: the default replica identity
    _untouched(db, tmp_path / "run")


@pytest.mark.parametrize("via_root", [False, True], ids=["leaves", "via-root"])
def test_a_partition_published_through_its_parent_counts(db, tmp_path, via_root):
    db.execute(BASE + master_with())
    # a partitioned key table without a primary key, with an orphan row the quarantine deletes from its partition
    db.execute("CREATE TABLE chatbot.events (id int NOT NULL, session_id uuid, created_at timestamptz NOT NULL) "
               "PARTITION BY RANGE (created_at)")
    db.execute("CREATE TABLE chatbot.events_all PARTITION OF chatbot.events DEFAULT")
    db.execute("INSERT INTO chatbot.events VALUES (1, %s, '2026-03-01 10:00+00')", (X,))
    with psycopg.connect(db.conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE PUBLICATION yumai_t_parts FOR TABLE chatbot.events "
                             "WITH (publish_via_partition_root = {})").format(sql.Literal(via_root)))
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--out", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    line = _one_error_line(res.output)
    assert "chatbot.events_all has no replica identity (no primary key) and publication yumai_t_parts publishes " \
           "its deletes and updates" in line, line
    assert db.scalar("SELECT to_regnamespace('yumai_audit') IS NULL")
    assert db.scalar("SELECT count(*) FROM chatbot.events") == 1

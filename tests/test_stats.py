"""The report's statistics, collected by the scan on a real PostgreSQL: exact weekly and partition counts."""
from __future__ import annotations

from psycopg import sql

from yumai_audit.api import scan
from yumai_audit.config import Config

A, B, C, E, F = (f"00000000-0000-4000-8000-00000000000{i}" for i in "abcef")

SCHEMA = """
CREATE SCHEMA chatbot;
CREATE TABLE chatbot.session_master (session_id uuid PRIMARY KEY);
CREATE TABLE chatbot.conversations (id bigserial, session_id uuid, message text,
    created_at timestamptz NOT NULL, PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at);
CREATE TABLE chatbot.conversations_2026_03 PARTITION OF chatbot.conversations
    FOR VALUES FROM ('2026-03-01 00:00+00') TO ('2026-04-01 00:00+00');
CREATE TABLE chatbot."Conv_April" PARTITION OF chatbot.conversations
    FOR VALUES FROM ('2026-04-01 00:00+00') TO ('2026-05-01 00:00+00');
CREATE TABLE chatbot.conversations_default PARTITION OF chatbot.conversations DEFAULT;
CREATE TABLE chatbot.user_interactions (id serial PRIMARY KEY, session_id text, created_at timestamp);
CREATE TABLE chatbot.no_time (id serial PRIMARY KEY, session_id uuid);
CREATE TABLE chatbot.text_time (id serial PRIMARY KEY, session_id uuid, created_at text);
"""


def build(db):
    db.execute(SCHEMA)
    db.execute(sql.SQL("ALTER DATABASE {} SET timezone = 'Asia/Seoul'").format(sql.Identifier(db.name)))
    assert db.scalar("SHOW timezone") == "Asia/Seoul"      # weeks must still be cut in UTC
    db.execute("INSERT INTO chatbot.session_master VALUES (%s)", [A])
    db.execute("""INSERT INTO chatbot.conversations (session_id, message, created_at) VALUES
        (%(a)s, 'hello', '2026-03-10 12:00+00'),
        (%(b)s, 'hi', '2026-03-03 12:00+00'), (%(b)s, 'again', '2026-03-20 12:00+00'),
        (%(e)s, 'late', '2026-03-25 12:00+00'),
        (%(f)s, 'sunday night in UTC, monday in Seoul', '2026-03-08 23:30+00'),
        (NULL, 'lost', '2026-05-02 00:00+00')""", {"a": A, "b": B, "e": E, "f": F})
    # text keys (one upper case, one malformed), a timestamp without time zone
    db.execute("""INSERT INTO chatbot.user_interactions (session_id, created_at) VALUES
        (%(a)s, '2026-03-04 08:00'), (upper(%(c)s), '2026-03-24 08:00'), (%(c)s, '2026-03-26 08:00'),
        ('not-a-uuid', '2026-03-24 09:00'), (NULL, '2026-03-24 09:00'), (%(c)s, '-infinity'), (%(c)s, NULL)""", {"a": A, "c": C})
    db.execute("INSERT INTO chatbot.no_time (session_id) VALUES (gen_random_uuid())")
    db.execute("INSERT INTO chatbot.text_time (session_id, created_at) VALUES (gen_random_uuid(), 'yesterday')")


def test_sessions_by_week_and_partitions_are_exact(db):
    build(db)
    stats = scan(db.conninfo, Config()).stats
    assert stats["sessions_by_week"] == [
        {"week": "2026-03-02", "registered": 1, "missing_from_master": 2, "orphaned": 0},
        {"week": "2026-03-23", "registered": 0, "missing_from_master": 1, "orphaned": 1},
    ]
    assert stats["sessions_by_week_tables"] == ["chatbot.conversations", "chatbot.user_interactions"]
    assert stats["sessions_by_week_skipped"] == [
        "chatbot.no_time: no column created_at",
        "chatbot.text_time: created_at is text, not a timestamp or date",
    ]
    assert stats["sessions_by_week_truncated"] is False
    by_name = {p["partition"]: (p["rows"], p["default"], p["table"]) for p in stats["partitions"]}
    assert by_name == {
        "chatbot.conversations_2026_03": (5, False, "chatbot.conversations"),
        "chatbot.Conv_April": (0, False, "chatbot.conversations"),
        "chatbot.conversations_default": (1, True, "chatbot.conversations"),
    }
    assert all(p["bytes"] > 0 for p in stats["partitions"])


def test_findings_json_contract_keys_unchanged(db):
    build(db)
    data = scan(db.conninfo, Config()).to_dict()
    assert list(data) == ["version", "database", "generated_at", "config", "checks", "findings", "inventory", "stats"]
    assert data["stats"]["notes"] == []


def test_custom_created_at_column_and_no_timestamps(db):
    build(db)
    stats = scan(db.conninfo, Config(created_at_column="inserted_at")).stats
    assert stats["sessions_by_week"] == [] and stats["sessions_by_week_tables"] == []
    assert len(stats["sessions_by_week_skipped"]) == 4
    assert stats["created_at_column"] == "inserted_at"


def test_partitions_are_counted_as_the_scan_reads_the_table_whatever_the_role_may_read(db):
    # Each leaf is counted on its own when the role may read it as it is; through the partitioned
    # table (its privileges, its row security) when it may not: the same rows either way.
    import uuid

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from yumai_audit.connection import connect, resolve_target
    from yumai_audit.scan.scanner import audit_context
    from yumai_audit.scan.stats import leaves_readable_query

    build(db)
    # a sub-partitioned partition with a leaf of its own (the row of May is moved into it)
    db.execute("DELETE FROM chatbot.conversations WHERE created_at = '2026-05-02 00:00+00'")
    db.execute("""CREATE TABLE chatbot.conv_may PARTITION OF chatbot.conversations
                      FOR VALUES FROM ('2026-05-01 00:00+00') TO ('2026-05-10 00:00+00') PARTITION BY RANGE (created_at);
                  CREATE TABLE chatbot.conv_may_1 PARTITION OF chatbot.conv_may
                      FOR VALUES FROM ('2026-05-01 00:00+00') TO ('2026-05-10 00:00+00');""")
    db.execute("INSERT INTO chatbot.conversations (session_id, message, created_at) "
               "VALUES (NULL, 'lost', '2026-05-02 00:00+00'), (NULL, 'x', '2026-05-03 00:00+00'), "
               "(NULL, 'y', '2026-06-01 00:00+00')")
    want = {"chatbot.conversations_2026_03": 5, "chatbot.Conv_April": 0, "chatbot.conv_may_1": 2,
            "chatbot.conversations_default": 1}
    role = f"yumai_parent_{uuid.uuid4().hex[:8]}"
    ident = sql.Identifier(role)
    db.execute(sql.SQL("CREATE ROLE {r} LOGIN; GRANT USAGE ON SCHEMA chatbot TO {r}; "
                       "GRANT SELECT ON ALL TABLES IN SCHEMA chatbot TO {r}").format(r=ident))
    params = conninfo_to_dict(db.conninfo)
    params["user"] = role
    params.pop("password", None)
    as_role = make_conninfo(**params)

    def counted(conninfo):
        with connect(resolve_target(conninfo)) as conn:
            ctx = audit_context(conn, Config())
            table = next(k.table for k in ctx.key_tables if str(k.name) == "chatbot.conversations")
            readable = conn.execute(leaves_readable_query(table)).fetchone()[0]
            conn.rollback()
        stats = scan(conninfo, Config()).stats
        return readable, {p["partition"]: p["rows"] for p in stats["partitions"]}

    try:
        assert counted(as_role) == (True, want)
        db.execute(sql.SQL("REVOKE SELECT ON chatbot.conv_may_1 FROM {}").format(ident))
        assert counted(as_role) == (False, want)          # the leaf: only through the table
        db.execute(sql.SQL("GRANT SELECT ON chatbot.conv_may_1 TO {}").format(ident))
        # row security on the table: the role sees the rows of its policy through the table, and
        # every row of a leaf read as it is (no policy there): counted through the table
        db.execute(sql.SQL("ALTER TABLE chatbot.conversations ENABLE ROW LEVEL SECURITY; "
                           "CREATE POLICY not_lost ON chatbot.conversations FOR SELECT TO {} "
                           "USING (message <> 'lost')").format(ident))
        seen = dict(want, **{"chatbot.conv_may_1": 1})
        assert counted(as_role) == (False, seen)
    finally:
        db.execute(sql.SQL("DROP OWNED BY {r}; DROP ROLE {r}").format(r=ident))

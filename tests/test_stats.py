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

"""The preflight's catalog reads grow with the partitions, not with relations x partitions.

Its refusals look at every partition of the tables the plan changes (owners, row triggers, rules, what
uses a column whose type changes). They found those partitions with `pg_partition_tree(c.oid)` in a join
condition, which PostgreSQL evaluates for every pg_class row against every named table: at 365 daily
partitions 2,846 calls, 0.53 s of a 0.6 s preflight, run right before the first change and in every dry run.
Each named table's tree is now read once (a LATERAL call, fix/ddl.py `TREE`)."""
from __future__ import annotations

import json

from fixtures import daily_conversations
from psycopg import sql

from yumai_audit import api
from yumai_audit.catalog import QualifiedName
from yumai_audit.config import Config
from yumai_audit.fix.preflight_checks import replica_identity

DAYS = 200

SCHEMA = daily_conversations(DAYS, messages=900, sessions=300, users=20) + """
CREATE TABLE chatbot.user_interactions (id bigserial PRIMARY KEY, session_id uuid, user_id int);
INSERT INTO chatbot.user_interactions (session_id, user_id) SELECT md5('s' || i)::uuid, 1 FROM generate_series(1, 100) i;
-- a text key: the plan converts it, so the preflight also reads what uses that column
CREATE TABLE chatbot.user_feedback (id bigserial PRIMARY KEY, session_id varchar(64), user_id int);
INSERT INTO chatbot.user_feedback (session_id, user_id) SELECT md5('s' || i)::uuid::text, 1 FROM generate_series(1, 50) i;
ANALYZE;
"""


def _function_calls(node: dict, name: str) -> int:
    """Calls of a set-returning function in an EXPLAIN ANALYZE tree (a Function Scan's loops)."""
    own = node.get("Actual Loops", 0) if node.get("Function Name") == name else 0
    return own + sum(_function_calls(child, name) for child in node.get("Plans", []))


def test_the_preflight_reads_each_named_tables_partition_tree_once_not_once_per_relation(db):
    db.execute(SCHEMA)
    plan = api.plan(db.conninfo, Config())
    assert plan.step("to-uuid:chatbot.user_feedback")     # the column-use refusals are in the preflight
    preflight = plan.step("preflight")
    assert preflight.statements and "pg_partition_tree" in preflight.sql_text()
    relations = db.scalar("SELECT count(*) FROM pg_class")
    [(explained,)] = db.fetchall(f"EXPLAIN (ANALYZE, FORMAT JSON) {preflight.sql_text()}")
    explained = explained if isinstance(explained, list) else json.loads(explained)
    calls = _function_calls(explained[0]["Plan"], "pg_partition_tree")
    # a few named tables, each read by a few refusals (2 calls here on 15 and 18); before the change: 4,098
    assert 0 < calls <= 20, (calls, relations)
    assert db.fetchall(preflight.sql_text()) == []                   # and it refuses nothing here


NO_REPLICA_IDENTITY = f"""
CREATE SCHEMA chatbot;
CREATE TABLE chatbot.events (session_id uuid, at date NOT NULL) PARTITION BY RANGE (at);
DO $$ BEGIN
  FOR i IN 0..{DAYS - 1} LOOP
    EXECUTE format('CREATE TABLE chatbot.events_d%s PARTITION OF chatbot.events FOR VALUES FROM (%L) TO (%L)',
                   i, '2024-01-01'::date + i, '2024-01-01'::date + i + 1);
  END LOOP;
END $$;
CREATE PUBLICATION yumai_t_all FOR ALL TABLES;
"""


def test_the_replica_identity_refusal_reads_each_tables_ancestors_once(db):
    """The refusal for tables the migration deletes from that a publication publishes without a replica identity
    (partitions without a primary key, FOR ALL TABLES) found each table's publication through its ancestors in a
    join condition: pg_partition_ancestors once per pg_class row per table, 135,420 calls and 0.59 s at 365
    partitions. Now once per table, with the same rows."""
    db.execute(NO_REPLICA_IDENTITY)
    partitions = [QualifiedName("chatbot", f"events_d{i}") for i in range(DAYS)]
    [query] = replica_identity(partitions)
    with db.connect(autocommit=True) as conn:
        rows = conn.execute(query).fetchall()
        [(explained,)] = conn.execute(sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) {}").format(query)).fetchall()
    assert len(rows) == DAYS
    assert all("has no replica identity (no primary key) and publication yumai_t_all publishes its deletes and "
               "updates" in r[0] for r in rows)
    explained = explained if isinstance(explained, list) else json.loads(explained)
    calls = _function_calls(explained[0]["Plan"], "pg_partition_ancestors")
    assert 0 < calls <= DAYS, calls      # before the change: 163,747 here (on 15)

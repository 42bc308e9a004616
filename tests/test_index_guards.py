"""The guard of a group of small partitions' indexes (fix/ops/index.py, `attached_indexes`): done only when every
partition's index of the group is attached to the parent's, looked up by oid (quoted, mixed-case names too)."""
from __future__ import annotations

import json

from fixtures import daily_conversations
from psycopg import sql

from yumai_audit import api
from yumai_audit.config import Config
from yumai_audit.engine.executor import evaluate_guard

EVENTS = """
CREATE SCHEMA "Analytics";
CREATE TABLE "Analytics"."Events" (session_id uuid, at date NOT NULL) PARTITION BY RANGE (at);
DO $$ BEGIN
  FOR i IN 0..19 LOOP
    EXECUTE format('CREATE TABLE "Analytics".%I PARTITION OF "Analytics"."Events" FOR VALUES FROM (%L) TO (%L)',
                   'Events Day.' || i, '2024-01-01'::date + i, '2024-01-01'::date + i + 1);
  END LOOP;
END $$;
INSERT INTO "Analytics"."Events" SELECT md5('s' || (i % 50))::uuid, '2024-01-01'::date + i % 20
FROM generate_series(1, 200) i;
ANALYZE;
"""


def test_a_group_of_partition_indexes_is_done_when_each_is_attached_and_not_before(db):
    db.execute(daily_conversations(30, messages=600, sessions=50, users=5) + EVENTS)
    plan = api.plan(db.conninfo, Config())
    groups = [s for s in plan.steps if s.id.startswith("index:") and "+" in s.id]
    assert [s.id.split(":")[1].split("_")[0].split(" ")[0] for s in groups].count("Analytics.Events") == 3
    assert len(groups) == 7         # 30 + 1 partitions of conversations in 4 groups, 20 of the events in 3
    with db.connect(autocommit=True) as conn:
        assert [evaluate_guard(conn, s) for s in groups] == [False] * len(groups)
        events = next(s for s in groups if s.id.startswith("index:Analytics."))
        conn.execute('CREATE INDEX IF NOT EXISTS "Events_session_id_idx" ON ONLY "Analytics"."Events" (session_id)')
        # the group's statements but its last attachment: not done
        for statement in events.statements[:-1]:
            conn.execute(statement)
        assert evaluate_guard(conn, events) is False
        conn.execute(events.statements[-1])
        assert evaluate_guard(conn, events) is True
    result = api.apply(db.conninfo, Config(), rescan=False)
    assert result.ok, result.problems
    with db.connect(autocommit=True) as conn:
        assert [evaluate_guard(conn, s) for s in groups] == [True] * len(groups)


def _inherits_rows(node: dict) -> int:
    own = node["Actual Rows"] * node["Actual Loops"] if node.get("Relation Name") == "pg_inherits" else 0
    return own + sum(_inherits_rows(child) for child in node.get("Plans", []))


def test_a_groups_guard_reads_its_own_indexes_not_every_child_of_the_parents(db):
    """Looked up by each index's oid, not by the parent's children filtered: at 1,500 partitions a filter over the
    parent's 1,501 children took 6 ms per guard on 15 (0.07 ms now), twice per group and run."""
    db.execute(daily_conversations(40, messages=400, sessions=50, users=5) + "ANALYZE;")
    plan = api.plan(db.conninfo, Config())
    api.apply(db.conninfo, Config(), rescan=False)
    group = next(s for s in plan.steps if s.id.startswith("index:chatbot.conversations_") and "+" in s.id)
    assert group.guard is not None
    with db.connect(autocommit=True) as conn:
        [(explained,)] = conn.execute(sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) {}").format(group.guard)).fetchall()
        assert conn.execute(group.guard).fetchone()[0] is True
    explained = explained if isinstance(explained, list) else json.loads(explained)
    assert _inherits_rows(explained[0]["Plan"]) == len(group.tables) == 8    # a join by names per index: 692

"""The removal counts with every key table's orphans found in one pass over the source's keys
(auditor/fix/orphans_now.py): the plan's shares (`shares.measure`), its cascade notes (`cascade.measure`,
every reaching removal in one statement) and the executor's preflight refusal count exactly the rows the
per-row orphan predicate names, on key tables of several types (uuid, text in every accepted spelling,
an integer of another width than the source's), with NULL and malformed keys, a master or none."""
from __future__ import annotations

import psycopg
import pytest
from fixtures import BASE, master_with
from psycopg import sql

from yumai_audit import api
from yumai_audit.config import Config, load_config
from yumai_audit.context import audit_context
from yumai_audit.engine.executor import Executor, PreflightFailed
from yumai_audit.fix import cascade
from yumai_audit.fix.orphans_now import Shared
from yumai_audit.fix.plan import FixOptions
from yumai_audit.sqlparts import table_ref

# md5(...)::uuid: a session of the source (k 1..100), unknown (k 1001..): each key table names both
UUIDS = BASE + """
INSERT INTO chatbot.conversations SELECT 100 + g, md5('s' || (1 + g % 100))::uuid, 1, 'm',
    timestamptz '2026-02-01' + g * interval '1 hour' FROM generate_series(0, 299) g;          -- 3 rows a session
INSERT INTO chatbot.conversations SELECT 500 + g, md5('s' || g)::uuid, 1, 'm', timestamptz '2024-01-01'
    FROM generate_series(1, 5) g;                                                              -- the default partition
CREATE TABLE chatbot.user_feedback (id int PRIMARY KEY, session_id uuid, rating int);
INSERT INTO chatbot.user_feedback SELECT g, md5('s' || g)::uuid, 5 FROM generate_series(1, 100) g;
INSERT INTO chatbot.user_feedback SELECT 100 + g, md5('s' || (1000 + g))::uuid, 1 FROM generate_series(1, 15) g;
INSERT INTO chatbot.user_feedback SELECT 115 + g, NULL, 1 FROM generate_series(1, 5) g;
CREATE TABLE chatbot.feedback_votes (id int PRIMARY KEY, feedback_id int REFERENCES chatbot.user_feedback (id)
    ON DELETE CASCADE);
INSERT INTO chatbot.feedback_votes SELECT g, 1 + g % 120 FROM generate_series(1, 240) g;  -- 2 votes a feedback
INSERT INTO chatbot.feedback_votes SELECT 240 + g, 1 FROM generate_series(1, 10) g;          -- and 10 more on one
CREATE TABLE chatbot.recommendations_log (id int PRIMARY KEY, session_id varchar(64), item int);
INSERT INTO chatbot.recommendations_log SELECT g, CASE g % 4 WHEN 0 THEN md5('s' || g)::uuid::text
    WHEN 1 THEN upper(md5('s' || g)::uuid::text) WHEN 2 THEN '  ' || md5('s' || g)::uuid::text || ' '
    ELSE '{' || md5('s' || g) || '}' END, 1 FROM generate_series(1, 40) g;                  -- known, 4 spellings
INSERT INTO chatbot.recommendations_log SELECT 40 + g, CASE g % 2 WHEN 0 THEN upper(md5('s' || (2000 + g))::uuid::text)
    ELSE md5('s' || (2000 + g)) END, 1 FROM generate_series(1, 12) g;                       -- unknown: 12 orphans
INSERT INTO chatbot.recommendations_log VALUES (53, 'fake-uuid', 1), (54, '', 1), (55, '   ', 1),
    (56, '{' || md5('x')::uuid::text, 1), (57, NULL, 1), (58, NULL, 1);                     -- 4 malformed, 2 NULL
CREATE TABLE chatbot.rec_tags (id int PRIMARY KEY, rec_id int REFERENCES chatbot.recommendations_log (id)
    ON DELETE SET NULL);
INSERT INTO chatbot.rec_tags SELECT g, 1 + g % 58 FROM generate_series(0, 115) g;          -- 2 tags a row (1..58)
INSERT INTO chatbot.rec_tags SELECT 115 + g, 1 FROM generate_series(1, 20) g;                -- and 20 more on one
"""


def test_uuid_text_and_null_keys_without_a_master(db):
    """No master yet (the plan of a first run): 15 orphans of 120 feedback rows (5 NULL), their 30 of 250
    votes by CASCADE; 12 orphans + 4 malformed of 58 recommendations (2 NULL), their 24 + 8 of 136 tags by
    SET NULL (2 tags a recommendation)."""
    db.execute(UUIDS)
    plan = api.plan(db.conninfo, Config())
    assert [(s.table, s.rows, s.total, s.how) for s in plan.shares] == [
        ("chatbot.recommendations_log", 16, 58, ("12 by the quarantine of orphaned rows of chatbot.recommendations_log",
                                                 "4 by the quarantine of malformed rows of chatbot.recommendations_log")),
        ("chatbot.rec_tags", 32, 136, ("24 by ON DELETE SET NULL/DEFAULT from the quarantine of orphaned rows of "
                                       "chatbot.recommendations_log",
                                       "8 by ON DELETE SET NULL/DEFAULT from the quarantine of malformed rows of "
                                       "chatbot.recommendations_log")),
        ("chatbot.user_feedback", 15, 120, ("15 by the quarantine of orphaned rows of chatbot.user_feedback",)),
        ("chatbot.feedback_votes", 30, 250, ("30 by ON DELETE CASCADE from the quarantine of orphaned rows of "
                                             "chatbot.user_feedback",))]
    notes = [n for n in plan.notes if "through foreign keys" in n]
    assert "the quarantine of orphaned rows of chatbot.user_feedback: 15 row(s) of chatbot.user_feedback, and " \
           "through foreign keys 30 row(s) of chatbot.feedback_votes (ON DELETE CASCADE)" in notes
    assert "the quarantine of orphaned rows of chatbot.recommendations_log: 12 row(s) of chatbot.recommendations_log, " \
           "and through foreign keys 24 row(s) of chatbot.rec_tags changed (ON DELETE SET NULL/DEFAULT; originals " \
           "kept in yumai_audit.changed_rows)" in notes
    # the executor's preflight counts the same rows again, right before the first change: the same lines
    strict = api.plan(db.conninfo, Config(), options=FixOptions(max_removed_share=10))
    assert [line.split(":")[0] for line in strict.refused()] == [
        "chatbot.recommendations_log", "chatbot.rec_tags", "chatbot.user_feedback", "chatbot.feedback_votes"]
    with pytest.raises(PreflightFailed) as exc:
        Executor(api.resolve_target(db.conninfo), strict).run()
    assert sorted(str(exc.value).removeprefix("preflight: ").split("; ")) == sorted(
        part for line in strict.refused() for part in line.split("; "))
    assert db.scalar("SELECT count(*) FROM chatbot.user_feedback") == 120
    assert db.scalar("SELECT count(*) FROM chatbot.rec_tags WHERE rec_id IS NULL") == 0


def test_a_master_at_plan_time_knows_keys_the_source_lacks(db):
    """A master that exists when the plan is made (a resumed run) knows 5 of the unknown feedback sessions
    and 2 of the recommendations' (one upper case, one without hyphens): they are not orphans."""
    db.execute(UUIDS + master_with() + """
        INSERT INTO chatbot.session_master (session_id) SELECT md5('s' || g)::uuid FROM generate_series(1001, 1005) g;
        INSERT INTO chatbot.session_master (session_id) SELECT md5('s' || g)::uuid FROM generate_series(2001, 2002) g;
    """)
    plan = api.plan(db.conninfo, Config())
    got = {s.table: (s.rows, s.total) for s in plan.shares}
    assert got["chatbot.user_feedback"] == (10, 120)
    assert got["chatbot.feedback_votes"] == (20, 250)
    assert got["chatbot.recommendations_log"] == (14, 58)          # 10 orphans + 4 malformed
    assert got["chatbot.rec_tags"] == (28, 136)


# An integer key: the source's bigint, a key table's integer (another width, read as it is) and a text copy
INTEGERS = """
CREATE SCHEMA app;
CREATE TABLE app.events (id bigint GENERATED ALWAYS AS IDENTITY, device_id bigint, ts timestamptz NOT NULL,
  PRIMARY KEY (id, ts)) PARTITION BY RANGE (ts);
CREATE TABLE app.events_2026 PARTITION OF app.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE app.events_default PARTITION OF app.events DEFAULT;
INSERT INTO app.events (device_id, ts) SELECT 1 + g % 500, timestamptz '2026-01-01' + g * interval '1 hour'
  FROM generate_series(0, 1499) g;
INSERT INTO app.events (device_id, ts) SELECT 500 + g, timestamptz '2020-01-01' FROM generate_series(1, 10) g;
INSERT INTO app.events (device_id, ts) VALUES (NULL, '2026-03-01');
CREATE TABLE app.alerts (id serial PRIMARY KEY, device_id integer, msg text);
INSERT INTO app.alerts (device_id, msg) SELECT 1 + g % 510, 'ok' FROM generate_series(0, 509) g;    -- all known
INSERT INTO app.alerts (device_id, msg) SELECT 100000 + g, 'unknown' FROM generate_series(1, 40) g;   -- 40 orphans
INSERT INTO app.alerts (device_id, msg) SELECT NULL, 'none' FROM generate_series(1, 7) g;
CREATE TABLE app.crm_devices (id serial PRIMARY KEY, device_id varchar(30), note text);
INSERT INTO app.crm_devices (device_id, note) SELECT (1 + g % 500)::text, 'ok' FROM generate_series(0, 199) g;
INSERT INTO app.crm_devices (device_id, note) SELECT ' ' || (900000 + g)::text || ' ', 'unknown'
  FROM generate_series(1, 11) g;                                                                     -- 11 orphans
INSERT INTO app.crm_devices (device_id, note) VALUES ('+42', 'known'), ('dev-7', 'bad'), ('', 'bad'),
  ('12a', 'bad'), ('99999999999999999999', 'out of range'), ('7.5', 'bad'), (NULL, 'none'), (NULL, 'none');
"""
INTEGERS_TOML = """
key_column = "device_id"
master = "app.device_master"
source = "app.events"
"""


def test_integer_keys_of_another_width_and_text(db, tmp_path):
    db.execute(INTEGERS)
    path = tmp_path / "keys.toml"
    path.write_text(INTEGERS_TOML)
    plan = api.plan(db.conninfo, load_config(str(path)))
    got = {s.table: (s.rows, s.total, s.how) for s in plan.shares}
    assert got["app.alerts"] == (40, 557, ("40 by the quarantine of orphaned rows of app.alerts",))
    assert got["app.crm_devices"] == (16, 219, ("11 by the quarantine of orphaned rows of app.crm_devices",
                                                "5 by the quarantine of malformed rows of app.crm_devices"))
    assert "app.events" not in got


def rows_of(conn, query) -> list[tuple]:
    return sorted(tuple(r) for r in conn.execute(query).fetchall())


@pytest.mark.parametrize("schema, toml", [(UUIDS, None), (UUIDS + master_with("00000000-0000-4000-8000-0000000000f1")
                                                           + "INSERT INTO chatbot.session_master (session_id) "
                                                           "SELECT md5('s' || 1001)::uuid;", None),
                                          (INTEGERS, INTEGERS_TOML)])
def test_the_shared_set_holds_the_rows_of_the_per_row_predicate(db, tmp_path, schema, toml):
    """Key table by key table, the rows in the one-pass set are the rows the per-row orphan predicate names
    (the same (tableoid, ctid), nothing more, nothing less), with every other key table in the same set."""
    db.execute(schema)
    config = Config()
    if toml is not None:
        path = tmp_path / "keys.toml"
        path.write_text(toml)
        config = load_config(str(path))
    with psycopg.connect(db.conninfo, autocommit=True) as conn:
        ctx = audit_context(conn, config)
        nows = [cascade.orphans_now(ctx, k) for k in ctx.key_tables if not k.is_source]
        shared = Shared(nows)
        counts = []
        for o in nows:
            select = sql.SQL("SELECT t.tableoid::regclass::text, t.ctid::text FROM {} t WHERE {}")
            alone = rows_of(conn, select.format(table_ref(o.table), o.predicate))
            together = rows_of(conn, shared.with_(select.format(table_ref(o.table), shared.predicate(o, sql.SQL("false")))))
            assert together == alone, o.table
            counts.append(len(alone))
    assert sum(counts) > 0 and len(nows) >= 2

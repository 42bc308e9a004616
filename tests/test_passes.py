"""The per-table passes at scale: the known-session set built once still counts exactly; --timeout marks
a check `error` (with the reason) instead of failing the scan; --checks and --sample select and bound."""
from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from yumai_audit.api import scan
from yumai_audit.cli import cli
from yumai_audit.config import Config
from yumai_audit.demo import EXPECTED, SESSIONS, build_demo_database

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import generate  # noqa: E402
from fixtures import daily_conversations  # noqa: E402


def counted(result, expected):
    return {(f.check, f.table, f.column): (f.rows, f.keys) for f in result.findings
            if (f.check, f.table, f.column) in expected}


def scan_json(conninfo, tmp_path, *args) -> dict:
    result = CliRunner().invoke(cli, ["scan", "--dsn", conninfo, "--out", str(tmp_path), *args])
    assert result.exit_code in (0, 1), result.output + result.stderr
    return json.loads((tmp_path / "findings.json").read_text())


def by_key(data) -> dict:
    return {(f["check"], f["table"], f["column"]): (f["rows"], f["keys"]) for f in data["findings"]}


# the known-session set, built once -----------------------------------------------------------------

def test_generated_database_counts_exactly_what_the_generator_planted(db):
    generate.generate(db.conninfo, 2, unit=100)
    result = scan(db.conninfo, Config())
    want = generate.expected(2, unit=100)
    assert counted(result, want) == want
    assert {t.table: t.rows for t in result.inventory} == generate.row_counts(2, unit=100)
    conversations = next(t for t in result.inventory if t.table == "chatbot.conversations")
    assert (conversations.partitions, conversations.default_partition) == (13, True)   # 12 months + default


def test_half_migrated_demo_counts_master_and_source_together(db):
    # Sessions 1..100 registered in the master, plus two sessions that exist in the master only;
    # one ghost of user_interactions registered too: it is no longer an orphan.
    build_demo_database(db.conninfo)
    db.execute("""
        CREATE TABLE chatbot.session_master (session_id uuid PRIMARY KEY, user_id int);
        INSERT INTO chatbot.session_master SELECT md5('session-' || s)::uuid, 1 + s % 50 FROM generate_series(1, 100) s;
        INSERT INTO chatbot.session_master VALUES (md5('master-only-1')::uuid, 1), (md5('master-only-2')::uuid, 1),
                                                  (md5('ghost-1')::uuid, 1);
    """)
    result = scan(db.conninfo, Config())
    want = dict(EXPECTED)
    want[("missing_master_rows", "chatbot.session_master", "session_id")] = (None, SESSIONS - 100)
    ghost_1_rows = db.scalar("SELECT count(*) FROM chatbot.user_interactions WHERE session_id = md5('ghost-1')::uuid")
    want[("orphaned_session_ids", "chatbot.user_interactions", "session_id")] = (7 - ghost_1_rows, 2)
    assert counted(result, want) == want
    missing = next(f for f in result.findings if f.check == "missing_master_rows")
    assert missing.sample == [r[0] for r in db.fetchall(
        "SELECT md5('session-' || s)::uuid::text FROM generate_series(101, %s) s ORDER BY 1 LIMIT 20", (SESSIONS,))]


# --checks ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("selection", [
    ["orphaned_session_ids"],                          # known-set branches only, no branch over the set
    ["missing_master_rows"],                           # the branch over the set only
    ["null_session_ids", "malformed_session_ids"],     # no known set at all
    ["missing_master_rows", "orphaned_session_ids", "orphaned_user_ids"],
])
def test_checks_selection_runs_only_those_and_counts_exactly(db, tmp_path, selection):
    build_demo_database(db.conninfo)
    data = scan_json(db.conninfo, tmp_path, "--checks", ",".join(selection))
    assert sorted(c["check"] for c in data["checks"]) == sorted(selection)
    assert by_key(data) == {k: v for k, v in EXPECTED.items() if k[0] in selection}


# --sample -------------------------------------------------------------------------------------------

def test_sample_0_fetches_no_sample(db, tmp_path):
    build_demo_database(db.conninfo)
    data = scan_json(db.conninfo, tmp_path, "--sample", "0")
    assert all(f["sample"] == [] for f in data["findings"])
    assert {k: v for k, v in by_key(data).items() if k in EXPECTED} == EXPECTED


def test_sample_n_takes_the_first_n_values_in_order(db, tmp_path):
    build_demo_database(db.conninfo)
    data = scan_json(db.conninfo, tmp_path, "--sample", "2")
    samples = {(f["check"], f["table"]): f["sample"] for f in data["findings"]}
    ghosts = [r[0] for r in db.fetchall("SELECT md5('ghost-' || g)::uuid::text FROM generate_series(0, 2) g ORDER BY 1")]
    assert samples[("orphaned_session_ids", "chatbot.user_interactions")] == ghosts[:2]
    assert samples[("orphaned_session_ids", "chatbot.user_feedback")] == [
        db.scalar("SELECT md5('ghost-feedback')::uuid::text")]
    first = [r[0] for r in db.fetchall(
        "SELECT DISTINCT session_id::text FROM chatbot.conversations WHERE session_id IS NOT NULL ORDER BY 1 LIMIT 2")]
    assert samples[("missing_master_rows", "chatbot.session_master")] == first
    null_ids = [r[0] for r in db.fetchall(
        "SELECT id::text FROM chatbot.user_interactions WHERE session_id IS NULL ORDER BY 1 LIMIT 2")]
    assert samples[("null_session_ids", "chatbot.user_interactions")] == null_ids
    assert all(len(s) <= 2 for s in samples.values())


# --timeout -----------------------------------------------------------------------------------------

SLOW = """
CREATE FUNCTION chatbot.slow_row() RETURNS boolean LANGUAGE plpgsql VOLATILE
    AS 'BEGIN PERFORM pg_sleep(0.2); RETURN true; END';
ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
CREATE POLICY slow ON {table} FOR SELECT USING (chatbot.slow_row());
"""


@pytest.fixture
def reader(db):
    """A login that is not the tables' owner (row security applies to it), dropped afterwards."""
    role = f"yumai_slow_{uuid.uuid4().hex[:8]}"
    ident = sql.Identifier(role)
    db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
    try:
        params = conninfo_to_dict(db.conninfo)
        params["user"] = role
        params.pop("password", None)
        yield ident, make_conninfo(**params)
    finally:
        db.execute(sql.SQL("DROP OWNED BY {}").format(ident))
        db.execute(sql.SQL("DROP ROLE {}").format(ident))


def slow_table(db, reader, table: str) -> str:
    ident, conninfo = reader
    db.execute(sql.SQL(SLOW).format(table=sql.SQL(table)))
    db.execute(sql.SQL("GRANT USAGE ON SCHEMA chatbot TO {r}; GRANT SELECT ON ALL TABLES IN SCHEMA chatbot TO {r}; "
                       "GRANT EXECUTE ON FUNCTION chatbot.slow_row() TO {r}").format(r=ident))
    return conninfo


def test_timeout_on_one_table_marks_its_checks_error_and_the_rest_is_counted(db, reader, tmp_path):
    build_demo_database(db.conninfo)
    conninfo = slow_table(db, reader, "chatbot.user_feedback")
    result = CliRunner().invoke(cli, ["scan", "--dsn", conninfo, "--timeout", "0.3", "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output
    data = json.loads((tmp_path / "findings.json").read_text())
    status = {c["check"]: (c["status"], c.get("reason", "")) for c in data["checks"]}
    # user_feedback's own pass, and the set of sessions (which reads user_feedback too)
    assert status["null_session_ids"] == ("error", "timed out on chatbot.user_feedback after 0.3s")
    assert status["orphaned_user_ids"] == ("error", "timed out on chatbot.user_feedback after 0.3s")
    for check in ("orphaned_session_ids", "missing_master_rows", "conflicting_session_users"):
        assert status[check] == ("error", "timed out building the set of known sessions after 0.3s")
    # Everything not read from user_feedback is still counted exactly.
    assert status["malformed_session_ids"][0] == "fail"
    got = by_key(data)
    for key in [("malformed_session_ids", "chatbot.recommendations_log", "session_id"),
                ("noncanonical_session_ids", "chatbot.recommendations_log", "session_id"),
                ("null_session_ids", "chatbot.user_interactions", "session_id"),
                ("null_session_ids", "chatbot.conversations", "session_id"),
                ("orphaned_user_ids", "chatbot.conversations", "user_id")]:
        assert got[key] == EXPECTED[key]
    assert not [k for k in got if k[1] == "chatbot.user_feedback" and k[0] not in ("unconstrained_fk", "unindexed_fk_columns")]


def test_timeout_in_one_branch_lets_the_next_branches_run(db, reader, tmp_path):
    # Two key tables with NOT VALID foreign keys to the master: each is measured in a branch of its
    # own that joins the known sessions row by row; a_events' times out, b_events' still runs.
    build_demo_database(db.conninfo)
    db.execute("""
        CREATE TABLE chatbot.session_master (session_id uuid PRIMARY KEY, user_id int);
        INSERT INTO chatbot.session_master SELECT DISTINCT session_id FROM chatbot.conversations WHERE session_id IS NOT NULL;
        CREATE TABLE chatbot.a_events (id int PRIMARY KEY, session_id uuid);
        CREATE TABLE chatbot.b_events (id int PRIMARY KEY, session_id uuid);
        INSERT INTO chatbot.a_events SELECT g, md5('session-' || g)::uuid FROM generate_series(1, 20) g;
        INSERT INTO chatbot.b_events SELECT g, md5('session-' || g)::uuid FROM generate_series(1, 20) g;
        INSERT INTO chatbot.b_events VALUES (21, md5('nowhere-1')::uuid), (22, md5('nowhere-2')::uuid), (23, NULL);
        ALTER TABLE chatbot.a_events ADD CONSTRAINT a_session_fk FOREIGN KEY (session_id) REFERENCES chatbot.session_master NOT VALID;
        ALTER TABLE chatbot.b_events ADD CONSTRAINT b_session_fk FOREIGN KEY (session_id) REFERENCES chatbot.session_master NOT VALID;
    """)
    conninfo = slow_table(db, reader, "chatbot.a_events")
    data = scan_json(conninfo, tmp_path, "--timeout", "0.3", "--checks", "unvalidated_fk")
    assert [(c["check"], c["status"], c.get("reason")) for c in data["checks"]] == [
        ("unvalidated_fk", "error", "timed out on chatbot.a_events after 0.3s")]
    assert [(f["table"], f["rows"]) for f in data["findings"]] == [("chatbot.b_events", 2)]


def test_timeout_building_the_known_set_marks_every_check_that_needs_it(db, reader, tmp_path):
    build_demo_database(db.conninfo)
    conninfo = slow_table(db, reader, "chatbot.conversations")
    data = scan_json(conninfo, tmp_path, "--timeout", "0.3")
    status = {c["check"]: (c["status"], c.get("reason", "")) for c in data["checks"]}
    assert status["orphaned_session_ids"] == ("error", "timed out building the set of known sessions after 0.3s")
    assert status["missing_master_rows"][0] == "error"
    # What the other tables measure without the set is still measured, exactly.
    assert status["malformed_session_ids"][0] == "fail"
    got = by_key(data)
    assert got[("malformed_session_ids", "chatbot.recommendations_log", "session_id")] == (3, None)
    assert got[("null_session_ids", "chatbot.user_interactions", "session_id")] == (4, None)
    assert ("orphaned_session_ids", "chatbot.user_interactions", "session_id") not in got


def test_without_timeout_the_slow_table_is_counted(db, reader):
    build_demo_database(db.conninfo)
    db.execute("DELETE FROM chatbot.user_feedback WHERE id > 3")   # keep the test short: 3 slow rows
    conninfo = slow_table(db, reader, "chatbot.user_feedback")
    result = scan(conninfo, Config(checks=("null_session_ids",)))
    assert [c.status.value for c in result.checks] == ["fail"]


# the cheap canonical test is the canonical pattern, exactly ----------------------------------------

SPELLINGS = [
    "00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000A", "00000000-0000-4000-8000-00000000000",
    "00000000-0000-4000-8000-00000000000ab", "00000000-0000-4000-8000-0000-000000a", "0000000--0000-4000-8000-00000000000a",
    "00000000-0000-4000-8000_00000000000a", "g0000000-0000-4000-8000-00000000000a", " 0000000-0000-4000-8000-00000000000a",
    "00000000-0000-4000-8000-00000000000a\n", "{00000000-0000-4000-8000-00000000000a}", "0000000000004000800000000000000a",
    "00000000-0000-4000-8000-00000000000é", "------------------------------------", "", "0000-0000-0000-4000-8000-0000-0000-000a",
    "  00000000-0000-4000-8000-00000000000a\t", "{0000-0000-0000-4000-8000-0000-0000-000a}", "{00000000-0000-4000-8000-00000000000a",
]


def test_cheap_canonical_and_valid_tests_agree_with_the_patterns(db):
    from yumai_audit.catalog import Column
    from yumai_audit.checks.predicates import CANONICAL_PATTERN, TRIM_CHARS, UUID_INPUT_PATTERN, canonical, key_valid

    db.execute("CREATE TABLE k (session_id text)")
    with db.connect(autocommit=True) as conn:
        conn.cursor().executemany("INSERT INTO k VALUES (%s)", [(s,) for s in SPELLINGS])
        column = Column(name="session_id", type="text", typname="text", not_null=False)
        rows = conn.execute(sql.SQL(
            "SELECT t.session_id, t.session_id ~ {cp}, {cheap}, btrim(t.session_id, {trim}) ~ {vp}, {valid} FROM k t"
        ).format(cp=sql.Literal(CANONICAL_PATTERN), cheap=canonical(sql.SQL("t.session_id")),
                 trim=sql.Literal(TRIM_CHARS), vp=sql.Literal(UUID_INPUT_PATTERN), valid=key_valid(column))).fetchall()
    assert len(rows) == len(SPELLINGS)
    assert [(r[0], r[1]) for r in rows] == [(r[0], r[2]) for r in rows]
    assert [(r[0], r[3]) for r in rows] == [(r[0], r[4]) for r in rows]
    # canonical: the first only; valid: also upper case, braces, no hyphens, hyphens every four digits,
    # padded (spaces, tab, newline), braces with hyphens every four digits.
    assert sum(r[1] for r in rows) == 1 and sum(r[3] for r in rows) == 8


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_text_keys_canonical_test_runs_once_per_row_of_its_pass(db, jobs):
    # The malformed and non-canonical counts and their samples all test whether a key is canonical:
    # the pass computes that once per row (predicates.Shared), with the same counts and samples.
    from yumai_audit.checks.base import Measure
    from yumai_audit.checks.malformed_session_ids import MalformedSessionIds
    from yumai_audit.checks.noncanonical_session_ids import NoncanonicalSessionIds
    from yumai_audit.checks.predicates import CANONICAL_CHARS, CANONICAL_PATTERN, TRIM_CHARS, UUID_INPUT_PATTERN
    from yumai_audit.connection import connect, resolve_target
    from yumai_audit.scan.pass_sql import sample_aggregate, table_pass
    from yumai_audit.scan.scanner import audit_context

    db.execute("CREATE SCHEMA chatbot; CREATE TABLE chatbot.conversations (id serial PRIMARY KEY, session_id uuid); "
               "CREATE TABLE chatbot.user_feedback (id serial PRIMARY KEY, session_id varchar(60))")
    with db.connect(autocommit=True) as conn:
        conn.cursor().executemany("INSERT INTO chatbot.user_feedback (session_id) VALUES (%s)",
                                  [(s,) for s in SPELLINGS * 3 + [None]])
    valid = sql.SQL("btrim(session_id, {}) ~ {}").format(sql.Literal(TRIM_CHARS), sql.Literal(UUID_INPUT_PATTERN))
    canonical = sql.SQL("session_id ~ {}").format(sql.Literal(CANONICAL_PATTERN))
    want = {}
    for check, where in (("malformed_session_ids", sql.SQL("NOT ({})").format(valid)),
                         ("noncanonical_session_ids", sql.SQL("{} AND NOT {}").format(valid, canonical))):
        rows = db.scalar(sql.SQL("SELECT count(*) FROM chatbot.user_feedback WHERE {}").format(where))
        sample = [r[0] for r in db.fetchall(sql.SQL(
            "SELECT DISTINCT session_id FROM chatbot.user_feedback WHERE {} ORDER BY 1 LIMIT 20").format(where))]
        want[check] = (rows, sample)
    assert want["malformed_session_ids"][0] == 3 * 11 and want["noncanonical_session_ids"][0] == 3 * 7
    got = {f.check: (f.rows, f.sample) for f in scan(db.conninfo, Config(), jobs=jobs).findings
           if f.check in want}
    assert got == want

    with connect(resolve_target(db.conninfo)) as conn:
        ctx = audit_context(conn, Config())
        target = next(k for k in ctx.key_tables if str(k.name) == "chatbot.user_feedback")
        measures = {}
        for check in (MalformedSessionIds(), NoncanonicalSessionIds()):
            measures.update({f"{check.id}.{k}": m for k, m in check.measures(ctx, target).items()})
            measures[f"{check.id}.sample"] = Measure(sample_aggregate(check.sample(ctx, target, None), 20))
        text = table_pass(ctx, target, measures, hoist=True).as_string(conn)
        parallel = table_pass(ctx, target, measures).as_string(conn)     # no lateral subquery above a Gather
        conn.rollback()
    assert text.count(CANONICAL_CHARS) == 1 and parallel.count(CANONICAL_CHARS) == 6


# the set without a source table ----------------------------------------------------------------------

@pytest.mark.parametrize("interactions_user", [True, False])
def test_conflicting_users_and_orphans_without_a_source_table(db, interactions_user):
    a, b, c = ("00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000b",
               "00000000-0000-4000-8000-00000000000c")
    user = ", user_id int" if interactions_user else ""
    db.execute(f"""
        CREATE SCHEMA chatbot;
        CREATE TABLE chatbot.users (id int PRIMARY KEY);
        INSERT INTO chatbot.users VALUES (1), (2);
        CREATE TABLE chatbot.session_master (session_id uuid PRIMARY KEY, user_id int);
        INSERT INTO chatbot.session_master VALUES ('{a}', 1), ('{b}', 1);
        CREATE TABLE chatbot.user_interactions (id int PRIMARY KEY, session_id uuid{user});
    """)
    if interactions_user:
        db.execute(f"INSERT INTO chatbot.user_interactions VALUES (1, '{a}', 2), (2, '{b}', 1), (3, '{b}', NULL), "
                   f"(4, '{c}', 1), (5, '{c}', 2)")
    else:
        db.execute(f"INSERT INTO chatbot.user_interactions VALUES (1, '{a}'), (2, '{b}'), (3, '{b}'), (4, '{c}'), (5, '{c}')")
    result = scan(db.conninfo, Config())
    found = {(f.check, f.table): (f.rows, f.keys, f.sample) for f in result.findings
             if f.check in ("conflicting_session_users", "orphaned_session_ids")}
    want = {("orphaned_session_ids", "chatbot.user_interactions"): (2, 1, [c])}
    if interactions_user:
        # a: master says 1, interactions say 2; c: 1 and 2 within interactions (c is an orphan too)
        want[("conflicting_session_users", "chatbot.conversations")] = (None, 2, [a, c])
    assert found == want


# sessions per week of their first row, over the same set (for the report's chart) -------------------

WEEKS_BY_HAND = """
WITH firsts AS (
    SELECT session_id AS s, created_at AT TIME ZONE 'UTC' AS f FROM chatbot.conversations WHERE session_id IS NOT NULL
    UNION ALL SELECT session_id, created_at AT TIME ZONE 'UTC' FROM chatbot.user_interactions WHERE session_id IS NOT NULL
    UNION ALL SELECT session_id, created_at AT TIME ZONE 'UTC' FROM chatbot.user_feedback WHERE session_id IS NOT NULL
    UNION ALL SELECT btrim(session_id, E' \\t\\r\\n')::uuid, created_at AT TIME ZONE 'UTC' FROM chatbot.recommendations_log
        WHERE btrim(session_id, E' \\t\\r\\n') ~ %(pattern)s
), sessions AS (SELECT s, min(f) AS f FROM firsts GROUP BY s)
SELECT to_char(date_trunc('week', f), 'YYYY-MM-DD'),
       count(*) FILTER (WHERE EXISTS (SELECT 1 FROM chatbot.session_master m WHERE m.session_id = s)),
       count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM chatbot.session_master m WHERE m.session_id = s)
                          AND EXISTS (SELECT 1 FROM chatbot.conversations c WHERE c.session_id = s)),
       count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM chatbot.session_master m WHERE m.session_id = s)
                          AND NOT EXISTS (SELECT 1 FROM chatbot.conversations c WHERE c.session_id = s))
FROM sessions GROUP BY 1 ORDER BY 1 DESC LIMIT %(limit)s
"""


@pytest.mark.parametrize("limit", [260, 3])
def test_sessions_by_week_over_the_set_match_a_query_written_by_hand(db, limit):
    from yumai_audit.checks.predicates import UUID_INPUT_PATTERN
    from yumai_audit.scan.passes import TablePasses
    from yumai_audit.scan.scanner import _Timer, audit_context, select_checks

    build_demo_database(db.conninfo)
    db.execute("""
        CREATE TABLE chatbot.session_master (session_id uuid PRIMARY KEY, user_id int);
        INSERT INTO chatbot.session_master SELECT md5('session-' || s)::uuid, 1 FROM generate_series(1, 100) s;
        INSERT INTO chatbot.session_master VALUES (md5('ghost-1')::uuid, 1);
    """)
    config = Config(checks=("null_session_ids",))
    with db.connect() as conn:
        ctx = audit_context(conn, config)
        checks = select_checks(config)
        tables = [(k, k.table.columns["created_at"]) for k in ctx.key_tables]
        passes = TablePasses(conn, ctx, checks, {c.id: c.targets(ctx) for c in checks}, _Timer(), lambda _m: None,
                             weeks=(tables, limit))
        passes.run()
        conn.rollback()
    want = [tuple(r) for r in db.fetchall(WEEKS_BY_HAND, {"pattern": UUID_INPUT_PATTERN, "limit": limit})]
    assert passes.weeks_rows == want
    if limit == 3:
        assert len(want) == 3
    else:   # 100 + ghost-1 registered; 300 sessions missing from the master; 2 + 1 + 2 ghosts orphaned
        assert tuple(sum(r[i] for r in want) for i in (1, 2, 3)) == (101, SESSIONS - 100, 5)


# --jobs: several connections, one snapshot ----------------------------------------------------------

def half_migrated_demo(db):
    build_demo_database(db.conninfo)
    db.execute("""
        CREATE TABLE chatbot.session_master (session_id uuid PRIMARY KEY, user_id int);
        INSERT INTO chatbot.session_master SELECT md5('session-' || s)::uuid, 1 + s % 50 FROM generate_series(1, 100) s;
        INSERT INTO chatbot.session_master VALUES (md5('master-only-1')::uuid, 1), (md5('ghost-1')::uuid, 1);
        ALTER TABLE chatbot.user_interactions ADD CONSTRAINT ui_session_fk FOREIGN KEY (session_id)
            REFERENCES chatbot.session_master NOT VALID;
    """)


# a partition of January 2030 whose columns lie in another order than the table's
REORDERED_PARTITION = """
    CREATE TABLE chatbot.conversations_2030_01 (message text NOT NULL, created_at timestamptz NOT NULL,
        role text NOT NULL, user_id int, session_id uuid, id bigint NOT NULL);
    ALTER TABLE chatbot.conversations ATTACH PARTITION chatbot.conversations_2030_01
        FOR VALUES FROM ('2030-01-01 00:00+00') TO ('2030-02-01 00:00+00');
"""


def comparable(result) -> tuple:
    # Everything the scan counts; not the tables' sizes on disk (autovacuum may add a visibility map
    # between two scans of a table just loaded).
    stats = {k: v for k, v in result.stats.items() if k not in ("notes", "partitions")}
    partitions = [{k: v for k, v in p.items() if k != "bytes"} for p in result.stats.get("partitions", [])]
    return ([(f.check, f.table, f.column, f.rows, f.keys, f.sample) for f in result.findings],
            [(c.check, c.status.value) for c in result.checks], [t.rows for t in result.inventory], stats, partitions)


@pytest.mark.parametrize("jobs", [2, 3, 4])
def test_jobs_find_exactly_what_one_connection_finds(db, jobs):
    half_migrated_demo(db)
    assert comparable(scan(db.conninfo, Config(), jobs=jobs)) == comparable(scan(db.conninfo, Config(), jobs=1))


def test_the_largest_tables_pass_in_parts_of_its_partitions_finds_what_one_connection_finds(db):
    # With --jobs, the pass of the largest table, when partitioned, is read in parts (its leaf partitions
    # shared out, scan/passes.py: TablePasses._leaf_groups), one per connection: its counts add up and its
    # samples are the first of the parts' samples in the server's order. A partition whose columns lie in
    # another order is read by the columns' names. Defects in partitions of both parts; two sample keys,
    # so that the merged sample takes from both.
    half_migrated_demo(db)
    db.execute(REORDERED_PARTITION + """
        INSERT INTO chatbot.conversations (id, session_id, user_id, role, message, created_at)
        SELECT 900000 + g, CASE WHEN g % 2 = 0 THEN NULL ELSE md5('session-' || g)::uuid END,
               CASE WHEN g % 3 = 0 THEN 90000 + g ELSE 1 END, 'user', 'late', t
        FROM generate_series(1, 12) g,
             unnest(ARRAY['2026-08-02 00:00+00', '2030-01-02 00:00+00']::timestamptz[]) t;
        ANALYZE chatbot.conversations;
    """)
    config = Config(sample_size=2)
    said: list[str] = []
    split = scan(db.conninfo, config, said.append, jobs=2)
    assert sorted(m for m in said if m.startswith("scanning chatbot.conversations")) == [
        "scanning chatbot.conversations, 2 of its 5 partitions", "scanning chatbot.conversations, 3 of its 5 partitions"]
    assert comparable(split) == comparable(scan(db.conninfo, config, jobs=1))
    found = {f.check: (f.rows, f.sample) for f in split.findings if f.table == "chatbot.conversations"}
    unknown = "c.user_id IS NOT NULL AND NOT EXISTS (SELECT FROM chatbot.users u WHERE u.id = c.user_id)"
    assert found["null_session_ids"] == (
        db.scalar("SELECT count(*) FROM chatbot.conversations WHERE session_id IS NULL"),
        [r[0] for r in db.fetchall("SELECT (ROW(id, created_at))::text FROM chatbot.conversations "
                                   "WHERE session_id IS NULL ORDER BY 1 LIMIT 2")])
    assert found["orphaned_user_ids"] == (
        db.scalar(f"SELECT count(*) FROM chatbot.conversations c WHERE {unknown}"),
        [r[0] for r in db.fetchall(f"SELECT DISTINCT user_id::text FROM chatbot.conversations c WHERE {unknown} "
                                   "ORDER BY 1 LIMIT 2")])
    assert next(t.rows for t in split.inventory if t.table == "chatbot.conversations") == \
        db.scalar("SELECT count(*) FROM chatbot.conversations")


def test_a_pass_over_many_partitions_is_read_in_parts_of_at_most_a_hundred_partitions(db):
    # A part is one UNION ALL of its partitions, which PostgreSQL plans in time growing with the square of their
    # number (1.8 s for 1,500 partitions on 15): with many partitions, more parts than connections, each of at
    # most LEAVES_PER_STATEMENT (100), taken by whichever connection is free; the counts are the same.
    db.execute(daily_conversations(250, messages=3000, sessions=400, users=20) + """
        UPDATE chatbot.conversations SET session_id = NULL WHERE id % 97 = 0;
        CREATE TABLE chatbot.user_interactions (id bigserial PRIMARY KEY, session_id uuid, user_id int);
        INSERT INTO chatbot.user_interactions (session_id, user_id) SELECT md5('s' || i)::uuid, 1
        FROM generate_series(1, 100) i;
        ANALYZE;
    """)
    said: list[str] = []
    split = scan(db.conninfo, Config(), said.append, jobs=2)
    parts = sorted(int(m.split(", ")[1].split(" of ")[0]) for m in said
                   if m.startswith("scanning chatbot.conversations, "))
    assert parts == [83, 84, 84]        # 251 partitions: 3 parts (was 2, of 125 and 126)
    assert comparable(split) == comparable(scan(db.conninfo, Config(), jobs=1))
    nulls = next(f for f in split.findings if f.check == "null_session_ids" and f.table == "chatbot.conversations")
    assert nulls.rows == db.scalar("SELECT count(*) FROM chatbot.conversations WHERE session_id IS NULL") == 30


def test_jobs_share_one_snapshot(db):
    # A row committed after the scan's first connection took its snapshot and before the next one
    # connects is seen by none of them: every connection imports the first one's snapshot.
    from yumai_audit.connection import connect, resolve_target
    from yumai_audit.scan.scanner import run_scan

    build_demo_database(db.conninfo)
    target = resolve_target(db.conninfo)
    opened = []

    def connect_after_a_commit():
        db.execute("INSERT INTO chatbot.user_interactions (session_id, interaction_type, created_at) "
                   "SELECT NULL, 'click', now() FROM generate_series(1, 5)")
        opened.append(connect(target))
        return opened[-1]

    with connect(target) as conn:
        result = run_scan(conn, Config(), connect=connect_after_a_commit, jobs=3)
    assert len(opened) == 2 and all(c.closed for c in opened)
    assert counted(result, EXPECTED) == EXPECTED             # not the 10 NULL keys committed meanwhile
    assert db.scalar("SELECT count(*) FROM chatbot.user_interactions WHERE session_id IS NULL") == \
        EXPECTED[("null_session_ids", "chatbot.user_interactions", "session_id")][0] + 10


def test_jobs_on_a_read_only_login_and_when_no_more_connections_open(db, reader, tmp_path):
    # A standby-like login (every transaction read-only) exports and imports the snapshot as well; a
    # connection that cannot be opened leaves the scan on fewer connections, with the same counts.
    from yumai_audit.connection import connect, resolve_target
    from yumai_audit.scan.scanner import run_scan

    build_demo_database(db.conninfo)
    ident, conninfo = reader
    db.execute(sql.SQL("GRANT USAGE ON SCHEMA chatbot TO {r}; GRANT SELECT ON ALL TABLES IN SCHEMA chatbot TO {r}; "
                       "ALTER ROLE {r} SET default_transaction_read_only = on").format(r=ident))
    data = scan_json(conninfo, tmp_path, "--jobs", "3")
    assert {k: v for k, v in by_key(data).items() if k in EXPECTED} == EXPECTED

    def refused():
        raise psycopg.OperationalError("too many connections")

    said = []
    with connect(resolve_target(conninfo)) as conn:
        result = run_scan(conn, Config(), said.append, connect=refused, jobs=2)
    assert counted(result, EXPECTED) == EXPECTED
    assert "one connection fewer for the scan: too many connections" in said


def leaf_counts(db, table: str) -> dict[str, int]:
    """Each leaf partition of `table`: its rows, counted directly."""
    leaves = db.fetchall("SELECT n.nspname, c.relname FROM pg_partition_tree(%s::regclass) pt "
                         "JOIN pg_class c ON c.oid = pt.relid JOIN pg_namespace n ON n.oid = c.relnamespace "
                         "WHERE pt.isleaf", (table,))
    return {f"{schema}.{name}": db.scalar(sql.SQL("SELECT count(*) FROM ONLY {}").format(sql.Identifier(schema, name)))
            for schema, name in leaves}


def test_rows_per_partition_come_from_the_split_pass_and_are_the_partitions_real_counts(db):
    # With --jobs, the largest table's pass read in parts of its partitions counts each partition's rows in the
    # same read (scan/pass_sql.py: leaf_pass), instead of the report's statement that read the table once more:
    # the report's rows per partition are each partition's real count (an empty one: 0, a partition whose
    # columns lie in another order too), and exactly what one connection reports.
    half_migrated_demo(db)
    db.execute(REORDERED_PARTITION + """
        CREATE TABLE chatbot.conversations_2030_02 PARTITION OF chatbot.conversations
            FOR VALUES FROM ('2030-02-01 00:00+00') TO ('2030-03-01 00:00+00');
        INSERT INTO chatbot.conversations (id, session_id, user_id, role, message, created_at)
        SELECT 900000 + g, md5('late-' || g)::uuid, 1, 'user', 'late', '2030-01-02 00:00+00' FROM generate_series(1, 7) g;
        ANALYZE chatbot.conversations;
    """)
    said: list[str] = []
    split = scan(db.conninfo, Config(), said.append, jobs=2)
    assert any(m.startswith("scanned chatbot.conversations in 2 parts") for m in said)
    real = leaf_counts(db, "chatbot.conversations")
    assert real["chatbot.conversations_2030_01"] == 7 and real["chatbot.conversations_2030_02"] == 0
    assert {p["partition"]: p["rows"] for p in split.stats["partitions"]} == real
    assert "partition_errors" not in split.stats
    assert comparable(split) == comparable(scan(db.conninfo, Config(), jobs=1))


def _scans(db, table: str, since: dict[str, int] | None = None) -> dict[str, int]:
    """Scans (sequential and by index) of each leaf partition of `table` so far, once the scan's connections
    have ended. `since`: an earlier reading; wait (at most 10 s) until every leaf's count has moved past it and
    two readings 0.2 s apart agree: before PostgreSQL 15 a backend's counts reach the statistics collector
    asynchronously, after the backend has left pg_stat_activity."""
    for _ in range(100):
        if not db.scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                         "AND application_name LIKE 'yumai-audit%%' AND pid <> pg_backend_pid()"):
            break
        time.sleep(0.05)

    def read() -> dict[str, int]:
        return dict(db.fetchall(
            "SELECT relid::regclass::text, coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables "
            "WHERE relid IN (SELECT relid FROM pg_partition_tree(%s::regclass) WHERE isleaf)", (table,)))

    now = read()
    if since is None:
        return now
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.2)
        again = read()
        if again == now and all(n > since.get(leaf, 0) for leaf, n in now.items()):
            break
        now = again
    return now


def test_a_split_scan_reads_each_partition_of_the_largest_table_once_besides_the_sets_parts(db):
    # Each part of the set of sessions reads every key table (two parts: two reads of each partition), and the
    # table's pass reads it once more; the report's rows per partition no longer read it a fourth time.
    half_migrated_demo(db)
    db.execute("ANALYZE")
    before = _scans(db, "chatbot.conversations")
    said: list[str] = []
    scan(db.conninfo, Config(), said.append, jobs=2)
    assert any(m.startswith("built part 2 of 2 of") for m in said)
    after = _scans(db, "chatbot.conversations", since=before)
    assert len(after) == 4
    assert {leaf: n - before[leaf] for leaf, n in after.items()} == dict.fromkeys(after, 2 + 1)


def test_a_text_keyed_tables_pass_is_taken_before_a_larger_uuid_keyed_ones(db):
    # The table passes are taken the costliest first, so that with several connections a costly pass is not the
    # last, run alone while the others wait: a text key's pass trims and matches every key against the uuid
    # patterns, about 5 times a uuid key's cost per byte (scan/passes.py: TEXT_KEY_COST). The demo's
    # recommendations_log (varchar key) is smaller on disk than user_interactions (uuid key), but not 5 times.
    # One connection, so that the progress lines come in the order the passes are taken.
    from yumai_audit.scan.passes import TEXT_KEY_COST

    build_demo_database(db.conninfo)
    with psycopg.connect(db.conninfo) as conn:
        size = {name: conn.execute("SELECT pg_total_relation_size(%s::regclass)", (name,)).fetchone()[0]
                for name in ("chatbot.recommendations_log", "chatbot.user_interactions")}
    assert size["chatbot.recommendations_log"] < size["chatbot.user_interactions"]
    assert size["chatbot.user_interactions"] < TEXT_KEY_COST * size["chatbot.recommendations_log"]
    lines: list[str] = []
    result = scan(db.conninfo, Config(), lines.append, jobs=1)
    scanned = [line.removeprefix("scanning ") for line in lines
               if line.startswith("scanning chatbot.") and "partitions" not in line and "conversations" not in line]
    assert scanned == ["chatbot.recommendations_log", "chatbot.user_interactions", "chatbot.user_feedback"]
    assert counted(result, EXPECTED) == EXPECTED

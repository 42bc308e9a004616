"""watch: an incremental scan of rows created since a point in time. It finds new damage and ignores
older damage, counts what the full scan counts when `since` covers everything, and prunes partitions."""
from __future__ import annotations

import json
from datetime import datetime, timezone

from click.testing import CliRunner

from yumai_audit.api import scan
from yumai_audit.checks.base import TableCheck
from yumai_audit.cli import cli
from yumai_audit.config import Config
from yumai_audit.demo import build_demo_database
from yumai_audit.scan.scanner import audit_context, select_checks
from yumai_audit.scan.watch import sample_since_query, since_literal, watch, watch_query, watch_tables

T = datetime(2026, 11, 15, tzinfo=timezone.utc)

NEW_DAMAGE = """
INSERT INTO chatbot.user_interactions (session_id, user_id, interaction_type, created_at)
SELECT md5('new-ghost-' || (g % 2))::uuid, 1, 'click', timestamptz '2026-11-20 10:00+00' FROM generate_series(1, 3) g;
INSERT INTO chatbot.user_feedback (session_id, user_id, rating, created_at)
VALUES (NULL, 1, 3, '2026-11-20 11:00+00');
INSERT INTO chatbot.recommendations_log (session_id, user_id, item_id, created_at)
VALUES ('not-a-uuid', 1, 1, '2026-11-21 00:00+00'), (md5('session-3')::uuid::text, 4242, 1, '2026-11-21 00:01+00');
-- healthy new rows: a known session, a known user
INSERT INTO chatbot.user_interactions (session_id, user_id, interaction_type, created_at)
VALUES (md5('session-7')::uuid, 7, 'click', '2026-11-22 00:00+00');
INSERT INTO chatbot.conversations (session_id, user_id, role, message, created_at)
VALUES (md5('session-7')::uuid, 7, 'user', 'back again', '2026-11-22 00:00+00');
"""


def _table_findings(result):
    return {(f.check, f.table): (f.rows, f.keys) for f in result.findings}


def _plan(db, since: datetime) -> str:
    """EXPLAIN of the watch query over chatbot.conversations."""
    with db.connect() as conn:
        ctx = audit_context(conn, Config())
        _, by_table = watch_tables(ctx, select_checks(Config()))
        kt, owners = by_table["chatbot.conversations"]
        query = watch_query(ctx, kt, owners, since_literal(conn, kt, "created_at", since))
        return "\n".join(r[0] for r in conn.execute(b"EXPLAIN " + query.as_bytes(conn)).fetchall())


def test_watch_finds_new_damage_and_ignores_older_damage(db):
    build_demo_database(db.conninfo)
    clean = watch(db.conninfo, Config(), T)
    assert clean.findings == [] and clean.exit_code == 0
    db.execute(NEW_DAMAGE)
    result = watch(db.conninfo, Config(), T)
    assert _table_findings(result) == {
        ("orphaned_session_ids", "chatbot.user_interactions"): (3, 2),
        ("null_session_ids", "chatbot.user_feedback"): (1, None),
        ("malformed_session_ids", "chatbot.recommendations_log"): (1, None),
        ("orphaned_user_ids", "chatbot.recommendations_log"): (1, None),
        # the new conversation's session is in the source table but (no master yet) not in a master
        ("missing_master_rows", "chatbot.session_master"): (None, 1),
    }
    assert result.stats["new_rows"] == {"chatbot.conversations": 1, "chatbot.user_interactions": 4,
                                        "chatbot.recommendations_log": 2, "chatbot.user_feedback": 1}
    orphans = next(f for f in result.findings if f.check == "orphaned_session_ids")
    assert len(orphans.sample) == 2
    assert result.exit_code == 1
    skipped = {c.check for c in result.checks if c.status.value == "skipped"}
    assert {"conflicting_session_users", "unconstrained_fk"} <= skipped


def test_watch_since_the_beginning_counts_what_the_full_scan_counts(db):
    build_demo_database(db.conninfo)
    db.execute(NEW_DAMAGE)
    full = scan(db.conninfo, Config())
    incremental = watch(db.conninfo, Config(), datetime(2000, 1, 1, tzinfo=timezone.utc))
    # conflicting users is judged over whole sessions (every row of each), so watch does not run it
    table_checks = {c.id for c in select_checks(Config()) if isinstance(c, TableCheck)} - {"conflicting_session_users"}
    expected = {k: v for k, v in _table_findings(full).items() if k[0] in table_checks}
    assert _table_findings(incremental) == expected
    assert {c.check: c.status.value for c in incremental.checks}["conflicting_session_users"] == "skipped"
    assert len(expected) >= 10


def test_watch_prunes_old_partitions(db):
    build_demo_database(db.conninfo)
    plan = _plan(db, datetime(2026, 10, 5, tzinfo=timezone.utc))
    assert "conversations_2026_10" in plan and "conversations_default" in plan
    assert "conversations_2026_08" not in plan and "conversations_2026_09" not in plan


def test_watch_on_a_timestamp_without_time_zone_column_prunes_too(db):
    db.execute("""
        CREATE SCHEMA chatbot;
        CREATE TABLE chatbot.conversations (session_id text, created_at timestamp NOT NULL) PARTITION BY RANGE (created_at);
        CREATE TABLE chatbot.c_old PARTITION OF chatbot.conversations FOR VALUES FROM ('2026-01-01') TO ('2026-06-01');
        CREATE TABLE chatbot.c_new PARTITION OF chatbot.conversations FOR VALUES FROM ('2026-06-01') TO ('2027-01-01');
        INSERT INTO chatbot.conversations VALUES ('junk', '2026-02-01'), ('also junk', '2026-07-01'), (NULL, '2026-07-02');
    """)
    result = watch(db.conninfo, Config(), datetime(2026, 6, 15, tzinfo=timezone.utc))
    assert _table_findings(result) == {("malformed_session_ids", "chatbot.conversations"): (1, None),
                                       ("null_session_ids", "chatbot.conversations"): (1, None)}
    plan = _plan(db, datetime(2026, 6, 15, tzinfo=timezone.utc))
    assert "c_new" in plan and "c_old" not in plan


def test_cli_watch_exit_codes(db, tmp_path):
    build_demo_database(db.conninfo)
    runner = CliRunner()
    clean = runner.invoke(cli, ["watch", "--since", "2026-11-15T00:00:00Z", "--dsn", db.conninfo])
    assert clean.exit_code == 0, clean.output
    assert "0 error(s), 0 warning(s)" in clean.output
    db.execute(NEW_DAMAGE)
    dirty = runner.invoke(cli, ["watch", "--since", "2026-11-15", "--dsn", db.conninfo])
    assert dirty.exit_code == 1, dirty.output
    assert "chatbot.user_interactions 4" in dirty.output
    assert "3 rows in chatbot.user_interactions refer to 2 unknown sessions" in dirty.output
    as_json = runner.invoke(cli, ["watch", "--since", "2026-11-15", "--format", "json", "--out", str(tmp_path),
                                  "--dsn", db.conninfo])
    assert as_json.exit_code == 1
    document = json.loads(as_json.output)
    assert {f["check"] for f in document["findings"]} == {
        "orphaned_session_ids", "null_session_ids", "malformed_session_ids", "orphaned_user_ids", "missing_master_rows"}
    assert json.loads((tmp_path / "findings.json").read_text())["findings"] == document["findings"]
    bad = runner.invoke(cli, ["watch", "--since", "last tuesday", "--dsn", db.conninfo])
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1


def test_watch_after_cutover_checks_new_rows_against_the_master(db):
    from migrated import add_session, build, sid

    build(db)
    add_session(db, 1)
    # someone dropped a foreign key: a made-up session gets in again, before and after T
    db.execute("ALTER TABLE chatbot.recommendations_log DROP CONSTRAINT recommendations_log_session_id_fkey")
    db.execute("INSERT INTO chatbot.recommendations_log (session_id, created_at) VALUES "
               "(gen_random_uuid(), '2026-11-01 00:00+00'), (gen_random_uuid(), '2026-11-20 00:00+00'), "
               "(%s, '2026-11-20 00:00+00')", (sid(1),))
    db.execute("INSERT INTO chatbot.user_interactions (session_id, created_at) VALUES (NULL, '2026-11-01 00:00+00'), "
               "(NULL, '2026-11-21 00:00+00'), (%s, '2026-11-21 00:00+00')", (sid(1),))
    result = watch(db.conninfo, Config(), T)
    assert _table_findings(result) == {("orphaned_session_ids", "chatbot.recommendations_log"): (1, 1),
                                       ("null_session_ids", "chatbot.user_interactions"): (1, None)}


def _subplan_loops(node) -> list[int]:
    out = [node["Actual Loops"]] if node.get("Parent Relationship") == "SubPlan" else []
    for child in node.get("Plans", []):
        out += _subplan_loops(child)
    return out


def test_per_row_lookups_run_only_for_the_new_rows(db):
    """The session lookups (subplans) run once per new row, never for the old rows (4 new, 205 old)."""
    build_demo_database(db.conninfo)
    db.execute(NEW_DAMAGE)
    with db.connect() as conn:
        ctx = audit_context(conn, Config())
        _, by_table = watch_tables(ctx, select_checks(Config()))
        kt, owners = by_table["chatbot.user_interactions"]
        since = since_literal(conn, kt, "created_at", T)
        orphaned = next(c for c in owners if c.id == "orphaned_session_ids")
        queries = [watch_query(ctx, kt, owners, since),
                   sample_since_query(ctx, kt, orphaned.row_sample(ctx, kt), since, 20)]
        for query in queries:
            plan = conn.execute(b"EXPLAIN (ANALYZE, FORMAT JSON) " + query.as_bytes(conn)).fetchone()[0]
            loops = _subplan_loops(plan[0]["Plan"])
            assert loops and max(loops) <= 4, loops

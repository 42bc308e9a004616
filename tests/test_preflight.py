"""`fix --apply` on real database shapes and faults (issue 11, §2-3): refusals before the first change,
bounded and named waits, guards that stay cheap on a resumed run, options out of range."""
from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from yumai_audit import api
from yumai_audit.cli import cli
from yumai_audit.config import Config
from yumai_audit.connection import resolve_target
from yumai_audit.demo import build_demo_database
from yumai_audit.engine.executor import Executor, PreflightFailed, StepFailed
from yumai_audit.errors import AuditError

KEY_TABLES = ["conversations", "user_interactions", "recommendations_log", "user_feedback"]


def counts(db) -> dict[str, int]:
    return {t: db.scalar(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("chatbot", t))) for t in KEY_TABLES}


def untouched(db, before) -> None:
    """Nothing was changed: no master, no quarantine, no journal, every row where it was."""
    assert db.scalar("SELECT to_regclass('chatbot.session_master')") is None
    assert db.scalar("SELECT count(*) FROM pg_namespace WHERE nspname IN ('yumai_quarantine', 'yumai_audit')") == 0
    assert db.scalar("SELECT atttypid::regtype::text FROM pg_attribute WHERE attrelid = 'chatbot.recommendations_log'"
                     "::regclass AND attname = 'session_id'") == "character varying"
    assert counts(db) == before


def refused(db, *expected: str, **options) -> None:
    before = counts(db)
    with pytest.raises(PreflightFailed) as exc:
        api.apply(db.conninfo, Config(), rescan=False, options=api.FixOptions(**options))
    for text in expected:
        assert text in str(exc.value)
    untouched(db, before)


# --- options out of range: one line, exit 2, before any connection ------------------------------

@pytest.mark.parametrize("args, expected", [
    (["--active-window", "99999999999"], "--active-window must be from 0 up to 5270400 minutes"),
    (["--batch-size", "99999999999999999999"], "--batch-size must be from 1 up to 10000000 sessions"),
    (["--lock-timeout", "1e12"], "--lock-timeout must be more than 0 up to 3600 seconds"),
    (["--wait-timeout", "0"], "--wait-timeout must be more than 0 up to 604800 seconds"),
])
def test_out_of_range_options_are_one_line_and_exit_2_before_connecting(args, expected):
    # nothing listens there: an option checked after connecting would fail on the connection instead
    res = CliRunner().invoke(cli, ["fix", "--dsn", "postgresql://nobody@127.0.0.1:1/none", "--apply", "--yes", *args])
    assert res.exit_code == 2, res.output
    assert expected in res.output
    assert "Traceback" not in res.output and "connect" not in res.output


# --- refusals the preflight can know --------------------------------------------------------------

def test_a_partition_owned_by_another_role_is_refused_before_any_change(db):
    build_demo_database(db.conninfo)
    owner, other = (f"yumai_t_{w}_{uuid.uuid4().hex[:8]}" for w in ("owner", "other"))
    db.execute(sql.SQL("CREATE ROLE {} LOGIN; CREATE ROLE {}").format(sql.Identifier(owner), sql.Identifier(other)))
    try:
        db.execute(sql.SQL("GRANT CREATE ON DATABASE {d} TO {o}; GRANT USAGE, CREATE ON SCHEMA chatbot TO {o}")
                   .format(d=sql.Identifier(db.name), o=sql.Identifier(owner)))
        for (name,) in db.fetchall("SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'chatbot'::regnamespace "
                                   "AND c.relkind IN ('r', 'p')"):
            db.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier("chatbot", name),
                                                                   sql.Identifier(owner)))
        db.execute(sql.SQL("ALTER TABLE chatbot.conversations_2026_09 OWNER TO {}").format(sql.Identifier(other)))
        params = conninfo_to_dict(db.conninfo)
        params["user"] = owner
        params.pop("password", None)
        before = counts(db)
        with pytest.raises(PreflightFailed) as exc:
            api.apply(make_conninfo(**params), Config(), rescan=False)
        assert f"chatbot.conversations_2026_09 (a partition of chatbot.conversations) is owned by {other}" \
            in str(exc.value)
        untouched(db, before)
    finally:
        for role in (owner, other):
            db.execute(sql.SQL("DROP OWNED BY {r}; DROP ROLE {r}").format(r=sql.Identifier(role)))


def test_an_existing_master_without_a_unique_key_is_refused_before_the_backfill(db):
    build_demo_database(db.conninfo)
    db.execute("CREATE TABLE chatbot.session_master (session_id uuid, user_id int, session_start timestamptz, "
               "session_end timestamptz, is_active boolean)")
    before = counts(db)
    with pytest.raises(PreflightFailed) as exc:
        api.apply(db.conninfo, Config(), rescan=False)
    assert "chatbot.session_master exists but has no primary key or unique constraint on (session_id)" in str(exc.value)
    assert db.scalar("SELECT count(*) FROM chatbot.session_master") == 0
    assert counts(db) == before


def test_an_existing_master_with_a_not_null_column_the_backfill_leaves_empty_is_refused(db):
    build_demo_database(db.conninfo)
    db.execute("CREATE TABLE chatbot.session_master (session_id uuid PRIMARY KEY, user_id int, "
               "session_start timestamptz, session_end timestamptz, is_active boolean, tenant int NOT NULL, "
               "region text NOT NULL DEFAULT 'eu', n bigint GENERATED ALWAYS AS IDENTITY)")
    before = counts(db)
    with pytest.raises(PreflightFailed) as exc:
        api.apply(db.conninfo, Config(), rescan=False)
    message = str(exc.value)
    assert "chatbot.session_master.tenant is NOT NULL without a default, and the backfill does not fill it" in message
    assert "region" not in message and ".n " not in message      # a default, an identity: filled
    assert db.scalar("SELECT count(*) FROM chatbot.session_master") == 0
    assert counts(db) == before
    assert db.scalar("SELECT atttypid::regtype::text FROM pg_attribute WHERE attrelid = 'chatbot.recommendations_log'"
                     "::regclass AND attname = 'session_id'") == "character varying"


def test_a_view_on_a_text_key_column_is_refused_before_the_type_change(db):
    build_demo_database(db.conninfo)
    db.execute("CREATE VIEW chatbot.recent_recommendations AS SELECT session_id, item_id FROM chatbot.recommendations_log")
    refused(db, "chatbot.recommendations_log.session_id is used by view chatbot.recent_recommendations")


def test_a_materialized_view_and_a_policy_on_a_text_key_column_are_refused(db):
    build_demo_database(db.conninfo)
    db.execute("CREATE MATERIALIZED VIEW chatbot.rec_sessions AS SELECT DISTINCT session_id FROM chatbot.recommendations_log;"
               "CREATE POLICY only_some ON chatbot.recommendations_log USING (session_id <> 'x')")
    refused(db, "is used by materialized view chatbot.rec_sessions", "is used by policy only_some")


def test_a_before_delete_row_trigger_on_a_key_table_is_refused_with_its_name(db):
    build_demo_database(db.conninfo)
    db.execute("CREATE FUNCTION chatbot.keep_rows() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;"
               'CREATE TRIGGER "Keep feedback" BEFORE DELETE ON chatbot.user_feedback '
               "FOR EACH ROW EXECUTE FUNCTION chatbot.keep_rows()")
    refused(db, 'trigger "Keep feedback" on chatbot.user_feedback runs BEFORE DELETE FOR EACH ROW')


def test_a_disabled_trigger_and_an_after_trigger_are_not_refused(db):
    build_demo_database(db.conninfo)
    db.execute("CREATE FUNCTION chatbot.keep_rows() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;"
               "CREATE TRIGGER off BEFORE DELETE ON chatbot.user_feedback FOR EACH ROW EXECUTE FUNCTION chatbot.keep_rows();"
               "ALTER TABLE chatbot.user_feedback DISABLE TRIGGER off;"
               "CREATE TRIGGER later AFTER DELETE ON chatbot.user_feedback FOR EACH ROW EXECUTE FUNCTION chatbot.keep_rows()")
    assert api.apply(db.conninfo, Config(), rescan=False).ok


def test_a_key_table_column_named_like_the_quarantine_columns_is_refused(db):
    build_demo_database(db.conninfo)
    db.execute("ALTER TABLE chatbot.user_interactions ADD COLUMN yumai_reason text")
    refused(db, "chatbot.user_interactions has a column yumai_reason, a name its quarantine table uses")


# --- what only the step can know: a column added between attempts ---------------------------------

class _Stop(Exception):
    pass


def _at_step(prefix, action):
    def progress(msg):
        if msg.startswith("[") and f"] {prefix}" in msg:
            action()
    return progress


def test_a_column_added_after_the_plan_stops_the_step_before_it_moves_anything(db):
    build_demo_database(db.conninfo)
    added = []

    def add_column():
        if not added:
            added.append(1)
            db.execute("ALTER TABLE chatbot.user_interactions ADD COLUMN note text DEFAULT 'kept'")

    before = db.scalar("SELECT count(*) FROM chatbot.user_interactions")
    with pytest.raises(StepFailed) as exc:
        api.apply(db.conninfo, Config(), rescan=False, progress=_at_step("orphans:chatbot.user_interactions", add_column))
    assert "the columns of chatbot.user_interactions changed after the plan was made; nothing was moved" \
        in str(exc.value)
    assert db.scalar("SELECT count(*) FROM chatbot.user_interactions") == before
    assert db.scalar("SELECT to_regclass('yumai_quarantine.chatbot__user_interactions')") is None
    result = api.apply(db.conninfo, Config(), rescan=False)        # the new plan copies the new column too
    assert result.ok, result.problems
    moved = db.fetchall("SELECT note, count(*) FROM yumai_quarantine.chatbot__user_interactions GROUP BY 1")
    assert moved == [("kept", 7)]
    assert db.scalar("SELECT count(*) FROM chatbot.user_interactions") + 7 == before


def test_a_column_added_between_attempts_joins_the_existing_quarantine_table(db):
    build_demo_database(db.conninfo)

    def stop():
        raise _Stop

    with pytest.raises(_Stop):
        api.apply(db.conninfo, Config(), rescan=False, progress=_at_step("orphans:chatbot.recommendations_log", stop))
    assert db.scalar("SELECT count(*) FROM yumai_quarantine.chatbot__recommendations_log") == 3   # malformed
    db.execute("ALTER TABLE chatbot.recommendations_log ADD COLUMN source text DEFAULT 'web'")
    before = db.scalar("SELECT count(*) FROM chatbot.recommendations_log")
    result = api.apply(db.conninfo, Config(), rescan=False)
    assert result.ok, result.problems
    assert db.fetchall("SELECT yumai_reason, source, count(*) FROM yumai_quarantine.chatbot__recommendations_log "
                       "GROUP BY 1, 2 ORDER BY 1") == [("malformed", None, 3), ("orphaned", "web", 4)]
    assert db.scalar("SELECT count(*) FROM chatbot.recommendations_log") + 4 == before


# --- bounded, named waits ---------------------------------------------------------------------------

def _holder(db, name: str) -> psycopg.Connection:
    conn = db.connect(application_name=name)
    # on code without the bound, the wait ends when this session is ended (the test then fails, not hangs)
    conn.execute("SET idle_in_transaction_session_timeout = '20s'")
    conn.commit()
    return conn


def test_create_index_concurrently_waiting_for_an_idle_repeatable_read_transaction_is_bounded_and_named(db):
    build_demo_database(db.conninfo)
    holder = _holder(db, "report job")
    try:
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT count(*) FROM chatbot.users")          # takes the snapshot
        lines = []
        with pytest.raises(StepFailed) as exc:
            api.apply(db.conninfo, Config(), rescan=False, progress=lines.append, options=api.FixOptions(wait_timeout=6))
        message = str(exc.value)
        pid = holder.info.backend_pid
        # while it waits, a progress line every 5 s says what for
        assert any(": waiting " in m and "(cancelled at 6s) for older transactions to end" in m
                   and f"backend {pid} (application 'report job'" in m for m in lines), lines
        assert "step index:chatbot." in message and "cancelled after waiting" in message
        assert f"backend {pid} (application 'report job'" in message
        assert "idle in transaction since " in message
        assert "older transactions to end" in message
        holder.rollback()
    finally:
        holder.close()
    invalid = [r[0] for r in db.fetchall("SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                                         "WHERE c.relnamespace = 'chatbot'::regnamespace AND NOT i.indisvalid")]
    assert invalid and all(n.endswith("_session_id_idx") for n in invalid), invalid   # ours: the cut build, ON ONLY
    result = api.apply(db.conninfo, Config(), rescan=False)       # resumes: the invalid index is rebuilt
    assert result.ok, result.problems
    assert db.scalar("SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                     "WHERE c.relnamespace = 'chatbot'::regnamespace AND NOT i.indisvalid") == 0


def test_the_orphans_step_behind_a_row_lock_on_an_orphan_row_is_bounded_and_named(db):
    build_demo_database(db.conninfo)
    orphan = db.scalar("SELECT t.id FROM chatbot.user_interactions t WHERE t.session_id IS NOT NULL AND NOT EXISTS "
                       "(SELECT 1 FROM chatbot.conversations c WHERE c.session_id = t.session_id) ORDER BY t.id LIMIT 1")
    holder = _holder(db, "support console")
    locked = threading.Event()

    def lock_the_orphan():
        if not locked.is_set():
            holder.execute("SELECT 1 FROM chatbot.user_interactions WHERE id = %s FOR UPDATE", (orphan,))
            locked.set()

    lines = []

    def progress(msg):
        lines.append(msg)
        if msg.startswith("[") and "] orphans:chatbot.user_interactions" in msg:
            lock_the_orphan()

    target = resolve_target(db.conninfo)
    plan = api.plan(target, Config(), options=api.FixOptions(lock_timeout=1.0))
    before = db.scalar("SELECT count(*) FROM chatbot.user_interactions")
    try:
        with pytest.raises(StepFailed) as exc:
            Executor(target, plan, progress=progress, max_tries=2, backoff=0.05).run()
        message = str(exc.value)
        assert "step orphans:chatbot.user_interactions: could not take its" in message and "after 2 tries" in message
        assert f"backend {holder.info.backend_pid} (application 'support console'" in message
        assert any("lock busy" in m and f"backend {holder.info.backend_pid}" in m for m in lines)
        assert db.scalar("SELECT count(*) FROM chatbot.user_interactions") == before      # nothing moved
    finally:
        holder.rollback()
        holder.close()
    assert api.apply(target, Config(), rescan=False).ok


# --- guards cheap at scale: a resumed run with indexes missing -------------------------------------

def test_resume_guards_are_planned_as_hashed_or_indexed_passes_when_indexes_are_missing(db):
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    from generate import generate

    from yumai_audit.fix.planner import FixOptions, build_plan
    from yumai_audit.scan.scanner import audit_context

    generate(db.conninfo, 1)

    def stop():
        raise _Stop

    with pytest.raises(_Stop):
        api.apply(db.conninfo, Config(), rescan=False, progress=_at_step("index:chatbot.conversations_", stop))
    with db.connect(autocommit=True) as conn:
        with conn.transaction():
            ctx = audit_context(conn, Config())
        plan = build_plan(ctx, FixOptions())
        guards = [s for s in plan.steps if s.id.split(":")[0] in ("orphans", "catchup", "settle", "backfill")]
        assert len(guards) >= 10
        for step in guards:
            tree = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + step.guard).fetchone()[0][0]["Plan"]
            # a nested loop whose inner side scans rows (not an index) is rows x rows when no row matches
            assert not _unindexed_loops(tree), (step.id, _unindexed_loops(tree))


def _nodes(node):
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


def _unindexed_loops(tree) -> list[str]:
    bad = []
    for node in _nodes(tree):
        if node["Node Type"] != "Nested Loop":
            continue
        inner = [c for c in node.get("Plans", []) if c.get("Parent Relationship") == "Inner"]
        scans = [n["Node Type"] for c in inner for n in _nodes(c) if n["Node Type"] in ("Seq Scan", "Materialize")]
        if scans:
            bad.append(f"Nested Loop over {', '.join(scans)}")
    return bad


def test_planning_behind_an_access_exclusive_lock_is_bounded_by_the_lock_timeout(db):
    build_demo_database(db.conninfo)
    holder = _holder(db, "maintenance")
    try:
        holder.execute("LOCK TABLE chatbot.user_feedback IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(AuditError) as exc:
            api.plan(db.conninfo, Config(), options=api.FixOptions(lock_timeout=0.3))
        assert "lock timeout" in str(exc.value) and "run again when the database is quieter" in str(exc.value)
    finally:
        holder.rollback()
        holder.close()

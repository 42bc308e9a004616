"""`fix --apply` on real PostgreSQL: the after-state, idempotency, half-done migrations, odd names,
modes, the CLI's manners. (Kill/resume, live writers and locks are in tests/test_executor.py.)"""
from __future__ import annotations

import json

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import errors as pgerrors
from psycopg import sql

from yumai_audit import api
from yumai_audit.catalog import QualifiedName
from yumai_audit.cli import cli
from yumai_audit.config import Config
from yumai_audit.demo import SESSIONS, build_demo_database
from yumai_audit.engine.executor import ADVISORY_KEY

KEY_TABLES = ["conversations", "user_interactions", "recommendations_log", "user_feedback"]
# what the demo plants: (malformed, orphaned) rows per table, NULL-key rows per table
DEMO_QUARANTINE = {"conversations": 0, "user_interactions": 7, "recommendations_log": 3 + 4, "user_feedback": 2}
DEMO_NULLS = {"conversations": 2, "user_interactions": 4, "recommendations_log": 0, "user_feedback": 0}


def rows(db, schema, table, where=sql.SQL("true")) -> int:
    return db.scalar(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(sql.Identifier(schema, table), where))


def quarantined(db, schema, table) -> int:
    name = f"{schema}__{table}"
    if db.scalar("SELECT to_regclass(%s)", (sql.Identifier("yumai_quarantine", name).as_string(None),)) is None:
        return 0
    return rows(db, "yumai_quarantine", name)


def master_fks(db, schema, table, master=("chatbot", "session_master")) -> list[tuple]:
    return db.fetchall(
        "SELECT k.conname, k.convalidated, k.confdeltype::text FROM pg_constraint k "
        "WHERE k.contype = 'f' AND k.conrelid = %s::regclass AND k.confrelid = %s::regclass",
        (sql.Identifier(schema, table).as_string(None), sql.Identifier(*master).as_string(None)))


def snapshot(db, schema="chatbot", tables=KEY_TABLES, key="session_id"):
    return {t: (rows(db, schema, t), rows(db, schema, t, sql.SQL("{} IS NULL").format(sql.Identifier(key))),
                quarantined(db, schema, t)) for t in tables}


def has_bridge(db, schema, table) -> bool:
    return db.scalar("SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = %s::regclass "
                     "AND tgname = 'yumai_audit_bridge')", (sql.Identifier(schema, table).as_string(None),))


def assert_made_up_sessions_are_refused(db, schema, tables, key="session_id", extra=None,
                                        master=("chatbot", "session_master")):
    """A made-up session id is refused by the FK; on a table with the cutover bridge (the source table by
    default) it is registered in the master instead (checked in a transaction that is rolled back)."""
    made_up = "00000000-0000-4000-8000-00000000dead"
    for table in tables:
        cols = [key] + list((extra or {}).get(table, {}))
        values = [made_up] + list((extra or {}).get(table, {}).values())
        stmt = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(schema, table), sql.SQL(", ").join(map(sql.Identifier, cols)),
            sql.SQL(", ").join(map(sql.Literal, values)))
        if has_bridge(db, schema, table):
            with db.connect() as conn:
                conn.execute(stmt)
                assert conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(
                    sql.Identifier(*master), sql.Identifier(key)), (made_up,)).fetchone()[0] == 1, table
                conn.rollback()
            continue
        with pytest.raises(pgerrors.ForeignKeyViolation):
            db.execute(stmt)


DEMO_REQUIRED = {
    "conversations": {"role": "user", "message": "x", "created_at": "2026-09-02"},
    "user_interactions": {"interaction_type": "click", "created_at": "2026-09-02"},
    "recommendations_log": {"item_id": 1, "created_at": "2026-09-02"},
    "user_feedback": {"rating": 1, "created_at": "2026-09-02"},
}


def assert_demo_migrated(db, before):
    after = snapshot(db)
    for t in KEY_TABLES:
        kept, nulls, q = after[t]
        assert kept + q == before[t][0], t
        assert q == DEMO_QUARANTINE[t], t
        assert nulls == before[t][1] == DEMO_NULLS[t], t
        fks = master_fks(db, "chatbot", t)
        assert [(v, d) for _, v, d in fks] == [(True, "c")], t
    assert db.scalar("SELECT count(DISTINCT session_id) FROM chatbot.conversations c WHERE session_id IS NOT NULL "
                     "AND NOT EXISTS (SELECT 1 FROM chatbot.session_master m WHERE m.session_id = c.session_id)") == 0
    assert db.scalar("SELECT count(*) FROM chatbot.session_master") == SESSIONS
    assert_made_up_sessions_are_refused(db, "chatbot", KEY_TABLES, extra=DEMO_REQUIRED)


def test_apply_migrates_the_demo_database_and_a_second_apply_changes_nothing(db, tmp_path):
    build_demo_database(db.conninfo)
    db.execute("INSERT INTO chatbot.conversations (session_id, user_id, role, message, created_at) "
               "VALUES (md5('live')::uuid, 3, 'user', 'hi', now() - interval '5 minutes')")
    before = snapshot(db)
    before = {**before, "conversations": (before["conversations"][0], *before["conversations"][1:])}
    seen = []
    result = api.apply(db.conninfo, Config(), out_dir=tmp_path, before_first_change=seen.append)
    assert result.ok and result.problems == [], result.problems
    assert result.before is not None and result.after is not None
    assert seen and "chatbot.session_master" in seen[0] and "chatbot.recommendations_log" in seen[0]
    # the live session counts too
    db.execute("DELETE FROM chatbot.conversations WHERE session_id = md5('live')::uuid")
    db.execute("DELETE FROM chatbot.session_master WHERE session_id = md5('live')::uuid")
    before["conversations"] = (before["conversations"][0] - 1, *before["conversations"][1:])
    assert_demo_migrated(db, before)
    master = dict((r[0], r[1:]) for r in db.fetchall(
        "SELECT session_id::text, user_id, session_start, session_end, is_active FROM chatbot.session_master "
        "WHERE session_id IN (md5('session-21')::uuid, md5('session-5')::uuid)"))
    import uuid as _uuid
    s5, s21 = str(_uuid.UUID(_md5("session-5"))), str(_uuid.UUID(_md5("session-21")))
    assert master[s21][0] is None            # its earliest rows name user 777, who does not exist
    assert master[s5][0] == 1 + 5 % 50
    first, last = db.fetchall("SELECT min(created_at), max(created_at) FROM chatbot.conversations "
                              "WHERE session_id = md5('session-5')::uuid")[0]
    assert master[s5][1:] == (first, last, False)
    assert db.scalar("SELECT data_type FROM information_schema.columns WHERE table_schema = 'chatbot' "
                     "AND table_name = 'recommendations_log' AND column_name = 'session_id'") == "uuid"
    reasons = db.fetchall("SELECT yumai_reason, count(*) FROM yumai_quarantine.chatbot__recommendations_log "
                          "GROUP BY 1 ORDER BY 1")
    assert reasons == [("malformed", 3), ("orphaned", 4)]
    assert {p.name for p in tmp_path.iterdir()} >= {"plan.sql", "plan.json", "apply-log.json", "report.html", "before"}
    assert json.loads((tmp_path / "plan.json").read_text())["steps"][0]["id"] == "preflight"
    log = json.loads((tmp_path / "apply-log.json").read_text())
    assert log["ok"] is True and any(s["step"] == "verify" for s in log["steps"])

    state = snapshot(db)
    again = api.apply(db.conninfo, Config())
    assert again.nothing_to_do and again.changed == [] and again.ok
    assert snapshot(db) == state


def _md5(text):
    import hashlib
    return hashlib.md5(text.encode()).hexdigest()


def test_active_window_marks_recent_sessions_active(db):
    build_demo_database(db.conninfo)
    db.execute("INSERT INTO chatbot.conversations (session_id, user_id, role, message, created_at) VALUES "
               "(md5('recent')::uuid, 3, 'user', 'hi', now() - interval '10 minutes'), "
               "(md5('older')::uuid, 3, 'user', 'hi', now() - interval '50 minutes')")
    api.apply(db.conninfo, Config(), rescan=False, options=api.FixOptions(active_window_minutes=30))
    active = db.fetchall("SELECT session_id = md5('recent')::uuid FROM chatbot.session_master WHERE is_active")
    assert active == [(True,)]


def test_register_and_delete_modes(db, pg_server):
    build_demo_database(db.conninfo)
    result = api.apply(db.conninfo, Config(), rescan=False, options=api.FixOptions(orphans="register"))
    assert result.ok
    # 3 + 1 + 2 orphan sessions registered (log orphans keep their rows), malformed rows still quarantined
    assert db.scalar("SELECT count(*) FROM chatbot.session_master") == SESSIONS + 6
    assert quarantined(db, "chatbot", "user_interactions") == 0
    assert quarantined(db, "chatbot", "recommendations_log") == 3
    assert rows(db, "chatbot", "user_interactions") == 200 + 7 + 4


def test_delete_mode_deletes_orphans_only(db):
    build_demo_database(db.conninfo)
    before = rows(db, "chatbot", "user_interactions")
    result = api.apply(db.conninfo, Config(), rescan=False, options=api.FixOptions(orphans="delete", yes_delete=True))
    assert result.ok
    assert rows(db, "chatbot", "user_interactions") == before - 7
    assert quarantined(db, "chatbot", "user_interactions") == 0
    assert rows(db, "chatbot", "user_interactions", sql.SQL("session_id IS NULL")) == 4


HALF_DONE = """
CREATE SCHEMA "Yumai App";
CREATE TABLE "Yumai App"."Users" (id int PRIMARY KEY);
INSERT INTO "Yumai App"."Users" SELECT generate_series(1, 5);
CREATE TABLE "Yumai App"."Chats" (id bigserial, "SessionId" uuid, user_id int, created_at timestamptz NOT NULL,
    PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at);
CREATE TABLE "Yumai App"."Chats 2026" PARTITION OF "Yumai App"."Chats"
    FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE "Yumai App"."Chats Default" PARTITION OF "Yumai App"."Chats" DEFAULT;
INSERT INTO "Yumai App"."Chats" ("SessionId", user_id, created_at)
SELECT md5('s' || s)::uuid, 1 + s % 5, timestamptz '2025-12-31 20:00+00' + s * interval '1 hour' + m * interval '1 minute'
FROM generate_series(1, 10) s, generate_series(1, 3) m;
INSERT INTO "Yumai App"."Chats" ("SessionId", user_id, created_at) VALUES (NULL, 1, '2026-03-01');
-- half done: the master exists with some sessions (one with its own start, one that has no chats)
CREATE TABLE "Yumai App"."SessionMaster" ("SessionId" uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id int REFERENCES "Yumai App"."Users"(id), session_start timestamptz DEFAULT CURRENT_TIMESTAMP,
    session_end timestamptz, is_active boolean DEFAULT true);
INSERT INTO "Yumai App"."SessionMaster" ("SessionId", user_id, session_start)
VALUES (md5('s1')::uuid, 2, '2000-01-01'), (md5('s2')::uuid, NULL, '2000-01-02'), (md5('registered')::uuid, 1, '2000-01-03');
CREATE TABLE "Yumai App"."Events" (id serial PRIMARY KEY, "SessionId" uuid, user_id int);
INSERT INTO "Yumai App"."Events" ("SessionId", user_id) VALUES
    (md5('s3')::uuid, 1), (md5('registered')::uuid, 1), (md5('ghost')::uuid, 1), (NULL, 1);
ALTER TABLE "Yumai App"."Events" ADD CONSTRAINT "Events old fk" FOREIGN KEY ("SessionId")
    REFERENCES "Yumai App"."SessionMaster" ("SessionId") ON DELETE CASCADE NOT VALID;
CREATE TABLE "Yumai App"."Clicks" (id serial PRIMARY KEY, "SessionId" text, user_id int);
INSERT INTO "Yumai App"."Clicks" ("SessionId", user_id) VALUES
    (upper(md5('s4')::uuid::text), 1), (' ' || md5('s5')::uuid::text, 1), ('not-a-uuid', 1),
    (md5('ghost2')::uuid::text, 1), (NULL, 1);
"""
APP = "Yumai App"
APP_CONFIG = Config(key_column="SessionId", master=QualifiedName(APP, "SessionMaster"),
                    source=QualifiedName(APP, "Chats"), users=QualifiedName(APP, "Users"), schemas=(APP,))


def test_half_done_migration_with_mixed_case_names_in_another_schema(db):
    db.execute(HALF_DONE)
    before = snapshot(db, APP, ["Chats", "Events", "Clicks"], "SessionId")
    plan = api.plan(db.conninfo, APP_CONFIG)
    assert plan.done["master"] is True
    result = api.apply(db.conninfo, APP_CONFIG)
    assert result.ok, (result.problems, [o.to_dict() for o in result.outcomes])
    after = snapshot(db, APP, ["Chats", "Events", "Clicks"], "SessionId")
    assert {t: after[t][2] for t in after} == {"Chats": 0, "Events": 1, "Clicks": 2}
    for t in after:
        assert after[t][0] + after[t][2] == before[t][0]
        assert after[t][1] == before[t][1] == 1
    master = (APP, "SessionMaster")
    assert master_fks(db, APP, "Events", master) == [("Events old fk", True, "c")]   # validated, not duplicated
    for t in ("Chats", "Clicks"):
        assert [(v, d) for _, v, d in master_fks(db, APP, t, master)] == [(True, "c")]
    # existing master rows are never overwritten; all 10 sessions plus the registered one are there
    assert db.fetchall('SELECT user_id, session_start FROM "Yumai App"."SessionMaster" WHERE "SessionId" = md5(\'s1\')::uuid')[0][1].year == 2000
    assert db.scalar('SELECT count(*) FROM "Yumai App"."SessionMaster"') == 11
    assert db.scalar('SELECT count(*) FROM "Yumai App"."Clicks" WHERE "SessionId" IN (md5(\'s4\')::uuid, md5(\'s5\')::uuid)') == 2
    assert_made_up_sessions_are_refused(db, APP, ["Chats", "Events", "Clicks"], "SessionId",
                                        extra={"Chats": {"created_at": "2026-05-01"}}, master=(APP, "SessionMaster"))
    assert api.apply(db.conninfo, APP_CONFIG, rescan=False).nothing_to_do


def test_cli_dry_run_changes_nothing_and_writes_the_sql(db, tmp_path):
    build_demo_database(db.conninfo)
    script = tmp_path / "plan.sql"
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--sql", str(script)])
    assert res.exit_code == 1, res.output     # the demo's user findings: no step repairs them
    assert res.output.startswith("Verdict: Needs a decision.")
    assert "to-uuid:chatbot.recommendations_log" in res.output and "REWRITES" in res.output
    assert db.scalar("SELECT to_regclass('chatbot.session_master')") is None
    text = script.read_text()
    assert "-- lock: ACCESS EXCLUSIVE on chatbot.recommendations_log" in text
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--apply"])
    assert res.exit_code == 2 and "--yes" in res.output
    assert db.scalar("SELECT to_regclass('chatbot.session_master')") is None
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--orphans", "delete"])
    assert res.exit_code == 2 and "--yes-delete" in res.output


def test_a_second_concurrent_apply_is_refused(db, tmp_path):
    build_demo_database(db.conninfo)
    with psycopg.connect(db.conninfo, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_KEY,))
        res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--apply", "--yes"])
    assert res.exit_code == 2
    assert "another yumai-audit fix --apply is running on this database" in res.output
    assert db.scalar("SELECT to_regclass('chatbot.session_master')") is None
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--out", str(tmp_path)])
    assert res.exit_code == 1 and "Verdict: Migrated, bridge on. " in res.output, res.output   # the demo's user findings are left undecided: migrated, with debt (exit 1)
    assert (tmp_path / "apply-log.json").exists()


MASTER_DDL = """CREATE TABLE chatbot.session_master (session_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id int REFERENCES chatbot.users(id), session_start timestamptz DEFAULT CURRENT_TIMESTAMP,
    session_end timestamptz, is_active boolean DEFAULT true)"""


def test_an_existing_not_valid_fk_on_the_partitioned_source_is_validated_not_duplicated(db):
    """PostgreSQL 18: a NOT VALID FK on the parent; 12-17 (which refuse that): one on a partition."""
    build_demo_database(db.conninfo)
    db.execute(MASTER_DDL)
    db.execute("INSERT INTO chatbot.session_master (session_id) SELECT DISTINCT session_id FROM chatbot.conversations "
               "WHERE session_id IS NOT NULL AND created_at < '2026-09-01'")
    on = "conversations" if db.server.version_num >= 180000 else "conversations_default"
    db.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT old_fk FOREIGN KEY (session_id) REFERENCES "
                       "chatbot.session_master (session_id) ON DELETE CASCADE NOT VALID").format(
        sql.Identifier("chatbot", on)))
    plan = api.plan(db.conninfo, Config())
    assert plan.done["master"] is True
    validate = [s for s in plan.steps if s.id.startswith("fk-validate:chatbot.conversations")]
    assert any("old_fk" in s.sql_text() for s in validate)
    result = api.apply(db.conninfo, Config(), rescan=False)
    assert result.ok, result.problems
    assert master_fks(db, "chatbot", on) == [("old_fk", True, "c")]
    assert [(v, d) for _, v, d in master_fks(db, "chatbot", "conversations")] == [(True, "c")]
    for part in ("conversations_2026_08", "conversations_2026_09", "conversations_2026_10", "conversations_default"):
        assert [(v, d) for _, v, d in master_fks(db, "chatbot", part)] == [(True, "c")], part
    assert db.scalar("SELECT count(*) FROM chatbot.session_master") == SESSIONS


TEXT_SOURCE = """
CREATE SCHEMA chatbot;
CREATE TABLE chatbot.users (id int PRIMARY KEY);
INSERT INTO chatbot.users VALUES (1), (2);
CREATE TABLE chatbot.conversations (id serial PRIMARY KEY, session_id text, user_id int, created_at timestamptz NOT NULL);
INSERT INTO chatbot.conversations (session_id, user_id, created_at) VALUES
    ('00000000-0000-4000-8000-00000000000a', 1, '2026-01-01 10:00'),
    ('00000000-0000-4000-8000-00000000000A', 2, '2026-01-01 11:00'),
    (' {00000000-0000-4000-8000-00000000000b} ', 2, '2026-01-02'),
    ('00000000000040008000 00000000000c', 1, '2026-01-03'),
    ('junk', 1, '2026-01-04'), (NULL, 1, '2026-01-05');
CREATE TABLE chatbot.user_feedback (id serial PRIMARY KEY, session_id uuid, rating int);
INSERT INTO chatbot.user_feedback (session_id, rating) VALUES
    ('00000000-0000-4000-8000-00000000000b', 5), ('00000000-0000-4000-8000-0000000000ff', 1);
"""


def test_a_text_source_key_is_converted_before_the_backfill(db):
    db.execute(TEXT_SOURCE)
    result = api.apply(db.conninfo, Config(), rescan=True)
    assert result.ok, result.problems
    assert db.fetchall("SELECT session_id::text, user_id, session_start FROM chatbot.session_master ORDER BY 1")[0][:2] \
        == ("00000000-0000-4000-8000-00000000000a", 1)       # earliest row's user, both spellings one session
    assert db.scalar("SELECT count(*) FROM chatbot.session_master") == 2
    assert db.fetchall("SELECT yumai_reason, count(*) FROM yumai_quarantine.chatbot__conversations GROUP BY 1 ORDER BY 1") \
        == [("malformed", 2)]                                 # 'junk' and the id with a blank inside
    assert rows(db, "chatbot", "conversations") == 4
    assert rows(db, "chatbot", "conversations", sql.SQL("session_id IS NULL")) == 1
    assert quarantined(db, "chatbot", "user_feedback") == 1
    assert_made_up_sessions_are_refused(db, "chatbot", ["conversations", "user_feedback"],
                                        extra={"conversations": {"created_at": "2026-02-01"}})


def test_preflight_refuses_a_role_that_does_not_own_the_tables(db):
    import uuid as _uuid

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    build_demo_database(db.conninfo)
    role = f"yumai_t_reader_{_uuid.uuid4().hex[:8]}"
    db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        db.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA chatbot TO {r}; GRANT SELECT ON ALL TABLES IN SCHEMA chatbot TO {r}")
                   .format(r=sql.Identifier(role)))
        params = conninfo_to_dict(db.conninfo)
        params["user"] = role
        params.pop("password", None)
        res = CliRunner().invoke(cli, ["fix", "--dsn", make_conninfo(**params), "--apply", "--yes"])
        assert res.exit_code == 2, res.output
        assert "yumai-audit: error: preflight: " in res.output
        assert "chatbot.conversations is owned by" in res.output
        assert "connect as its owner or a superuser" in res.output
        assert "Traceback" not in res.output
        assert db.scalar("SELECT to_regclass('chatbot.session_master')") is None
    finally:
        db.execute(sql.SQL("DROP OWNED BY {r}; DROP ROLE {r}").format(r=sql.Identifier(role)))


@pytest.mark.parametrize("on_delete", ["set-null", "no-action"])
def test_deleting_a_user_after_the_migration(db, on_delete):
    """The application may delete users (an account closed). Before the migration nothing referenced
    chatbot.users; the master the fix creates references it. By default the delete still goes through
    (the user's sessions keep every row; the master forgets the user, as for a user that never
    existed); `no-action` is the guide's schema, where the delete fails while the user has sessions."""
    build_demo_database(db.conninfo)
    user = db.scalar("SELECT min(user_id) FROM chatbot.conversations c WHERE EXISTS "
                     "(SELECT 1 FROM chatbot.users u WHERE u.id = c.user_id)")
    options = {} if on_delete == "set-null" else {"master_user_delete": on_delete}
    result = api.apply(db.conninfo, Config(), options=api.FixOptions(**options))
    assert result.ok, result.problems
    sessions = db.scalar("SELECT count(*) FROM chatbot.session_master WHERE user_id = %s", (user,))
    messages = db.scalar("SELECT count(*) FROM chatbot.conversations WHERE user_id = %s", (user,))
    assert sessions > 0 and messages > 0
    if on_delete == "no-action":
        with pytest.raises(pgerrors.ForeignKeyViolation):
            db.execute("DELETE FROM chatbot.users WHERE id = %s", (user,))
        assert db.scalar("SELECT count(*) FROM chatbot.session_master WHERE user_id = %s", (user,)) == sessions
        return
    db.execute("DELETE FROM chatbot.users WHERE id = %s", (user,))
    assert db.scalar("SELECT count(*) FROM chatbot.session_master WHERE user_id = %s", (user,)) == 0
    assert db.scalar("SELECT count(*) FROM chatbot.conversations WHERE user_id = %s", (user,)) == messages
    assert "ON DELETE SET NULL" in db.scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'chatbot.session_master'::regclass "
        "AND contype = 'f'")

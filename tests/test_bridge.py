"""The cutover bridge (issue 10): the trigger that registers sessions the application did not, the gate
of --bridge none, `bridge status` / `bridge remove`, and what scan shows. Planner cases need no database;
the others run on the real server (PostgreSQL 18 embedded, or YUMAI_TEST_DSN)."""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import errors as pgerrors
from test_fix import KEY_TABLES, master_fks
from test_planner import before, plan_for

from yumai_audit import api
from yumai_audit.catalog import QualifiedName
from yumai_audit.cli import cli
from yumai_audit.config import Config
from yumai_audit.demo import build_demo_database
from yumai_audit.engine.executor import GateClosed
from yumai_audit.engine.sqlscript import render_script
from yumai_audit.engine.steps import Kind, LockMode
from yumai_audit.fix.ops.bridge import TRIGGER, Registration
from yumai_audit.fix.planner import FixOptions, PlanError
from yumai_audit.lifecycle import start_session

SRC = "chatbot.conversations"


# --- the plan (no database) ------------------------------------------------------------------------

def test_the_bridge_is_a_planned_step_before_the_source_fk_with_its_lock():
    plan = plan_for(150000)
    step = plan.step(f"bridge:{SRC}")
    assert step.lock is LockMode.SHARE_ROW_EXCLUSIVE and step.takes_lock_timeout and step.transactional
    # PostgreSQL 13+: on the parent; CREATE TRIGGER takes the same lock on every partition
    assert step.tables == (SRC, "chatbot.conversations_2026_09", "chatbot.conversations_default")
    assert step.guard is not None and step.kind is Kind.CHANGE
    assert before(plan, "backfill:chatbot.session_master", step.id)       # the backfill's last walk
    assert before(plan, step.id, f"catchup:{SRC}")
    first_fk = next(s.id for s in plan.steps if s.id.startswith("fk-add:"))
    assert before(plan, step.id, first_fk)
    assert [s.id for s in plan.steps if s.id.startswith("bridge:")] == [step.id]   # only the source
    assert not any(s.kind is Kind.GATE for s in plan.steps)


def test_the_sql_script_shows_the_bridge_quoted_and_pinned():
    script = render_script(plan_for(150000))
    block = script.split(f"bridge:{SRC}\n", 1)[1].split("\n\n", 1)[0]
    assert "-- lock: SHARE ROW EXCLUSIVE on chatbot.conversations" in block
    assert "SET LOCAL lock_timeout = '2000ms';" in block
    assert ('CREATE TRIGGER "yumai_audit_bridge" BEFORE INSERT OR UPDATE OF "session_id" ON "chatbot"."conversations" '
            'FOR EACH ROW EXECUTE FUNCTION "yumai_audit"."bridge_chatbot_conversations_fn"()') in block
    assert "SECURITY DEFINER SET search_path = pg_catalog, pg_temp" in block
    assert 'CREATE TABLE IF NOT EXISTS "yumai_audit"."bridge_log"' in block


def test_postgresql_12_puts_the_bridge_on_each_partition_and_says_so():
    plan = plan_for(120000)
    bridges = [s for s in plan.steps if s.id.startswith("bridge:")]
    assert [s.id for s in bridges] == ["bridge:chatbot.conversations_2026_09", "bridge:chatbot.conversations_default"]
    assert all(s.tables == (s.id.split(":", 1)[1],) for s in bridges)
    assert any("puts it on each partition" in n and "a partition created later" in n for n in plan.notes)
    assert not any("each partition" in n for n in plan_for(130000).notes)


def test_bridge_all_bridges_every_key_table_and_warns():
    plan = plan_for(150000, FixOptions(bridge="all"))
    bridged = {s.id for s in plan.steps if s.id.startswith("bridge:")}
    assert bridged == {f"bridge:{SRC}", "bridge:chatbot.user_interactions", "bridge:chatbot.recommendations_log"}
    # the text key is converted before its bridge; every bridge is in before the first FK
    assert before(plan, "to-uuid:chatbot.recommendations_log", "bridge:chatbot.recommendations_log")
    first_fk = next(s.id for s in plan.steps if s.id.startswith("fk-add:"))
    assert all(before(plan, b, first_fk) for b in bridged)
    warning = [n for n in plan.notes if n.startswith("--bridge all")]
    assert len(warning) == 1 and "made-up session ids are then registered rather than refused" in warning[0]


def test_bridge_none_plans_a_gate_before_each_fk_and_no_trigger():
    plan = plan_for(150000, FixOptions(bridge="none"))
    assert not any(s.id.startswith("bridge:") for s in plan.steps)
    gates = [s for s in plan.steps if s.kind is Kind.GATE]
    assert [g.id for g in gates] == [f"gate:{SRC}", "gate:chatbot.user_interactions", "gate:chatbot.recommendations_log"]
    for g in gates:
        table = g.id.split(":", 1)[1]
        if table == SRC:
            assert before(plan, g.id, f"catchup:{table}")
        else:   # right before the key (its catch-up is its settle, after the key's NOT VALID)
            order = [s.id for s in plan.steps]
            assert order[order.index(g.id) + 1] == f"fk-add:{table}"
    assert before(plan, f"gate:{SRC}", "fk-add:chatbot.conversations_2026_09")   # PG 15: the partitions' FKs
    assert plan.pending == [s for s in plan.steps if s.kind not in (Kind.CHECK, Kind.GATE)]
    assert "-- a gate:" in render_script(plan)
    with pytest.raises(PlanError, match="--bridge must be one of auto, source, all, none"):
        FixOptions(bridge="trigger")


def test_the_function_body_quotes_every_identifier():
    reg = Registration(table=QualifiedName("Yumai App", "Chats"), key="SessionId",
                       master=QualifiedName("Yumai App", "SessionMaster"), master_key="SessionId",
                       master_columns=frozenset({"SessionId", "user_id", "session_start", "session_end", "is_active"}),
                       user_column="UserId", created_column="created_at", users=QualifiedName("Yumai App", "Users"),
                       users_key="Id")
    body = reg.body()
    assert 'NEW."SessionId" IS NULL OR EXISTS (SELECT 1 FROM "Yumai App"."SessionMaster" m WHERE m."SessionId"' in body
    assert '(SELECT u."Id" FROM "Yumai App"."Users" u WHERE u."Id" = NEW."UserId" LIMIT 1)' in body
    assert "'Yumai App.Chats'" in body          # the log's table name is a literal


# --- live: writers during fix --apply ---------------------------------------------------------------

@dataclass
class Writers:
    """Three kinds of writer, each in its own thread: new sessions (the old way, or registered first),
    messages to existing sessions, clicks on existing sessions. Every failed write is kept."""

    conninfo: str
    existing: list[str]
    register_first: bool = False
    new_sessions: list[str] = field(default_factory=list)
    writes: dict = field(default_factory=lambda: {"new": 0, "message": 0, "click": 0})
    failures: list = field(default_factory=list)

    def __post_init__(self):
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in self.writes]

    def _write(self, conn, kind, i):
        if kind == "new":
            if self.register_first:
                sid = start_session(conn, user_id=1 + i % 50)
            else:
                sid = str(uuid.uuid4())
            conn.execute("INSERT INTO chatbot.conversations (session_id, user_id, role, message, created_at) "
                         "VALUES (%s, %s, 'user', 'first', now())", (sid, 1 + i % 50))
            self.new_sessions.append(str(sid))
        elif kind == "message":
            conn.execute("INSERT INTO chatbot.conversations (session_id, user_id, role, message, created_at) "
                         "VALUES (%s, NULL, 'user', 'more', now())", (self.existing[i % len(self.existing)],))
        else:
            conn.execute("INSERT INTO chatbot.user_interactions (session_id, interaction_type, created_at) "
                         "VALUES (%s, 'click', now())", (self.existing[i % len(self.existing)],))

    def _run(self, kind):
        with psycopg.connect(self.conninfo) as conn:
            i = 0
            while not self.stop.is_set():
                try:
                    self._write(conn, kind, i)
                    conn.commit()
                    self.writes[kind] += 1
                except psycopg.Error as exc:
                    conn.rollback()
                    self.failures.append((kind, type(exc).__name__, str(exc).splitlines()[0]))
                i += 1
                time.sleep(0.003)

    def __enter__(self):
        for t in self.threads:
            t.start()
        time.sleep(0.2)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def existing_sessions(db, n=20) -> list[str]:
    return [r[0] for r in db.fetchall("SELECT DISTINCT session_id::text FROM chatbot.conversations "
                                      "WHERE session_id IS NOT NULL ORDER BY 1 LIMIT %s", (n,))]


def unregistered_source_sessions(db) -> int:
    return db.scalar("SELECT count(DISTINCT session_id) FROM chatbot.conversations c WHERE session_id IS NOT NULL "
                     "AND NOT EXISTS (SELECT 1 FROM chatbot.session_master m WHERE m.session_id = c.session_id)")


def assert_every_fk_validated(db):
    for t in KEY_TABLES:
        assert [(v, d) for _, v, d in master_fks(db, "chatbot", t)] == [(True, "c")], t


def test_old_way_writers_see_no_failed_write_during_apply_with_the_bridge(db):
    build_demo_database(db.conninfo)
    with Writers(db.conninfo, existing_sessions(db)) as w:
        result = api.apply(db.conninfo, Config(), rescan=False)
        time.sleep(0.3)      # writes after the FKs: still none fails
    assert result.ok, result.problems
    assert w.failures == []
    assert min(w.writes.values()) > 10 and len(w.new_sessions) == w.writes["new"]
    assert unregistered_source_sessions(db) == 0
    assert_every_fk_validated(db)
    # the sessions started after the bridge came in were registered by it, and logged once each
    logged = db.scalar("SELECT count(*) FROM yumai_audit.bridge_log")
    assert db.scalar("SELECT count(DISTINCT session_id) FROM yumai_audit.bridge_log") == logged
    assert 0 < logged <= len(w.new_sessions)
    assert db.scalar("SELECT count(*) FROM yumai_audit.bridge_log l WHERE NOT EXISTS (SELECT 1 FROM "
                     "chatbot.session_master m WHERE m.session_id = l.session_id)") == 0
    assert api.apply(db.conninfo, Config(), rescan=False).nothing_to_do   # the bridge stays, nothing to redo


def test_bridge_none_stops_before_the_source_fk_then_resumes_when_the_app_registers(db, tmp_path):
    build_demo_database(db.conninfo)
    args = ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--no-backup", "--bridge", "none",
            "--gate-window", "1", "--out", str(tmp_path)]
    with Writers(db.conninfo, existing_sessions(db)) as w:
        stopped = CliRunner().invoke(cli, args)
    assert stopped.exit_code == 3, stopped.output     # did not finish (not 1: finished with debt)
    lines = [ln for ln in stopped.stderr.splitlines() if ln.startswith("yumai-audit:")]
    assert len(lines) == 1
    assert lines[0].startswith("yumai-audit: stopped before the foreign key: ")
    assert "written to chatbot.conversations in the last" in lines[0] and "had no row in chatbot.session_master" in lines[0]
    assert "Deploy the registration" in lines[0] and "--bridge auto" in lines[0]
    assert "Traceback" not in stopped.output
    # nothing half-changed: no FK on the source (nor its partitions), no trigger; what was seen is registered
    assert db.scalar("SELECT count(*) FROM pg_constraint WHERE contype = 'f' "
                     "AND confrelid = 'chatbot.session_master'::regclass") == 0
    assert db.scalar("SELECT count(*) FROM pg_trigger WHERE tgname = %s", (TRIGGER,)) == 0
    stopped_rows = db.fetchall("SELECT outcome, rows FROM yumai_audit.journal WHERE step = %s", (f"gate:{SRC}",))
    assert len(stopped_rows) == 1 and stopped_rows[0][0] == "stopped" and stopped_rows[0][1] > 0
    assert f"{stopped_rows[0][1]} session" in lines[0]
    assert w.failures == []                        # no FK yet: the old way still worked
    # the application now registers first; the apply resumes at the gate and goes to the end
    with Writers(db.conninfo, existing_sessions(db), register_first=True) as w2:
        done = CliRunner().invoke(cli, args)
    # to the end (the demo's user findings are left undecided: migrated, with debt, exit 1)
    assert done.exit_code == 1 and "Verdict: Migrated. " in done.output, done.output
    assert w2.failures == [] and w2.writes["new"] > 10
    assert unregistered_source_sessions(db) == 0
    assert_every_fk_validated(db)
    outcomes = db.fetchall("SELECT outcome, rows FROM yumai_audit.journal WHERE step = %s ORDER BY id", (f"gate:{SRC}",))
    assert [o for o, _ in outcomes] == ["stopped", "done"] and outcomes[1][1] == 0
    assert db.scalar("SELECT to_regclass('yumai_audit.bridge_log')") is None   # no bridge was ever installed


def test_gate_raises_in_the_api_too(db):
    build_demo_database(db.conninfo)
    with Writers(db.conninfo, existing_sessions(db)):
        with pytest.raises(GateClosed) as caught:
            api.apply(db.conninfo, Config(), rescan=False, options=api.FixOptions(bridge="none", gate_window=0.5))
    assert caught.value.exit_code == 3


def test_killed_between_the_bridge_and_the_fk_then_resumed(db):
    build_demo_database(db.conninfo)
    killer = psycopg.connect(db.conninfo, autocommit=True)

    def hook(step, conn):
        if step.id.startswith("fk-add:"):    # the first FK after the bridge: its server process dies
            killer.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
            time.sleep(0.2)
            conn.execute("SELECT 1")

    try:
        with pytest.raises(Exception):
            api.apply(db.conninfo, Config(), rescan=False, step_hook=hook)
    finally:
        killer.close()
    assert db.scalar("SELECT count(*) FROM pg_trigger WHERE tgname = %s AND tgrelid = %s::regclass",
                     (TRIGGER, SRC)) == 1
    assert master_fks(db, "chatbot", "conversations") == []
    # the old way, with the bridge in and no FK yet: registered by the bridge
    new = str(uuid.uuid4())
    db.execute("INSERT INTO chatbot.conversations (session_id, user_id, role, message, created_at) "
               "VALUES (%s, 2, 'user', 'between', now())", (new,))
    assert db.fetchall("SELECT user_id FROM chatbot.session_master WHERE session_id = %s", (new,)) == [(2,)]
    result = api.apply(db.conninfo, Config(), rescan=False)
    assert result.ok and len(result.interrupted) == 1 and result.interrupted[0].startswith("fk-add:chatbot.conversations")
    assert next(o for o in result.outcomes if o.step == f"bridge:{SRC}").outcome == "skipped"
    assert_every_fk_validated(db)
    assert db.scalar("SELECT count(*) FROM yumai_audit.bridge_log WHERE session_id = %s", (new,)) == 1


# --- live: what the trigger does ----------------------------------------------------------------------

@pytest.fixture
def migrated(db):
    build_demo_database(db.conninfo)
    assert api.apply(db.conninfo, Config(), rescan=False).ok
    return db


def insert_message(db, sid, user=1, created="now()"):
    db.execute("INSERT INTO chatbot.conversations (session_id, user_id, role, message, created_at) "
               f"VALUES (%s, %s, 'user', 'x', {created})", (sid, user))


def test_a_row_naming_a_missing_user_goes_in_and_its_session_gets_no_user(migrated):
    db = migrated
    sid = str(uuid.uuid4())
    insert_message(db, sid, user=9999)
    assert db.fetchall("SELECT user_id FROM chatbot.conversations WHERE session_id = %s", (sid,)) == [(9999,)]
    row = db.fetchall("SELECT user_id, session_start = session_end, is_active FROM chatbot.session_master "
                      "WHERE session_id = %s", (sid,))
    assert row == [(None, True, True)]


def test_a_session_id_updated_in_place_registers_the_new_session(migrated):
    db = migrated
    old, new = str(uuid.uuid4()), str(uuid.uuid4())
    insert_message(db, old, user=3)
    db.execute("UPDATE chatbot.conversations SET session_id = %s WHERE session_id = %s", (new, old))
    assert db.fetchall("SELECT user_id FROM chatbot.session_master WHERE session_id = %s", (new,)) == [(3,)]
    assert db.scalar("SELECT count(*) FROM yumai_audit.bridge_log WHERE session_id IN (%s, %s)", (old, new)) == 2
    # an update that leaves the key alone, or names a registered session, registers nothing
    db.execute("UPDATE chatbot.conversations SET message = 'y', session_id = session_id WHERE session_id = %s", (new,))
    assert db.scalar("SELECT count(*) FROM yumai_audit.bridge_log") == 2


def test_the_default_partition_and_a_partition_created_after_the_apply(migrated):
    db = migrated
    if db.server.version_num < 130000:
        pytest.skip("PostgreSQL 12 bridges each partition: a new partition gets no trigger (planner test)")
    in_default, in_new = str(uuid.uuid4()), str(uuid.uuid4())
    insert_message(db, in_default, created="'2031-05-01'")
    assert db.scalar("SELECT tableoid::regclass::text FROM chatbot.conversations WHERE session_id = %s",
                     (in_default,)) == "chatbot.conversations_default"
    db.execute("CREATE TABLE chatbot.conversations_2027_01 PARTITION OF chatbot.conversations "
               "FOR VALUES FROM ('2027-01-01 00:00+00') TO ('2027-02-01 00:00+00')")
    insert_message(db, in_new, created="'2027-01-15'")
    assert db.scalar("SELECT tableoid::regclass::text FROM chatbot.conversations WHERE session_id = %s",
                     (in_new,)) == "chatbot.conversations_2027_01"
    assert db.scalar("SELECT count(*) FROM chatbot.session_master WHERE session_id IN (%s, %s)",
                     (in_default, in_new)) == 2
    # a made-up session in a table without the bridge is still refused
    with pytest.raises(pgerrors.ForeignKeyViolation):
        db.execute("INSERT INTO chatbot.user_interactions (session_id, interaction_type, created_at) "
                   "VALUES (%s, 'click', now())", (str(uuid.uuid4()),))


def test_bridge_status_counts_exactly_what_the_bridge_registered(migrated, tmp_path):
    db = migrated
    bridged = [str(uuid.uuid4()) for _ in range(7)]
    for sid in bridged:
        insert_message(db, sid)
    insert_message(db, bridged[0])                      # a second message: no second registration
    with db.connect() as conn:                          # the application's own registrations: not counted
        for _ in range(4):
            sid = start_session(conn, user_id=1)
            conn.execute("INSERT INTO chatbot.conversations (session_id, user_id, role, message, created_at) "
                         "VALUES (%s, 1, 'user', 'x', now())", (sid,))
        conn.commit()
    # spread over hours: 2 three hours ago, 1 more than a day ago (not counted)
    db.execute("UPDATE yumai_audit.bridge_log SET registered_at = date_trunc('hour', now()) - interval '3 hours' "
               "WHERE session_id = ANY(%s::uuid[])", (bridged[:2],))
    db.execute("UPDATE yumai_audit.bridge_log SET registered_at = now() - interval '25 hours' "
               "WHERE session_id = %s", (bridged[2],))
    status = api.bridge_status(db.conninfo)
    assert status.tables == [SRC]
    assert status.last_day == 6 and status.last_hour == 4
    assert [n for _h, n in status.hourly] == [2, 4]
    out = CliRunner().invoke(cli, ["bridge", "status", "--dsn", db.conninfo])
    assert out.exit_code == 0, out.output
    assert f"Bridge installed on {SRC}" in out.output
    assert "registered in the last 24 hours: 6 (last hour: 4)" in out.output
    # scan shows it: findings.json's stats, the summary and the report
    result = api.scan(db.conninfo, Config())
    assert result.stats["bridge"] == {"tables": [SRC], "registered_last_day": 6, "noun": "session", "label": "session id"}
    scan = CliRunner().invoke(cli, ["scan", "--dsn", db.conninfo, "--out", str(tmp_path)])
    line = f"Cutover bridge installed on {SRC}: 6 sessions registered by it in the last 24 hours"
    assert line in scan.output
    from yumai_audit.reports.render import render_html
    assert line in render_html(result)


def test_bridge_remove_refuses_while_it_registers_then_forced(migrated):
    db = migrated
    insert_message(db, str(uuid.uuid4()))
    refused = CliRunner().invoke(cli, ["bridge", "remove", "--dsn", db.conninfo])
    assert refused.exit_code == 1
    assert "registered 1 session in the last hour" in refused.stderr and "--force" in refused.stderr
    assert db.scalar("SELECT count(*) FROM pg_trigger WHERE tgname = %s", (TRIGGER,)) >= 1
    forced = CliRunner().invoke(cli, ["bridge", "remove", "--dsn", db.conninfo, "--force"])
    assert forced.exit_code == 0, forced.output
    assert f"Bridge removed from {SRC}" in forced.output
    assert db.scalar("SELECT count(*) FROM pg_trigger WHERE tgname = %s", (TRIGGER,)) == 0   # clones too
    assert db.scalar("SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                     "WHERE n.nspname = 'yumai_audit'") == 0
    with pytest.raises(pgerrors.ForeignKeyViolation):
        insert_message(db, str(uuid.uuid4()))
    assert api.bridge_status(db.conninfo).tables == []
    again = CliRunner().invoke(cli, ["bridge", "remove", "--dsn", db.conninfo])
    assert again.exit_code == 0 and "nothing removed" in again.output
    # a migrated database with the bridge removed: fix --apply does not put it back
    assert api.apply(db.conninfo, Config(), rescan=False).nothing_to_do


def test_bridge_remove_without_recent_registrations_needs_no_force(migrated):
    db = migrated
    insert_message(db, str(uuid.uuid4()))
    db.execute("UPDATE yumai_audit.bridge_log SET registered_at = now() - interval '2 hours'")
    assert api.bridge_remove(db.conninfo) == [SRC]


def test_bridge_all_registers_a_click_that_comes_before_the_first_message(db):
    build_demo_database(db.conninfo)
    result = api.apply(db.conninfo, Config(), rescan=False, options=api.FixOptions(bridge="all"))
    assert result.ok, result.problems
    assert_every_fk_validated(db)
    assert sorted(api.bridge_status(db.conninfo).tables) == sorted(f"chatbot.{t}" for t in KEY_TABLES)
    sid = str(uuid.uuid4())
    db.execute("INSERT INTO chatbot.user_interactions (session_id, user_id, interaction_type, created_at) "
               "VALUES (%s, 4, 'click', now())", (sid,))
    insert_message(db, sid, user=4)
    assert db.fetchall("SELECT user_id FROM chatbot.session_master WHERE session_id = %s", (sid,)) == [(4,)]
    assert db.fetchall("SELECT table_name FROM yumai_audit.bridge_log WHERE session_id = %s", (sid,)) == [
        ("chatbot.user_interactions",)]


def test_bridge_status_as_json_on_the_command_line(db):
    build_demo_database(db.conninfo)
    res = CliRunner().invoke(cli, ["bridge", "status", "--dsn", db.conninfo, "--format", "json"])
    assert res.exit_code == 0, res.output
    import json

    data = json.loads(res.stdout)
    assert data["installed"] is False and data["tables"] == []
    assert data["registered_last_day"] == 0 and data["registered_last_hour"] == 0


def _clicks_before_the_first_message(db, sessions: int) -> None:
    """The application as some are: a click logged a few seconds before the session's first message."""
    db.execute("UPDATE chatbot.user_interactions i SET created_at = f.first_at - interval '3 seconds' FROM "
               "(SELECT session_id, min(created_at) AS first_at FROM chatbot.conversations GROUP BY 1) f "
               "WHERE f.session_id = i.session_id AND i.session_id IN (SELECT DISTINCT session_id FROM "
               "chatbot.user_interactions WHERE session_id IS NOT NULL ORDER BY 1 LIMIT %s)", (sessions,))


@pytest.mark.parametrize("mode", ["auto", "source"])
def test_a_table_the_application_writes_before_the_first_message(db, mode):
    """The default bridge (auto) reads the data: sessions whose click came before their first message
    say the application writes user_interactions first, so that table gets the bridge too and such a
    write keeps working after its FK; --bridge source keeps the source table's bridge only, and the plan
    says which writes will fail."""
    build_demo_database(db.conninfo)
    _clicks_before_the_first_message(db, 3)
    options = {} if mode == "auto" else {"bridge": "source"}
    plan = api.plan(db.conninfo, Config(), options=api.FixOptions(**options))
    bridged = sorted(s.target for s in plan.steps if s.id.startswith("bridge:"))
    early = [n for n in plan.notes if "earlier than their first message" in n]
    assert len(early) == 1 and early[0].startswith(f"--bridge {mode}: 3 session(s) have a row in "
                                                   "chatbot.user_interactions earlier than their first message")
    result = api.apply(db.conninfo, Config(), rescan=False, options=api.FixOptions(**options))
    assert result.ok, result.problems
    assert_every_fk_validated(db)
    sid = str(uuid.uuid4())
    click = ("INSERT INTO chatbot.user_interactions (session_id, user_id, interaction_type, created_at) "
             "VALUES (%s, 4, 'click', now())")
    if mode == "source":
        assert bridged == [SRC]
        with pytest.raises(pgerrors.ForeignKeyViolation):
            db.execute(click, (sid,))
        return
    assert bridged == [SRC, "chatbot.user_interactions"]
    db.execute(click, (sid,))
    insert_message(db, sid, user=4)
    assert db.fetchall("SELECT table_name FROM yumai_audit.bridge_log WHERE session_id = %s", (sid,)) == [
        ("chatbot.user_interactions",)]


def test_the_default_bridge_stays_on_the_source_when_no_table_is_written_first(db):
    build_demo_database(db.conninfo)
    plan = api.plan(db.conninfo, Config())
    assert plan.options.bridge == "auto"
    assert sorted(s.target for s in plan.steps if s.id.startswith("bridge:")) == [SRC]
    assert not [n for n in plan.notes if "earlier than their first message" in n]

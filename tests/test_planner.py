"""The planner without a database: ordering, cycles, server differences, the rendered SQL script."""
from __future__ import annotations

import pytest
from psycopg import sql

from yumai_audit.catalog import Catalog, Column, ForeignKey, Index, Partition, QualifiedName, Table
from yumai_audit.config import Config
from yumai_audit.context import build_context
from yumai_audit.engine.sqlscript import render_script
from yumai_audit.engine.steps import Kind, LockMode, Step
from yumai_audit.fix.planner import FixOptions, PlanError, build_plan, order_steps, short_name
from yumai_audit.operations import Operation

UUID = Column("session_id", "uuid", "uuid", False)
TEXT = Column("session_id", "character varying(64)", "varchar", False)


def _table(oid, schema, name, key=UUID, partitions=(), kind="r", extra=()):
    cols = {"id": Column("id", "bigint", "int8", True), key.name: key, "user_id": Column("user_id", "integer", "int4", False),
            "created_at": Column("created_at", "timestamp with time zone", "timestamptz", True)}
    for c in extra:
        cols[c.name] = c
    return Table(oid=oid, name=QualifiedName(schema, name), kind=kind, columns=cols, primary_key=("id",),
                 estimated_rows=10, bytes=8192 * oid, partitions=list(partitions))


def catalog(version: int, schema="chatbot", master=False) -> Catalog:
    parts = [Partition(QualifiedName(schema, f"conversations_{n}"), bound, True, 1, 8192, 5)
             for n, bound in (("2026_09", "FOR VALUES FROM (x) TO (y)"), ("default", "DEFAULT"))]
    tables = [
        Table(oid=1, name=QualifiedName(schema, "users"), kind="r", primary_key=("id",), estimated_rows=1, bytes=1,
              columns={"id": Column("id", "integer", "int4", True)}),
        _table(2, schema, "conversations", kind="p", partitions=parts),
        _table(3, schema, "user_interactions"),
        _table(4, schema, "recommendations_log", key=TEXT),
    ]
    tables[2].indexes.append(Index("ui_idx", tables[2].name, ("session_id",), True, False, False))
    if master:
        tables.append(Table(oid=5, name=QualifiedName(schema, "session_master"), kind="r", primary_key=("session_id",),
                            estimated_rows=1, bytes=1, columns={"session_id": UUID}))
    return Catalog("yumai", "x", version, {t.name: t for t in tables})


def plan_for(version=150000, options=None, **kw):
    return build_plan(build_context(catalog(version, **kw), Config()), options or FixOptions())


def ids(plan):
    return [s.id for s in plan.steps]


def before(plan, a, b):
    order = ids(plan)
    return order.index(a) < order.index(b)


def test_lock_modes_are_ordered_as_postgresql_documents_them():
    assert LockMode.ACCESS_SHARE < LockMode.ROW_EXCLUSIVE < LockMode.SHARE_UPDATE_EXCLUSIVE < LockMode.SHARE
    assert LockMode.SHARE_ROW_EXCLUSIVE < LockMode.EXCLUSIVE < LockMode.ACCESS_EXCLUSIVE
    assert LockMode.SHARE_ROW_EXCLUSIVE.label == "SHARE ROW EXCLUSIVE"
    assert LockMode.from_pg_locks("ShareUpdateExclusiveLock") is LockMode.SHARE_UPDATE_EXCLUSIVE
    assert [m.blocks_writers for m in (LockMode.SHARE_UPDATE_EXCLUSIVE, LockMode.SHARE)] == [False, True]


def test_steps_are_ordered_by_their_dependencies():
    plan = plan_for()
    assert ids(plan)[:2] == ["preflight", "master"]
    assert ids(plan)[-1] == "verify"
    assert before(plan, "malformed:chatbot.recommendations_log", "to-uuid:chatbot.recommendations_log")
    assert before(plan, "to-uuid:chatbot.recommendations_log", "index:chatbot.recommendations_log")
    walk = "backfill:chatbot.conversations_2026_09+1"     # both partitions small: one walk over the two
    for part in ("conversations_2026_09", "conversations_default"):
        assert before(plan, f"index:chatbot.{part}", f"attach-index:chatbot.{part}")
        assert before(plan, f"attach-index:chatbot.{part}", walk)
    assert before(plan, "master", walk)
    assert before(plan, walk, "backfill:chatbot.session_master")       # then the walk over their candidates
    assert before(plan, "backfill:chatbot.session_master", "orphans:chatbot.user_interactions")
    for t in ("user_interactions", "recommendations_log"):
        assert before(plan, f"orphans:chatbot.{t}", f"fk-add:chatbot.{t}")
        assert before(plan, f"fk-add:chatbot.{t}", f"settle:chatbot.{t}")
        assert before(plan, f"settle:chatbot.{t}", f"fk-validate:chatbot.{t}")
        assert f"catchup:chatbot.{t}" not in ids(plan)      # its settle does what it did (issue 24)
        # the source table's FK comes first: later catch-ups can trust every message to be registered
        assert before(plan, "fk-add:chatbot.conversations", f"orphans:chatbot.{t}")
    # the existing index on user_interactions is reused
    assert "index:chatbot.user_interactions" not in ids(plan)
    assert "orphans:chatbot.conversations" not in ids(plan)


def _wide_catalog(version: int) -> Catalog:
    """The demo's tables, the master, and the other paths of a key table's foreign key: `events` partitioned
    (2 partitions: a NOT VALID key each before PostgreSQL 18), `ticks` of 20 small partitions (before 18: their keys
    added validated, in groups, after the settle), `clicks` with its NOT VALID key to the master already."""
    base = catalog(version, master=True)
    master = QualifiedName("chatbot", "session_master")

    def parts(name: str, n: int) -> list[Partition]:
        return [Partition(QualifiedName("chatbot", f"{name}_{i}"), f"FOR VALUES IN ({i})", True, 1, 8192, 5)
                for i in range(n)]

    events = _table(6, "chatbot", "events", kind="p", partitions=parts("events", 2))
    ticks = _table(7, "chatbot", "ticks", kind="p", partitions=parts("ticks", 20))
    clicks = _table(8, "chatbot", "clicks")
    clicks.foreign_keys.append(ForeignKey("clicks_session_id_fkey", clicks.name, ("session_id",), master,
                                          ("session_id",), False, "c", False))
    tables = {**base.tables, events.name: events, ticks.name: ticks, clicks.name: clicks}
    return Catalog("yumai", "x", version, tables)


def _ancestors(plan, step_id: str) -> set[str]:
    by_id = {s.id: s for s in plan.steps}
    out: set[str] = set()
    todo = list(by_id[step_id].depends_on)
    while todo:
        d = todo.pop()
        if d not in out:
            out.add(d)
            todo += by_id[d].depends_on
    return out


def _texts(step) -> list[str]:
    return [s.as_string(None) for s in step.statements]


@pytest.mark.parametrize("version", [150000, 180000])
@pytest.mark.parametrize("bridge", ["auto", "all", "none"])
@pytest.mark.parametrize("orphans", ["quarantine", "register", "delete"])
def test_only_the_source_has_a_catch_up_before_its_key_another_table_has_its_settle(version, bridge, orphans):
    """Issue 24: another key table's catch-up before its key did nothing its settle, later, does not do again. The
    settle runs the orphans' statements in the plan's mode (after the registration from the source), after every
    NOT VALID key of the table and the orphans step, before its VALIDATE steps (and the validated keys of small
    partitions); the source keeps its catch-up before its key."""
    options = FixOptions(bridge=bridge, orphans=orphans, yes_delete=orphans == "delete")
    plan = build_plan(build_context(_wide_catalog(version), Config()), options)
    order = ids(plan)
    assert [i for i in order if i.startswith("catchup:")] == ["catchup:chatbot.conversations"]
    source_keys = [s.id for s in plan.steps if s.target == "chatbot.conversations"
                   and s.operation in (Operation.FK_ADD, Operation.FK_VALIDATE)]
    adds = [i for i in source_keys if i.startswith("fk-add:")]
    assert adds and all("catchup:chatbot.conversations" in _ancestors(plan, i) for i in adds)
    for t in ("user_interactions", "recommendations_log", "events", "ticks", "clicks"):
        name = f"chatbot.{t}"
        settle = plan.step(f"settle:{name}")
        # what the catch-up before the key ran: the registration from the source, the walks' tables dropped, the orphans
        assert _texts(settle)[:2] == _texts(plan.step("catchup:chatbot.conversations"))
        assert _texts(settle)[2:] == _texts(plan.step(f"orphans:{name}"))
        assert set(settle.changes) == {*plan.step(f"orphans:{name}").changes, "chatbot.session_master", name}
        upstream = _ancestors(plan, settle.id)
        assert f"orphans:{name}" in upstream and set(source_keys) <= upstream      # after the source's key
        keys = [s for s in plan.steps if s.target == name and s.operation in (Operation.FK_ADD, Operation.FK_VALIDATE)]
        not_valid = [s.id for s in keys if s.operation is Operation.FK_ADD and "NOT VALID" in s.sql_text()]
        assert set(not_valid) <= upstream and (not_valid or t == "ticks" and version < 180000)
        later = [s.id for s in keys if s.id not in not_valid]
        assert later and all(settle.id in _ancestors(plan, i) for i in later)
        if bridge == "none" and t != "clicks":      # the gate, right before the key (none once the key exists)
            assert f"gate:{name}" in upstream
    assert "fk-add:chatbot.clicks" in order       # the existing NOT VALID key: its step's guard skips it


def test_partitioned_foreign_keys_follow_the_server_version():
    old = plan_for(150000)
    for part in ("conversations_2026_09", "conversations_default"):
        assert before(old, f"fk-add:chatbot.{part}", f"fk-validate:chatbot.{part}")
        assert before(old, f"fk-validate:chatbot.{part}", "fk-add:chatbot.conversations")
    parent = old.step("fk-add:chatbot.conversations")
    assert "NOT VALID" not in parent.sql_text()
    assert "fk-validate:chatbot.conversations" not in ids(old)

    new = plan_for(180000)
    assert "fk-add:chatbot.conversations_default" not in ids(new)
    assert "NOT VALID" in new.step("fk-add:chatbot.conversations").sql_text()
    assert before(new, "fk-add:chatbot.conversations", "fk-validate:chatbot.conversations")


def test_declared_locks_and_flags():
    plan = plan_for()
    convert = plan.step("to-uuid:chatbot.recommendations_log")
    assert convert.lock is LockMode.ACCESS_EXCLUSIVE and convert.rewrites
    assert dict(convert.table_bytes) == {"chatbot.recommendations_log": 8192 * 4}
    cic = plan.step("index:chatbot.conversations_default")
    assert not cic.transactional and cic.lock is LockMode.SHARE_UPDATE_EXCLUSIVE
    assert plan.step("fk-add:chatbot.user_interactions").lock is LockMode.SHARE_ROW_EXCLUSIVE
    assert plan.step("fk-validate:chatbot.user_interactions").lock is LockMode.SHARE_UPDATE_EXCLUSIVE
    # small partitions: one statement together; the walk over their candidates into the master: batches
    walk = "backfill:chatbot.conversations_2026_09+1"
    assert plan.step(walk).kind is Kind.CHANGE and plan.step(walk).lock is LockMode.ACCESS_SHARE
    assert plan.step("backfill:chatbot.session_master").kind is Kind.BATCHED
    # nothing but the table rewrite and the brief FK/index-parent statements may block writers
    blocking = {s.id.split(":")[0] for s in plan.steps if s.lock.blocks_writers}
    # the master is created without its user FK (no lock on users), added after the backfill (brief)
    assert blocking == {"to-uuid", "index", "bridge", "fk-add", "user-fk-add"}
    # in lock order: the referenced users first, the application's order (foreign_key.lock_first)
    assert plan.step("user-fk-add:chatbot.session_master").tables == ("chatbot.users", "chatbot.session_master")
    assert plan.step("fk-add:chatbot.conversations").lock is LockMode.ACCESS_EXCLUSIVE
    assert plan.step("fk-add:chatbot.conversations").tables == ("chatbot.session_master",)


def test_plan_to_dict_follows_the_shared_contract():
    d = plan_for().to_dict()
    assert d["server_version_num"] == 150000 and d["options"]["orphans"] == "quarantine"
    step = next(s for s in d["steps"] if s["id"] == "to-uuid:chatbot.recommendations_log")
    assert step["lock"] == "ACCESS EXCLUSIVE" and step["rewrites"] is True and step["transactional"] is True
    assert step["tables"] == ["chatbot.recommendations_log"] and step["done"] is False
    assert 'ALTER TABLE "chatbot"."recommendations_log" ALTER COLUMN "session_id" TYPE uuid' in step["sql"]
    assert set(step) >= {"id", "description", "lock", "tables", "table_bytes", "rewrites", "transactional",
                         "depends_on", "sql", "done"}


def test_a_cycle_is_an_error_naming_the_steps():
    a = Step("a", "", (sql.SQL("SELECT 1"),), LockMode.NONE, (), operation=Operation.VERIFY, depends_on=("c",))
    b = Step("b", "", (sql.SQL("SELECT 1"),), LockMode.NONE, (), operation=Operation.VERIFY, depends_on=("a",))
    c = Step("c", "", (sql.SQL("SELECT 1"),), LockMode.NONE, (), operation=Operation.VERIFY, depends_on=("b",))
    with pytest.raises(PlanError) as err:
        order_steps([a, b, c])
    assert "cycle" in str(err.value)
    for name in ("a", "b", "c"):
        assert name in str(err.value).split(": ", 1)[1].split(" -> ")
    with pytest.raises(PlanError, match="unknown step z"):
        order_steps([Step("x", "", (), LockMode.NONE, (), operation=Operation.VERIFY, depends_on=("z",))])


def test_options_are_checked():
    with pytest.raises(PlanError, match="--yes-delete"):
        FixOptions(orphans="delete")
    with pytest.raises(PlanError):
        FixOptions(orphans="shred")
    assert FixOptions(orphans="delete", yes_delete=True).orphans == "delete"


def test_orphan_modes_change_the_orphan_statements():
    quarantine = plan_for().step("orphans:chatbot.user_interactions").sql_text()
    assert 'INSERT INTO "yumai_quarantine"."chatbot__user_interactions"' in quarantine
    assert "DELETE FROM" in quarantine
    register = plan_for(options=FixOptions(orphans="register")).step("orphans:chatbot.user_interactions")
    assert "DELETE" not in register.sql_text() and 'INSERT INTO "chatbot"."session_master"' in register.sql_text()
    delete = plan_for(options=FixOptions(orphans="delete", yes_delete=True)).step("orphans:chatbot.user_interactions")
    assert delete.sql_text().startswith('DELETE FROM "chatbot"."user_interactions"')
    assert "yumai_quarantine" not in delete.sql_text()


def test_rendered_script_annotates_every_statement_with_its_lock():
    plan = plan_for(schema="App Data")
    script = render_script(plan)
    blocks = script.split("\n\n")[1:]
    assert len(blocks) == len(plan.steps)
    for block, step in zip(blocks, plan.steps):
        assert f"-- lock: {step.lock.label}" in block
        if step.kind is Kind.CHECK:
            assert "BEGIN;" not in block
        elif step.transactional:
            assert "BEGIN;" in block and block.rstrip().endswith("COMMIT;")
        else:
            assert "BEGIN;" not in block and "CONCURRENTLY" in block
        assert ("SET LOCAL lock_timeout = '2000ms';" in block) == (step.transactional and step.kind is not Kind.CHECK)
    assert 'CREATE INDEX CONCURRENTLY "conversations_default_session_id_idx" ON "App Data"."conversations_default"' in script
    assert "REWRITES the table under ACCESS EXCLUSIVE (App Data.recommendations_log 32768 bytes)" in script
    assert "gen_random_uuid()" in script and "uuid_generate_v4" not in script


def test_master_is_created_only_if_missing_and_long_names_are_cut():
    plan = plan_for(master=True)
    assert "CREATE TABLE IF NOT EXISTS" in plan.step("master").sql_text()
    assert "IS NOT NULL" in plan.step("master").guard.as_string(None)
    name = short_name("x" * 70, "session_id", suffix="fkey")
    assert len(name) <= 63 and name.endswith("_fkey")
    assert name != short_name("x" * 69 + "y", "session_id", suffix="fkey")


def test_the_plan_says_what_the_cutover_changes_for_the_applications_statements():
    """Two of the application's writes that change meaning at the cutover are said in the plan: a text key
    becoming uuid (typed text parameters then fail), and the master's reference to users (deleting a user)."""
    plan = plan_for()
    typed = [n for n in plan.notes if "typed text parameter" in n]
    assert len(typed) == 1 and typed[0].startswith("chatbot.recommendations_log.session_id becomes uuid")
    # set-null: the reference is added after the backfill (fix/ops/master.py: user_fk_steps)
    assert "REFERENCES" not in plan.step("master").sql_text()
    assert "REFERENCES \"chatbot\".\"users\" (\"id\") ON DELETE SET NULL NOT VALID" in plan.step(
        "user-fk-add:chatbot.session_master").sql_text()
    assert any("--master-user-delete set-null" in n for n in plan.notes)
    guide = plan_for(options=FixOptions(master_user_delete="no-action"))
    assert "ON DELETE" not in guide.step("master").sql_text() and "REFERENCES" in guide.step("master").sql_text()
    assert "user-fk-add:chatbot.session_master" not in [s.id for s in guide.steps]
    assert any("fails from then on" in n for n in guide.notes)
    with pytest.raises(PlanError, match="--master-user-delete must be one of set-null, no-action"):
        FixOptions(master_user_delete="cascade")

"""`fix --include schema` (auditor/fix/schema_plan.py). Without a database: the option, the FK
definitions it writes, nothing planned without the option or without evidence. On real PostgreSQL:
confirmed implied FKs get an index and a validated FK, a partition lacking its siblings' FK gets it
and the parent declares it, a second apply changes nothing, an interrupted run resumes, declared
locks hold."""
from __future__ import annotations

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import errors as pgerrors

from yumai_audit import api
from yumai_audit.catalog import Catalog, Column, QualifiedName, Table
from yumai_audit.cli import cli
from yumai_audit.config import Config
from yumai_audit.context import build_context
from yumai_audit.engine.executor import StepFailed
from yumai_audit.engine.steps import LockMode
from yumai_audit.fix.planner import PG_NOT_VALID_ON_PARTITIONED, FixOptions, FkSpec, PlanError, build_plan
from yumai_audit.fix.schema_plan import probes

INT = Column("id", "integer", "int4", True)


def shop_catalog(version=150000, with_session=True) -> Catalog:
    """shop.customers(id) and shop.orders(customer_id bigint): an implied FK; optionally a session table."""
    qn = QualifiedName
    tables = [
        Table(1, qn("shop", "customers"), "r", {"id": INT}, ("id",), 5, 8192),
        Table(2, qn("shop", "orders"), "r", {"id": INT, "customer_id": Column("customer_id", "bigint", "int8", False)},
              ("id",), 5, 8192),
    ]
    if with_session:
        tables.append(Table(3, qn("chatbot", "user_feedback"), "r",
                            {"id": INT, "session_id": Column("session_id", "uuid", "uuid", False)}, ("id",), 5, 8192))
    return Catalog("db", "x", version, {t.name: t for t in tables})


def test_the_option_is_off_by_default_and_needs_evidence():
    ctx = build_context(shop_catalog(), Config())
    (probe,) = probes(ctx)
    evidence = {probe.key: [(3, 0, None, True)]}           # 3 distinct values, none missing
    off = build_plan(ctx, FixOptions(), evidence)
    assert off.steps and not [s.id for s in off.steps if "shop" in s.id or any("shop" in t for t in s.tables)]
    on = build_plan(ctx, FixOptions(include="schema"), evidence)
    assert [s.id for s in on.steps if "shop" in s.id] == [
        "index:shop.orders.customer_id", "fk-add:shop.orders.customer_id", "fk-validate:shop.orders.customer_id"]
    # after the session migration (its verify and last FK first), checked by its own final step
    ids = [s.id for s in on.steps]
    assert ids.index("fk-add:shop.orders.customer_id") > ids.index("fk-validate:chatbot.user_feedback")
    assert ids[-1] == "verify-schema"
    # no measurement (the probe failed): nothing planned; a missing value: nothing planned, noted
    assert [s.id for s in build_plan(ctx, FixOptions(include="schema"), {}).steps if "shop" in s.id] == []
    noted = build_plan(ctx, FixOptions(include="schema"), {probe.key: [(200, 1, ["77"], True)]})
    assert [s.id for s in noted.steps if "shop" in s.id] == []
    assert any("1 of 200 distinct values are not in shop.customers (e.g. 77)" in n for n in noted.notes)
    # no session table: the schema steps alone, behind a preflight without the master's checks
    alone = build_plan(build_context(shop_catalog(with_session=False), Config()), FixOptions(include="schema"), evidence)
    assert [s.id for s in alone.steps] == ["preflight", "index:shop.orders.customer_id",
                                           "fk-add:shop.orders.customer_id", "fk-validate:shop.orders.customer_id",
                                           "verify-schema"]
    assert "gen_random_uuid" not in alone.steps[0].sql_text() and "shop" in alone.steps[0].sql_text()
    with pytest.raises(PlanError, match="nothing to migrate"):
        build_plan(build_context(shop_catalog(with_session=False), Config()), FixOptions(), evidence)


def test_include_values_are_checked():
    assert FixOptions(include="schema, schema").include == ("schema",)
    assert FixOptions(include=("schema",)).to_dict()["include"] == ("schema",)
    with pytest.raises(PlanError, match="--include must be one of schema"):
        FixOptions(include="data")


def test_fk_definitions_are_spelled_from_the_catalog_letters():
    spec = FkSpec(("a", "B"), QualifiedName("s", "P"), ("x", "y"), on_delete="n", on_update="c", match="f",
                  deferrable=True, deferred=True)
    assert spec.definition(not_valid=True).as_string(None) == (
        'FOREIGN KEY ("a", "B") REFERENCES "s"."P" ("x", "y") MATCH FULL ON DELETE SET NULL ON UPDATE CASCADE '
        'DEFERRABLE INITIALLY DEFERRED NOT VALID')
    assert FkSpec(("a",), QualifiedName("s", "p"), ("id",)).definition(not_valid=False).as_string(None) == (
        'FOREIGN KEY ("a") REFERENCES "s"."p" ("id")')
    with pytest.raises(PlanError):
        FkSpec(("a",), QualifiedName("s", "p"), ("id",), on_delete="?")

# orders.customer_id: implied, all values present (bigint -> int); reviews.product_id: implied at
# 200 of 201 values (99.5%): confirmed, but one value blocks it; events: partitioned, its FK to
# customers (ON DELETE CASCADE DEFERRABLE) on every partition but the newest and not on the parent
# (one of them NOT VALID), and
# an implied product_id. Every value that should be present is.
SHOP = """
CREATE SCHEMA shop;
CREATE TABLE shop.customers (id int PRIMARY KEY, name text);
INSERT INTO shop.customers SELECT g, 'c' || g FROM generate_series(1, 5) g;
CREATE TABLE shop.products (id int PRIMARY KEY);
INSERT INTO shop.products SELECT generate_series(1, 200);
CREATE TABLE shop.orders (id bigint PRIMARY KEY, customer_id bigint, total int);
INSERT INTO shop.orders VALUES (1, 1, 10), (2, 2, 20), (3, 2, 30), (4, NULL, 40);
CREATE TABLE shop.reviews (id int PRIMARY KEY, product_id int);
INSERT INTO shop.reviews SELECT g, g FROM generate_series(1, 201) g;
CREATE TABLE shop.events (id bigint NOT NULL, customer_id int, product_id int, created date NOT NULL)
    PARTITION BY RANGE (created);
CREATE TABLE shop.events_2026_01 PARTITION OF shop.events FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
CREATE TABLE shop.events_2026_02 PARTITION OF shop.events FOR VALUES FROM ('2026-02-01') TO ('2026-03-01');
CREATE TABLE shop.events_default PARTITION OF shop.events DEFAULT;
INSERT INTO shop.events VALUES (1, 1, 1, '2026-01-05'), (2, 2, 7, '2026-02-03'), (3, NULL, 9, '2025-12-15');
ALTER TABLE shop.events_2026_01 ADD CONSTRAINT events_customer_fk FOREIGN KEY (customer_id) REFERENCES shop.customers (id)
    ON DELETE CASCADE DEFERRABLE;
ALTER TABLE shop.events_2026_02 ADD CONSTRAINT events_customer_fk FOREIGN KEY (customer_id) REFERENCES shop.customers (id)
    ON DELETE CASCADE DEFERRABLE NOT VALID;
ALTER TABLE shop.events_default ADD CONSTRAINT events_customer_fk FOREIGN KEY (customer_id) REFERENCES shop.customers (id)
    ON DELETE CASCADE DEFERRABLE;
CREATE TABLE shop.events_2026_03 PARTITION OF shop.events FOR VALUES FROM ('2026-03-01') TO ('2026-04-01');
INSERT INTO shop.events VALUES (4, 3, 2, '2026-03-02'), (5, 5, 200, '2026-03-03');
"""

FKS = """
SELECT c.relname, k.conname, k.convalidated, k.confdeltype::text, f.relname, k.conparentid <> 0
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class f ON f.oid = k.confrelid
WHERE k.contype = 'f' AND c.relnamespace = 'shop'::regnamespace ORDER BY 1, 2
"""
INDEXES = """
SELECT c.relname, ic.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE c.relnamespace = 'shop'::regnamespace AND NOT i.indisprimary ORDER BY 1, 2
"""
HELD = """
SELECT n.nspname || '.' || c.relname, l.mode
FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE l.pid = %s AND l.granted AND l.locktype = 'relation' AND c.relkind IN ('r', 'p') AND n.nspname = 'shop'
"""
PARTS = ("events_2026_01", "events_2026_02", "events_2026_03", "events_default")


def expected_fks(version):
    out = []
    # the drift repaired: the parent's FK plus one per partition (the old ones attached, the new one added
    # with the siblings' definition: CASCADE, DEFERRABLE; anything else would be a second constraint)
    out.append(("events", "events_customer_id_fkey", True, "c", "customers", False))
    for p in PARTS:
        out.append((p, "events_customer_fk", True, "c", "customers", True))
    # the implied events.product_id: on PG18 added on the parent, inherited by the partitions; on 12-17
    # added per partition and attached by the parent's
    out.append(("events", "events_product_id_fkey", True, "a", "products", False))
    for p in PARTS:
        out.append((p, "events_product_id_fkey", True, "a", "products", True))
    out.append(("orders", "orders_customer_id_fkey", True, "a", "customers", False))
    return sorted(out)


def test_include_schema_adds_implied_and_drifting_fks_online(db, tmp_path):
    db.execute(SHOP)
    version = db.server.version_num

    # without --include schema: nothing of this is planned (and with no session table, nothing at all)
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo])
    assert res.exit_code == 2 and "nothing to migrate" in res.output

    plan = api.plan(db.conninfo, Config(), options=api.FixOptions(include="schema"))
    ids = [s.id for s in plan.steps]
    if version >= PG_NOT_VALID_ON_PARTITIONED:
        product_fk = ["fk-add:shop.events.product_id", "fk-validate:shop.events.product_id"]
    else:
        product_fk = ([f"fk-add:shop.{p}.product_id" for p in PARTS] + [f"fk-validate:shop.{p}.product_id" for p in PARTS]
                      + ["fk-add:shop.events.product_id"])
    assert sorted(ids) == sorted([
        "preflight", "verify-schema",
        "index:shop.orders.customer_id", "fk-add:shop.orders.customer_id", "fk-validate:shop.orders.customer_id",
        "index:shop.events.product_id", *[f"index:shop.{p}.product_id" for p in PARTS],
        *[f"attach-index:shop.{p}.product_id" for p in PARTS], *product_fk,
        "fk-add:shop.events_2026_03.customer_id", "fk-validate:shop.events_2026_03.customer_id",
        "fk-validate:shop.events_2026_02.customer_id", "fk-add:shop.events.customer_id"])
    order = {i: n for n, i in enumerate(ids)}
    assert order["index:shop.orders.customer_id"] < order["fk-add:shop.orders.customer_id"] \
        < order["fk-validate:shop.orders.customer_id"]
    assert max(order["fk-validate:shop.events_2026_03.customer_id"], order["fk-validate:shop.events_2026_02.customer_id"]) \
        < order["fk-add:shop.events.customer_id"]
    step = plan.step("fk-add:shop.orders.customer_id")
    assert "NOT VALID" in step.sql_text() and "CASCADE" not in step.sql_text() and step.lock is LockMode.SHARE_ROW_EXCLUSIVE
    assert not plan.step("index:shop.orders.customer_id").transactional
    assert "CONCURRENTLY" in plan.step("index:shop.orders.customer_id").sql_text()
    # the 99.5% column: confirmed, but one value is missing: no step, a note naming it
    assert not any("reviews" in i for i in ids)
    assert any("shop.reviews.product_id -> shop.products.id: 1 of 201" in n and "201" in n.split("e.g.")[1]
               for n in plan.notes), plan.notes

    # apply through the CLI, watching each transactional step's locks from another session
    seen = {}
    watcher = psycopg.connect(db.conninfo, autocommit=True)

    def hook(step, conn):
        if step.transactional:
            held = {}
            for table, mode in watcher.execute(HELD, (conn.info.backend_pid,)).fetchall():
                held[table] = max(held.get(table, LockMode.NONE), LockMode.from_pg_locks(mode))
            seen[step.id] = (max((held.get(t, LockMode.NONE) for t in step.tables), default=LockMode.NONE),
                             max(held.values(), default=LockMode.NONE))

    try:
        result = api.apply(db.conninfo, Config(), rescan=False, step_hook=hook, options=api.FixOptions(include="schema"))
    finally:
        watcher.close()
    assert result.ok and result.problems == [], result.problems
    assert sorted(result.changed) == sorted(i for i in ids if i != "preflight")  # verify-schema: "done" = passed
    assert len(seen) >= 6
    for sid, (on_declared, strongest) in seen.items():
        step = plan.step(sid)
        assert on_declared == step.lock and strongest <= step.lock, (sid, on_declared, strongest, step.lock)

    assert db.fetchall(FKS) == expected_fks(version)
    assert db.scalar("SELECT condeferrable FROM pg_constraint WHERE conrelid = 'shop.events_2026_03'::regclass "
                     "AND conname = 'events_customer_fk'") is True
    indexes = db.fetchall(INDEXES)
    assert ("orders", "orders_customer_id_idx", True) in indexes
    assert ("events", "events_product_id_idx", True) in indexes
    assert sum(1 for t, name, valid in indexes if name.endswith("_product_id_idx") and valid and t in PARTS) == 4
    assert not any(t == "reviews" for t, *_ in indexes)
    assert db.scalar("SELECT count(*) FROM pg_constraint WHERE conrelid = 'shop.reviews'::regclass AND contype = 'f'") == 0

    # made-up values are refused now, NO ACTION keeps parents with children
    for stmt in ("INSERT INTO shop.orders VALUES (9, 999, 1)",
                 "INSERT INTO shop.events VALUES (9, 999, 1, '2026-03-05')",
                 "INSERT INTO shop.events VALUES (9, 1, 999, '2026-01-05')",
                 "DELETE FROM shop.customers WHERE id = 1"):
        with pytest.raises(pgerrors.ForeignKeyViolation):
            db.execute(stmt)

    # a second apply changes nothing; the CLI says so
    state = (db.fetchall(FKS), db.fetchall(INDEXES))
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--include", "schema", "--apply", "--yes"])
    assert res.exit_code == 0, res.output
    assert "Nothing to do" in res.output
    assert (db.fetchall(FKS), db.fetchall(INDEXES)) == state


def test_an_interrupted_run_resumes_with_validate(db):
    """Killed between NOT VALID and VALIDATE: the FK is no longer implied, but NOT VALID and clean, so
    the next run plans its VALIDATE; a NOT VALID FK with violating rows is left as it is, noted."""
    db.execute("""
        CREATE SCHEMA shop;
        CREATE TABLE shop.customers (id int PRIMARY KEY);
        INSERT INTO shop.customers VALUES (1), (2);
        CREATE TABLE shop.orders (id int PRIMARY KEY, customer_id int);
        INSERT INTO shop.orders VALUES (1, 1), (2, 2);
        CREATE INDEX ON shop.orders (customer_id);
        CREATE TABLE shop.invoices (id int PRIMARY KEY, client int);
        INSERT INTO shop.invoices VALUES (1, 1), (2, 3);
        ALTER TABLE shop.invoices ADD CONSTRAINT invoices_client_fkey FOREIGN KEY (client)
            REFERENCES shop.customers (id) NOT VALID;
    """)

    def kill(step, conn):
        if step.id.startswith("fk-validate:"):
            raise psycopg.OperationalError("terminated by the test")

    with pytest.raises(StepFailed):
        api.apply(db.conninfo, Config(), rescan=False, step_hook=kill, options=api.FixOptions(include="schema"))
    assert db.fetchall(FKS) == [("invoices", "invoices_client_fkey", False, "a", "customers", False),
                                ("orders", "orders_customer_id_fkey", False, "a", "customers", False)]
    plan = api.plan(db.conninfo, Config(), options=api.FixOptions(include="schema"))
    assert [s.id for s in plan.steps] == ["preflight", "fk-validate:shop.orders:orders_customer_id_fkey",
                                          "verify-schema"]
    assert any("invoices_client_fkey: 1 rows name 1 keys missing" in n and "left NOT VALID" in n for n in plan.notes)
    result = api.apply(db.conninfo, Config(), rescan=False, options=api.FixOptions(include="schema"))
    assert result.ok and result.changed == ["fk-validate:shop.orders:orders_customer_id_fkey", "verify-schema"]
    assert db.fetchall(FKS)[1] == ("orders", "orders_customer_id_fkey", True, "a", "customers", False)


def test_include_is_checked(db):
    db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--include", "everything"])
    assert res.exit_code == 2 and "--include must be one of schema" in res.output
    assert "Traceback" not in res.output


def test_fks_on_every_partition_but_not_the_parent_are_attached_by_the_parent(db):
    """The state a PostgreSQL 12-17 run leaves when cut off before the parent's FK: only that is planned."""
    db.execute("""
        CREATE SCHEMA shop;
        CREATE TABLE shop.customers (id int PRIMARY KEY);
        INSERT INTO shop.customers VALUES (1);
        CREATE TABLE shop.visits (buyer int, day date NOT NULL) PARTITION BY RANGE (day);
        CREATE TABLE shop.visits_a PARTITION OF shop.visits FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
        CREATE TABLE shop.visits_b PARTITION OF shop.visits FOR VALUES FROM ('2026-02-01') TO ('2026-03-01');
        INSERT INTO shop.visits VALUES (1, '2026-01-02'), (1, '2026-02-02');
        ALTER TABLE shop.visits_a ADD CONSTRAINT visits_buyer_fk FOREIGN KEY (buyer) REFERENCES shop.customers (id);
        ALTER TABLE shop.visits_b ADD CONSTRAINT visits_buyer_fk FOREIGN KEY (buyer) REFERENCES shop.customers (id);
    """)
    plan = api.plan(db.conninfo, Config(), options=api.FixOptions(include="schema"))
    assert [s.id for s in plan.steps] == ["preflight", "fk-add:shop.visits.buyer", "verify-schema"]
    assert plan.step("fk-add:shop.visits.buyer").lock is LockMode.ACCESS_EXCLUSIVE
    assert api.apply(db.conninfo, Config(), rescan=False, options=api.FixOptions(include="schema")).ok
    assert db.fetchall(FKS) == [("visits", "visits_buyer_fkey", True, "a", "customers", False),
                                ("visits_a", "visits_buyer_fk", True, "a", "customers", True),
                                ("visits_b", "visits_buyer_fk", True, "a", "customers", True)]
    with pytest.raises(pgerrors.ForeignKeyViolation):
        db.execute("INSERT INTO shop.visits VALUES (2, '2026-02-03')")


def test_preflight_refuses_an_fk_to_a_table_the_role_may_not_reference(db):
    import uuid as _uuid

    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    role = f"yumai_t_owner_{_uuid.uuid4().hex[:8]}"
    db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        db.execute(sql.SQL("""
            CREATE SCHEMA shop;
            GRANT USAGE ON SCHEMA shop TO {r};
            CREATE TABLE shop.customers (id int PRIMARY KEY);
            GRANT SELECT ON shop.customers TO {r};
            INSERT INTO shop.customers VALUES (1);
            CREATE TABLE shop.orders (id int PRIMARY KEY, customer_id int);
            INSERT INTO shop.orders VALUES (1, 1);
            ALTER TABLE shop.orders OWNER TO {r};
        """).format(r=sql.Identifier(role)))
        params = conninfo_to_dict(db.conninfo)
        params["user"] = role
        params.pop("password", None)
        res = CliRunner().invoke(cli, ["fix", "--dsn", make_conninfo(**params), "--include", "schema", "--apply", "--yes"])
        assert res.exit_code == 2, res.output
        assert "no REFERENCES privilege on shop.customers" in res.output and "Traceback" not in res.output
        assert db.fetchall(FKS) == [] and db.fetchall(INDEXES) == []
    finally:
        db.execute(sql.SQL("DROP OWNED BY {r}; DROP ROLE {r}").format(r=sql.Identifier(role)))


def test_quoted_mixed_case_names(db):
    db.execute("""
        CREATE SCHEMA "Sales";
        CREATE TABLE "Sales"."Customers" (id int PRIMARY KEY);
        INSERT INTO "Sales"."Customers" VALUES (1), (2);
        CREATE TABLE "Sales"."Order Lines" (id int PRIMARY KEY, "Customer_id" int);
        INSERT INTO "Sales"."Order Lines" VALUES (1, 1), (2, 2), (3, NULL);
    """)
    plan = api.plan(db.conninfo, Config(), options=api.FixOptions(include="schema"))
    assert [s.id for s in plan.steps] == ["preflight", "index:Sales.Order Lines.Customer_id",
                                          "fk-add:Sales.Order Lines.Customer_id",
                                          "fk-validate:Sales.Order Lines.Customer_id", "verify-schema"]
    assert api.apply(db.conninfo, Config(), rescan=False, options=api.FixOptions(include="schema")).ok
    assert db.fetchall("SELECT conname, convalidated FROM pg_constraint WHERE conrelid = '\"Sales\".\"Order Lines\"'::regclass "
                       "AND contype = 'f'") == [("Order Lines_Customer_id_fkey", True)]
    with pytest.raises(pgerrors.ForeignKeyViolation):
        db.execute('INSERT INTO "Sales"."Order Lines" VALUES (4, 3)')


def test_include_schema_adds_the_inferred_fks_that_are_confirmed_only(db):
    """FKs inferred from data (a key that is not the primary key, a self-reference, a role word) are
    planned like named ones; a column two tables could hold gets nothing."""
    db.execute("""
        CREATE SCHEMA hr;
        CREATE TABLE hr.staff (id int PRIMARY KEY, badge int NOT NULL UNIQUE, coach int);
        INSERT INTO hr.staff SELECT g, 1000 + g, CASE WHEN g > 12 THEN 1001 + 2 * (g % 12) END
        FROM generate_series(1, 60) g WHERE g % 10 <> 0;
        CREATE TABLE hr.shifts (id int PRIMARY KEY, supervisor int, handler int);
        CREATE TABLE hr.handlers_a (code int PRIMARY KEY);
        CREATE TABLE hr.handlers_b (code int PRIMARY KEY);
        INSERT INTO hr.handlers_a VALUES (105), (110), (120), (130);
        INSERT INTO hr.handlers_b VALUES (105), (110), (120), (130), (140);
        INSERT INTO hr.shifts SELECT g, 1001 + 2 * (g % 15), (ARRAY[105, 110, 120, 130])[1 + g % 4]
        FROM generate_series(1, 45) g;
    """)
    plan = api.plan(db.conninfo, Config(), options=api.FixOptions(include="schema"))
    assert sorted(s.id for s in plan.steps if s.id.startswith("fk-add")) == [
        "fk-add:hr.shifts.supervisor", "fk-add:hr.staff.coach"]
    assert "REFERENCES hr.staff (badge)" in plan.step("fk-add:hr.shifts.supervisor").sql_text().replace('"', "")
    assert api.apply(db.conninfo, Config(), rescan=False, options=api.FixOptions(include="schema")).ok
    assert sorted(db.fetchall("SELECT conrelid::regclass::text, confrelid::regclass::text, convalidated FROM pg_constraint "
                              "WHERE contype = 'f'")) == [("hr.shifts", "hr.staff", True), ("hr.staff", "hr.staff", True)]
    with pytest.raises(pgerrors.ForeignKeyViolation):
        db.execute("INSERT INTO hr.shifts VALUES (99, 1010, NULL)")    # badge 1010 does not exist


def test_inference_probes_are_pruned_by_pg_stats():
    """Without statistics every comparable key is a candidate (the probe's first rows decide); with them,
    keys out of the column's range, too few for its distinct values, dense from 1 (containment there is
    no evidence) or for long texts are never probed."""
    from yumai_audit.catalog import ColumnStats
    from yumai_audit.checks import implied

    qn = QualifiedName
    txt = Column("code", "text", "text", True)
    tables = [
        Table(1, qn("s", "serials"), "r", {"id": INT}, ("id",), 1000, 8192),                 # 1..1000, dense
        Table(2, qn("s", "badges"), "r", {"id": INT}, ("id",), 50, 8192),                    # 1001..1100, half
        Table(3, qn("s", "tiny"), "r", {"id": INT}, ("id",), 5, 8192),                       # 1..5
        Table(4, qn("s", "codes"), "r", {"code": txt}, ("code",), 20, 8192),
        Table(5, qn("s", "facts"), "r", {"id": INT, "qty": Column("qty", "integer", "int4", False),
                                         "holder": Column("holder", "integer", "int4", False),
                                         "note": Column("note", "text", "text", False)}, ("id",), 10_000, 8192),
    ]
    cat = Catalog("db", "x", 180000, {t.name: t for t in tables})
    ctx = build_context(cat, Config())

    def pairs():
        return {(i.column.name, str(p.table.name)) for i in implied.inferences(ctx, implied._columns(ctx)[1])
                for p in i.parents}

    everything = {(c, str(t)) for c in ("qty", "holder") for t in ("s.serials", "s.badges", "s.tiny", "s.facts")}
    assert pairs() == everything | {("note", "s.codes")}
    cat.column_stats.update({
        (qn("s", "serials"), "id"): ColumnStats(0, -1, 4, 1, 1000),
        (qn("s", "badges"), "id"): ColumnStats(0, -1, 4, 1001, 1100),
        (qn("s", "tiny"), "id"): ColumnStats(0, -1, 4, 1, 5),
        (qn("s", "facts"), "id"): ColumnStats(0, -1, 4, 1, 10_000),
        (qn("s", "codes"), "code"): ColumnStats(0, -1, 3, None, None),
        (qn("s", "facts"), "qty"): ColumnStats(0, 12, 4, 1, 12),          # 1..12: in serials, facts; dense from 1
        (qn("s", "facts"), "holder"): ColumnStats(0.1, 40, 4, 1003, 1097),  # inside badges only
        (qn("s", "facts"), "note"): ColumnStats(0, -0.9, 120, None, None),  # long texts
    })
    # facts.id 1..10000 contains 1003..1097 too, but densely from 1: no evidence there
    assert pairs() == {("holder", "s.badges")}
    # all NULL: not probed at all
    cat.column_stats[(qn("s", "facts"), "holder")] = ColumnStats(1.0, 0, 0, None, None)
    assert pairs() == set()

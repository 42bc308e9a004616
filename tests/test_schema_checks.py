"""Schema-wide checks on purpose-built schemas, with exact expectations: declared FKs verified by
data (composite keys, MATCH SIMPLE), implied FKs confirmed by data, partition FK drift, invalid
indexes, duplicate and unindexed FKs; databases without session tables, and without any table."""
from __future__ import annotations

import json

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from yumai_audit.api import FixOptions, plan, scan
from yumai_audit.cli import cli
from yumai_audit.config import Config, load_config
from yumai_audit.errors import ConfigError
from yumai_audit.model import Severity, Status

SCHEMA_CHECKS = ("orphaned_fk_rows", "fk_candidate", "partition_fk_drift", "invalid_indexes",
                 "duplicate_foreign_keys", "unindexed_foreign_keys")
SESSION_ONLY_CHECKS = ("missing_master_rows", "orphaned_session_ids", "malformed_session_ids", "noncanonical_session_ids",
                       "null_session_ids", "conflicting_session_users", "orphaned_user_ids", "unvalidated_fk",
                       "key_type_mismatch", "unindexed_fk_columns")


def found(result, check):
    return [f for f in result.findings if f.check == check]


def status(result, check):
    return next(c for c in result.checks if c.check == check).status


# A partitioned table (with a default partition) whose FK was added NOT VALID partition by partition
# (the only way on PostgreSQL 12-17), and whose newest partition was created afterwards without it.
PARTITIONED = """
CREATE SCHEMA shop;
CREATE TABLE shop.customers (id int PRIMARY KEY, name text);
INSERT INTO shop.customers SELECT g, 'c' || g FROM generate_series(1, 5) g;
CREATE TABLE shop.events (id bigint NOT NULL, customer_id int, created date NOT NULL) PARTITION BY RANGE (created);
CREATE TABLE shop.events_2026_01 PARTITION OF shop.events FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
CREATE TABLE shop.events_2026_02 PARTITION OF shop.events FOR VALUES FROM ('2026-02-01') TO ('2026-03-01');
CREATE TABLE shop.events_default PARTITION OF shop.events DEFAULT;
INSERT INTO shop.events VALUES
    (1, 1, '2026-01-05'), (2, 1, '2026-01-06'), (3, 2, '2026-01-07'), (4, 99, '2026-01-08'), (5, 99, '2026-01-09'),
    (6, 98, '2026-02-03'), (7, NULL, '2026-02-04'), (8, NULL, '2026-02-05'), (9, 3, '2026-02-06'),
    (10, 99, '2025-12-15');
ALTER TABLE shop.events_2026_01 ADD CONSTRAINT events_2026_01_customer_fk
    FOREIGN KEY (customer_id) REFERENCES shop.customers (id) NOT VALID;
ALTER TABLE shop.events_2026_02 ADD CONSTRAINT events_2026_02_customer_fk
    FOREIGN KEY (customer_id) REFERENCES shop.customers (id) NOT VALID;
ALTER TABLE shop.events_default ADD CONSTRAINT events_default_customer_fk
    FOREIGN KEY (customer_id) REFERENCES shop.customers (id) NOT VALID;
-- the newest partition, created later: no FK; its orphans are not counted by orphaned_fk_rows
CREATE TABLE shop.events_2026_03 PARTITION OF shop.events FOR VALUES FROM ('2026-03-01') TO ('2026-04-01');
INSERT INTO shop.events SELECT 10 + g, 97, '2026-03-02' FROM generate_series(1, 4) g;
"""


def test_partition_missing_the_fks_of_its_siblings_is_named(db):
    db.execute(PARTITIONED)
    result = scan(db.conninfo, Config())
    drift = found(result, "partition_fk_drift")
    assert [(f.table, f.column, f.references, f.severity) for f in drift] == [
        ("shop.events_2026_03", "customer_id", "shop.customers.id", Severity.ERROR),
        ("shop.events", "customer_id", "shop.customers.id", Severity.WARNING),
    ]
    assert drift[0].details["partitions_with"] == ["shop.events_2026_01", "shop.events_2026_02", "shop.events_default"]
    assert drift[0].details["constraints"] == [
        "events_2026_01_customer_fk", "events_2026_02_customer_fk", "events_default_customer_fk"]
    assert "3 of its 4 partitions" in drift[0].message


def test_not_valid_fks_on_partitions_are_counted_on_the_parent(db):
    db.execute(PARTITIONED)
    result = scan(db.conninfo, Config())
    [f] = found(result, "orphaned_fk_rows")
    assert (f.table, f.column, f.references, f.rows, f.keys) == ("shop.events", "customer_id", "shop.customers.id", 4, 2)
    assert f.sample == ["98", "99"]
    assert f.details["partitions"] == ["shop.events_2026_01", "shop.events_2026_02", "shop.events_default"]
    assert f.details["validated"] is False
    assert status(result, "orphaned_fk_rows") is Status.FAIL
    # no session table: the session checks are skipped, the exit code follows the (error) findings
    assert all(status(result, c) is Status.SKIPPED for c in SESSION_ONLY_CHECKS)
    assert result.exit_code == 1


def test_not_valid_fk_on_the_partitioned_parent_where_the_server_allows_it(db):
    db.execute(PARTITIONED.split("ALTER TABLE")[0])
    db.execute("CREATE TABLE shop.events_2026_03 PARTITION OF shop.events FOR VALUES FROM ('2026-03-01') TO ('2026-04-01');"
               "INSERT INTO shop.events SELECT 10 + g, 97, '2026-03-02' FROM generate_series(1, 4) g")
    if db.server.version_num >= 180000:
        db.execute("ALTER TABLE shop.events ADD CONSTRAINT events_customer_fk "
                   "FOREIGN KEY (customer_id) REFERENCES shop.customers (id) NOT VALID")
        partitions = None
    else:
        # PostgreSQL 12-17 refuse NOT VALID on a partitioned table: the FK goes on every leaf instead
        with pytest.raises(psycopg.errors.Error):
            db.execute("ALTER TABLE shop.events ADD CONSTRAINT events_customer_fk "
                       "FOREIGN KEY (customer_id) REFERENCES shop.customers (id) NOT VALID")
        partitions = ["shop.events_2026_01", "shop.events_2026_02", "shop.events_2026_03", "shop.events_default"]
        for p in partitions:
            db.execute(sql.SQL("ALTER TABLE {} ADD FOREIGN KEY (customer_id) REFERENCES shop.customers (id) NOT VALID")
                       .format(sql.Identifier("shop", p.split(".")[1])))
    result = scan(db.conninfo, Config())
    [f] = found(result, "orphaned_fk_rows")
    assert (f.table, f.rows, f.keys, f.sample) == ("shop.events", 8, 3, ["97", "98", "99"])
    assert f.details.get("partitions") == partitions
    drift = [(d.table, d.severity) for d in found(result, "partition_fk_drift")]
    # every partition has the FK; only on 12-17 does the parent lack it (new partitions will not get it)
    assert drift == ([] if partitions is None else [("shop.events", Severity.WARNING)])


COMPOSITE = """
CREATE SCHEMA inv;
CREATE TABLE inv.warehouses (region text, code int, PRIMARY KEY (region, code));
INSERT INTO inv.warehouses VALUES ('eu', 1), ('eu', 2), ('us', 2);
CREATE TABLE inv.stock (id int PRIMARY KEY, region text, code int, qty int);
INSERT INTO inv.stock VALUES
    (1, 'eu', 1, 5), (2, 'eu', 1, 6), (3, 'eu', 9, 1), (4, 'eu', 9, 2), (5, 'us', 1, 3),
    (6, NULL, 9, 1), (7, 'zz', NULL, 1), (8, NULL, NULL, 1), (9, 'us', 2, 4);
ALTER TABLE inv.stock ADD CONSTRAINT stock_warehouse_fk FOREIGN KEY (region, code) REFERENCES inv.warehouses NOT VALID;
CREATE INDEX stock_code_region_idx ON inv.stock (code, region, qty);
"""


def test_composite_key_match_simple_skips_rows_with_a_null_part(db):
    db.execute(COMPOSITE)
    result = scan(db.conninfo, Config())
    [f] = found(result, "orphaned_fk_rows")
    assert (f.table, f.column, f.references, f.rows, f.keys) == ("inv.stock", "region,code", "inv.warehouses.region,code", 3, 2)
    assert f.sample == ["(eu,9)", "(us,1)"]
    assert f.details["constraints"] == ["stock_warehouse_fk"]
    # the index leads with both FK columns (in another order): covered
    assert found(result, "unindexed_foreign_keys") == []


VALID_BUT_VIOLATED = """
CREATE SCHEMA shop;
CREATE TABLE shop.customers (id int PRIMARY KEY);
INSERT INTO shop.customers SELECT generate_series(1, 3);
CREATE TABLE shop.orders (id int PRIMARY KEY, customer_id int REFERENCES shop.customers (id));
INSERT INTO shop.orders VALUES (1, 1), (2, 2), (3, NULL);
SET session_replication_role = replica;
INSERT INTO shop.orders VALUES (4, 42), (5, 42), (6, 43);
"""


def test_valid_fks_are_verified_only_on_request(db, tmp_path):
    db.execute(VALID_BUT_VIOLATED)
    plain = scan(db.conninfo, Config())
    assert found(plain, "orphaned_fk_rows") == []
    assert status(plain, "orphaned_fk_rows") is Status.SKIPPED
    verified = scan(db.conninfo, Config(verify_declared=True))
    [f] = found(verified, "orphaned_fk_rows")
    assert (f.table, f.column, f.rows, f.keys, f.sample) == ("shop.orders", "customer_id", 3, 2, ["42", "43"])
    assert f.details["validated"] is True
    # the FK has no index
    [u] = found(verified, "unindexed_foreign_keys")
    assert (u.table, u.column, u.references) == ("shop.orders", "customer_id", "shop.customers.id")

    # the CLI flag and the config key
    runner = CliRunner()
    out = tmp_path / "out"
    res = runner.invoke(cli, ["scan", "--dsn", db.conninfo, "--out", str(out), "--verify-declared", "--format", "json"])
    assert res.exit_code == 1, res.output
    data = json.loads(res.stdout)
    assert [(f["table"], f["rows"]) for f in data["findings"] if f["check"] == "orphaned_fk_rows"] == [("shop.orders", 3)]
    cfg = tmp_path / "verify.toml"   # not ./yumai-audit.toml: the test runs in tmp_path
    cfg.write_text("verify_declared = true\n")
    assert load_config(cfg).verify_declared is True
    res = runner.invoke(cli, ["scan", "--dsn", db.conninfo, "--out", str(out), "--config", str(cfg), "--format", "json"])
    assert [f["rows"] for f in json.loads(res.stdout)["findings"] if f["check"] == "orphaned_fk_rows"] == [3]
    res = runner.invoke(cli, ["scan", "--dsn", db.conninfo, "--out", str(out), "--format", "json"])
    assert [f for f in json.loads(res.stdout)["findings"] if f["check"] == "orphaned_fk_rows"] == []


IMPLIED = """
CREATE SCHEMA billing;
CREATE SCHEMA crm;
CREATE SCHEMA "Sales";
CREATE TABLE billing.accounts (id int PRIMARY KEY);
INSERT INTO billing.accounts SELECT generate_series(1, 10);
CREATE TABLE crm.accounts (id bigint PRIMARY KEY);
INSERT INTO crm.accounts SELECT generate_series(1, 4);
-- shared by two candidate parents: all values in billing.accounts, half in crm.accounts
CREATE TABLE public.invoices (id int PRIMARY KEY, account_id int);
INSERT INTO public.invoices SELECT g, 1 + g % 8 FROM generate_series(1, 40) g;
-- both parents hold every value: ambiguous, information only
CREATE TABLE public.payments (id int PRIMARY KEY, account_id bigint);
INSERT INTO public.payments SELECT g, 1 + g % 3 FROM generate_series(1, 9) g;
-- quoted mixed-case names in another schema
CREATE TABLE "Sales"."Customers" (id int PRIMARY KEY);
INSERT INTO "Sales"."Customers" SELECT generate_series(1, 200);
CREATE TABLE "Sales"."Orders" ("OrderNo" int PRIMARY KEY, "Customer_id" int);
INSERT INTO "Sales"."Orders" SELECT g, 1 + g % 200 FROM generate_series(1, 500) g;
INSERT INTO "Sales"."Orders" VALUES (501, 999), (502, NULL);   -- 1 of 201 distinct values missing: 99.5%
-- <anything>_<pk>: the one table whose primary key is sku; 3 of 4 values found
CREATE TABLE public.products (sku text PRIMARY KEY);
INSERT INTO public.products VALUES ('a'), ('b'), ('c');
CREATE TABLE public.reviews (id int PRIMARY KEY, product_sku varchar(10));
INSERT INTO public.reviews VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'x'), (5, 'x'), (6, NULL);
-- a one-to-one extension table: the column is its own table's primary key
CREATE TABLE public.users (id int PRIMARY KEY);
INSERT INTO public.users SELECT generate_series(1, 5);
CREATE TABLE public.user_settings (user_id int PRIMARY KEY, theme text);
INSERT INTO public.user_settings VALUES (1, 'dark'), (2, 'light');
-- never reported: an FK already, an incompatible type, the ignore list
CREATE TABLE public.logins (id int PRIMARY KEY, user_id int REFERENCES public.users (id));
CREATE INDEX ON public.logins (user_id);
CREATE TABLE public.notes (id int PRIMARY KEY, user_id text);
INSERT INTO public.notes VALUES (1, '1'), (2, '2');
-- no value at all: a candidate, with the reason
CREATE TABLE public.drafts (id int PRIMARY KEY, user_id int);
INSERT INTO public.drafts VALUES (1, NULL);
CREATE TABLE public.audit_log (id int PRIMARY KEY, user_id int);
INSERT INTO public.audit_log VALUES (1, 1), (2, 5);
"""


def test_implied_fks_are_confirmed_by_data(db):
    db.execute(IMPLIED)
    result = scan(db.conninfo, Config())
    unconstrained = {(f.table, f.column): f for f in found(result, "unconstrained_fk")}
    candidates = {(f.table, f.column): f for f in found(result, "fk_candidate")}
    assert sorted(unconstrained) == [("Sales.Orders", "Customer_id"), ("public.audit_log", "user_id"),
                                     ("public.invoices", "account_id")]
    assert sorted(candidates) == [("public.drafts", "user_id"), ("public.payments", "account_id"),
                                  ("public.reviews", "product_sku"), ("public.user_settings", "user_id")]
    drafts = candidates[("public.drafts", "user_id")]
    assert (drafts.severity, drafts.details["values"], drafts.details["reason"]) == (
        Severity.INFO, 0, "has no non-NULL value")
    assert drafts.details["alternatives"] == ["public.user_settings.user_id", "public.users.id"]
    assert "nothing in the data can confirm it" in drafts.message

    invoices = unconstrained[("public.invoices", "account_id")]
    assert invoices.references == "billing.accounts.id"
    assert invoices.severity is Severity.WARNING
    assert invoices.details["share"] == 1.0 and invoices.details["values"] == 8
    assert invoices.details["alternatives"] == [
        {"references": "billing.accounts.id", "share": 1.0, "values": 8, "missing": 0},
        {"references": "crm.accounts.id", "share": 0.5, "values": 8, "missing": 4}]

    orders = unconstrained[("Sales.Orders", "Customer_id")]
    assert orders.references == "Sales.Customers.id"
    assert (orders.details["values"], orders.details["missing"], orders.details["share"]) == (201, 1, 0.995)
    assert orders.sample == ["999"]
    assert "alternatives" not in orders.details

    payments = candidates[("public.payments", "account_id")]
    assert payments.severity is Severity.INFO
    assert [a["references"] for a in payments.details["alternatives"]] == ["billing.accounts.id", "crm.accounts.id"]
    assert "could reference 2 tables" in payments.message

    reviews = candidates[("public.reviews", "product_sku")]
    assert (reviews.references, reviews.details["share"], reviews.details["rule"]) == ("public.products.sku", 0.75, "primary key")
    assert reviews.sample == ["x"]

    settings = candidates[("public.user_settings", "user_id")]
    assert settings.details["share"] == 1.0 and "primary key" in settings.message

    ignoring = scan(db.conninfo, Config(ignore=("public.audit_log.user_id", '"Sales"."Orders"')))
    assert sorted((f.table, f.column) for f in found(ignoring, "unconstrained_fk")) == [("public.invoices", "account_id")]


SESSIONS = """
CREATE SCHEMA chatbot;
CREATE TABLE chatbot.users (id int PRIMARY KEY);
INSERT INTO chatbot.users SELECT generate_series(1, 3);
CREATE TABLE chatbot.session_master (session_id uuid PRIMARY KEY, user_id int REFERENCES chatbot.users (id));
CREATE INDEX ON chatbot.session_master (user_id);
INSERT INTO chatbot.session_master VALUES (md5('s1')::uuid, 1), (md5('s2')::uuid, 2);
CREATE TABLE chatbot.conversations (id int PRIMARY KEY, session_id uuid, user_id int, message text);
CREATE INDEX ON chatbot.conversations (session_id);
INSERT INTO chatbot.conversations VALUES (1, md5('s1')::uuid, 1, 'hi'), (2, md5('s2')::uuid, 2, 'hello');
"""


def test_session_and_user_columns_are_not_reported_twice(db):
    db.execute(SESSIONS)
    result = scan(db.conninfo, Config())
    assert sorted((f.table, f.column, f.references) for f in found(result, "unconstrained_fk")) == [
        ("chatbot.conversations", "session_id", "chatbot.session_master.session_id"),
        ("chatbot.conversations", "user_id", "chatbot.users.id")]
    assert found(result, "fk_candidate") == []


CLEAN = """
CREATE SCHEMA shop;
CREATE TABLE shop.customers (id int PRIMARY KEY);
INSERT INTO shop.customers SELECT generate_series(1, 5);
CREATE TABLE shop.orders (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES shop.customers (id));
CREATE INDEX ON shop.orders (customer_id);
INSERT INTO shop.orders SELECT g, 1 + g % 5 FROM generate_series(1, 20) g;
CREATE TABLE shop.events (id bigint NOT NULL, customer_id int REFERENCES shop.customers (id), created date NOT NULL)
    PARTITION BY RANGE (created);
CREATE INDEX ON shop.events (customer_id);
CREATE TABLE shop.events_2026_01 PARTITION OF shop.events FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
CREATE TABLE shop.events_2026_02 PARTITION OF shop.events FOR VALUES FROM ('2026-02-01') TO ('2026-03-01');
CREATE TABLE shop.events_default PARTITION OF shop.events DEFAULT;
INSERT INTO shop.events VALUES (1, 1, '2026-01-05'), (2, NULL, '2026-02-05'), (3, 5, '2025-01-01');
CREATE TABLE shop.warehouses (region text, code int, PRIMARY KEY (region, code));
INSERT INTO shop.warehouses VALUES ('eu', 1);
CREATE TABLE shop.stock (id int PRIMARY KEY, region text, code int,
    FOREIGN KEY (region, code) REFERENCES shop.warehouses);
CREATE INDEX ON shop.stock (region, code);
INSERT INTO shop.stock VALUES (1, 'eu', 1), (2, NULL, 7);
CREATE TABLE shop.notes (id int PRIMARY KEY, body text);
INSERT INTO shop.notes VALUES (1, 'x');
"""


def test_clean_schema_raises_no_alarm(db, tmp_path):
    db.execute(CLEAN)
    result = scan(db.conninfo, Config(verify_declared=True))
    assert result.findings == []
    assert {c.check: c.status for c in result.checks if c.check in SCHEMA_CHECKS} == {
        "orphaned_fk_rows": Status.PASS, "fk_candidate": Status.PASS, "partition_fk_drift": Status.PASS,
        "invalid_indexes": Status.PASS, "duplicate_foreign_keys": Status.PASS, "unindexed_foreign_keys": Status.PASS}
    # the unconstrained integer columns (shop.events.id) were measured against the keys: nothing found
    assert status(result, "fk_candidate") is status(result, "unconstrained_fk") is Status.PASS
    assert all(status(result, c) is Status.SKIPPED for c in SESSION_ONLY_CHECKS)
    assert result.exit_code == 0
    res = CliRunner().invoke(cli, ["scan", "--dsn", db.conninfo, "--out", str(tmp_path / "out"), "--verify-declared"])
    assert res.exit_code == 0, res.output
    assert "0 error(s), 0 warning(s)" in res.stdout


def test_invalid_duplicate_and_unindexed(db):
    db.execute(CLEAN)
    db.execute("""
        CREATE INDEX events_created_idx ON ONLY shop.events (created);
        ALTER TABLE shop.orders ADD CONSTRAINT orders_customer_again FOREIGN KEY (customer_id) REFERENCES shop.customers (id);
        DROP INDEX shop.stock_region_code_idx;
        CREATE INDEX stock_code_idx ON shop.stock (code);
        INSERT INTO shop.notes VALUES (2, 'x');
    """)
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.execute("CREATE UNIQUE INDEX CONCURRENTLY notes_body_key ON shop.notes (body)")
    result = scan(db.conninfo, Config())
    assert [(f.table, f.column, f.details["index"]) for f in found(result, "invalid_indexes")] == [
        ("shop.events", "created", "shop.events_created_idx"), ("shop.notes", "body", "shop.notes_body_key")]
    [dup] = found(result, "duplicate_foreign_keys")
    assert (dup.table, dup.column, dup.details["constraints"]) == (
        "shop.orders", "customer_id", ["orders_customer_again", "orders_customer_id_fkey"])
    [unindexed] = found(result, "unindexed_foreign_keys")
    assert (unindexed.table, unindexed.column, unindexed.references) == ("shop.stock", "region,code", "shop.warehouses.region,code")
    assert found(result, "partition_fk_drift") == []


def test_database_without_tables_is_nothing_to_audit(db, tmp_path):
    db.execute("CREATE SCHEMA empty; CREATE VIEW empty.v AS SELECT 1 AS x")
    res = CliRunner().invoke(cli, ["scan", "--dsn", db.conninfo, "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert res.stdout == ""
    assert res.stderr.splitlines() == [f"yumai-audit: error: nothing to audit: database {db.name} has no table in any user schema"]


def test_schema_settings_are_validated(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('ignore = ["public.t.c", \'"Odd.Schema".T\']\nverify_declared = false\n')
    assert load_config(cfg).ignore == ("public.t.c", '"Odd.Schema".T')
    for bad in ('ignore = ["justone"]', 'ignore = "a.b.c"', 'ignore = ["a.b.c.d"]', 'verify_declared = "yes"'):
        cfg.write_text(bad + "\n")
        with pytest.raises(ConfigError):
            load_config(cfg)


def test_not_valid_session_fk_is_left_to_unvalidated_fk(db):
    db.execute(SESSIONS)
    db.execute("""
        CREATE TABLE chatbot.user_interactions (id int PRIMARY KEY, session_id uuid, kind text);
        CREATE INDEX ON chatbot.user_interactions (session_id);
        INSERT INTO chatbot.user_interactions VALUES (1, md5('s1')::uuid, 'click'), (2, md5('ghost')::uuid, 'click');
        ALTER TABLE chatbot.user_interactions ADD CONSTRAINT ui_session_fk
            FOREIGN KEY (session_id) REFERENCES chatbot.session_master (session_id) NOT VALID;
        CREATE TABLE chatbot.tags (id int PRIMARY KEY, label text);
        INSERT INTO chatbot.tags VALUES (1, 'a');
        CREATE TABLE chatbot.message_tags (tag_id int, note text);
        INSERT INTO chatbot.message_tags VALUES (1, 'x'), (2, 'y');
        ALTER TABLE chatbot.message_tags ADD CONSTRAINT mt_tag_fk FOREIGN KEY (tag_id) REFERENCES chatbot.tags NOT VALID;
    """)
    result = scan(db.conninfo, Config())
    assert [(f.table, f.rows) for f in found(result, "unvalidated_fk")] == [("chatbot.user_interactions", 1)]
    assert [(f.table, f.column, f.rows, f.keys, f.sample) for f in found(result, "orphaned_fk_rows")] == [
        ("chatbot.message_tags", "tag_id", 1, 1, ["2"])]
    assert [(f.table, f.column) for f in found(result, "unindexed_foreign_keys")] == [("chatbot.message_tags", "tag_id")]


def test_a_probe_the_role_may_not_read_is_an_error_not_a_crash(db):
    db.execute(PARTITIONED)
    role = db.name + "_reader"
    db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        db.execute(sql.SQL("GRANT USAGE ON SCHEMA shop TO {r}; GRANT SELECT ON shop.customers, shop.events TO {r}")
                   .format(r=sql.Identifier(role)))
        conninfo = psycopg.conninfo.make_conninfo(db.conninfo, user=role)
        result = scan(conninfo, Config())
        check = next(c for c in result.checks if c.check == "orphaned_fk_rows")
        assert check.status is Status.ERROR
        assert "permission denied" in check.reason and "events_2026_01" in check.reason
        assert found(result, "orphaned_fk_rows") == []
        assert len(found(result, "partition_fk_drift")) == 2
    finally:
        db.execute(sql.SQL("DROP OWNED BY {r}; DROP ROLE {r}").format(r=sql.Identifier(role)))


def test_quoted_mixed_case_names_in_another_schema(db):
    db.execute("""
        CREATE SCHEMA "Ops";
        CREATE TABLE "Ops"."Jobs" ("JobId" int PRIMARY KEY);
        INSERT INTO "Ops"."Jobs" VALUES (1), (2);
        CREATE TABLE "Ops"."Runs" ("RunId" int, "Job Ref" int, "At" date NOT NULL) PARTITION BY LIST ("At");
        CREATE TABLE "Ops"."Runs A" PARTITION OF "Ops"."Runs" FOR VALUES IN ('2026-01-01');
        CREATE TABLE "Ops"."Runs B" PARTITION OF "Ops"."Runs" DEFAULT;
        INSERT INTO "Ops"."Runs" VALUES (1, 1, '2026-01-01'), (2, 7, '2026-01-01'), (3, 7, '2026-02-01');
        ALTER TABLE "Ops"."Runs A" ADD CONSTRAINT "Runs A Job" FOREIGN KEY ("Job Ref") REFERENCES "Ops"."Jobs" NOT VALID;
    """)
    result = scan(db.conninfo, Config())
    [f] = found(result, "orphaned_fk_rows")
    assert (f.table, f.column, f.references, f.rows, f.keys) == ("Ops.Runs", "Job Ref", "Ops.Jobs.JobId", 1, 1)
    assert f.details["constraints"] == ["Runs A Job"]
    assert [(d.table, d.severity) for d in found(result, "partition_fk_drift")] == [
        ("Ops.Runs B", Severity.ERROR), ("Ops.Runs", Severity.WARNING)]


# Relationships no `<x>_id` rule finds, and the traps of small integers. Employees are numbered
# 1..40; staff badges 1001..1060 but the tens (so that containment in them means something); the
# other tables have keys 1..N.
INFERRED = """
CREATE SCHEMA hr;
CREATE SCHEMA shop;
CREATE TABLE hr.employees (id int PRIMARY KEY, manager_id int, "ReportsTo" int, name text);
INSERT INTO hr.employees SELECT g, CASE WHEN g > 1 THEN 1 + g % 5 END, CASE WHEN g > 1 THEN 1 + g % 3 END, 'e' || g
FROM generate_series(1, 40) g;
CREATE TABLE hr.staff (badge int PRIMARY KEY, coach int);
INSERT INTO hr.staff SELECT 1000 + g, CASE WHEN g > 12 THEN 1000 + 2 * (g % 12) + 1 END
FROM generate_series(1, 60) g WHERE g % 10 <> 0;
CREATE TABLE hr.people (person uuid PRIMARY KEY);
INSERT INTO hr.people SELECT md5('p' || g)::uuid FROM generate_series(1, 20) g;
CREATE TABLE shop.customers (cust_no int PRIMARY KEY);
INSERT INTO shop.customers SELECT generate_series(1, 30);
CREATE TABLE shop.shippers (shipper_id int PRIMARY KEY, name text);
INSERT INTO shop.shippers VALUES (1, 'a'), (2, 'b'), (3, 'c');
CREATE TABLE shop.products (id int PRIMARY KEY);
INSERT INTO shop.products SELECT generate_series(1, 40);
CREATE TABLE shop.coupons (id int PRIMARY KEY);
CREATE TABLE shop.handlers_eu (code int PRIMARY KEY);
INSERT INTO shop.handlers_eu VALUES (100), (105), (110), (120), (130), (140);
CREATE TABLE shop.handlers_us (code int PRIMARY KEY);
INSERT INTO shop.handlers_us VALUES (105), (110), (115), (120), (130);
CREATE TABLE shop.orders (id int PRIMARY KEY, customer int, ship_via int, clerk_id int, approver uuid,
                          coupon_id int, status int, handler int);
INSERT INTO shop.orders SELECT g, 1 + g % 30, 1 + g % 3, 1001 + 2 * (g % 20), md5('p' || (1 + g % 9))::uuid,
       NULL, 1 + g % 4, (ARRAY[105, 110, 120, 130])[1 + g % 4]
FROM generate_series(1, 200) g;
CREATE TABLE shop.order_lines (id int PRIMARY KEY, product_id int, quantity int);
INSERT INTO shop.order_lines SELECT g, 1 + g % 40, 1 + g % 12 FROM generate_series(1, 300) g;
CREATE TABLE shop.reviews (id int PRIMARY KEY, rating int);
INSERT INTO shop.reviews SELECT g, 1 + g % 5 FROM generate_series(1, 50) g;
CREATE TABLE shop.shifts (id int PRIMARY KEY, supervisor int);
INSERT INTO shop.shifts SELECT g, 1001 + 2 * (g % 15) FROM generate_series(1, 45) g;
CREATE TABLE shop.returns (id int PRIMARY KEY, order_id int);
"""


def test_implied_fks_inferred_from_data_and_roles(db):
    db.execute(INFERRED)
    for analyzed in (False, True):      # pg_stats empty, then filled: the same verdicts
        result = scan(db.conninfo, Config())
        unconstrained = {(f.table, f.column): f for f in found(result, "unconstrained_fk")}
        candidates = {(f.table, f.column): f for f in found(result, "fk_candidate")}
        assert {k: (f.references, f.details["rule"]) for k, f in unconstrained.items()} == {
            ("hr.employees", "manager_id"): ("hr.employees.id", "self"),          # self-references, by name
            ("hr.employees", "ReportsTo"): ("hr.employees.id", "self"),
            ("hr.staff", "coach"): ("hr.staff.badge", "data"),                   # self-reference, by data alone
            ("shop.orders", "customer"): ("shop.customers.cust_no", "table name"),   # bare role word
            ("shop.orders", "clerk_id"): ("hr.staff.badge", "data"),             # <role>_id, by data
            ("shop.orders", "approver"): ("hr.people.person", "data"),           # uuids
            ("shop.orders", "ship_via"): ("shop.shippers.shipper_id", "name prefix"),
            ("shop.shifts", "supervisor"): ("hr.staff.badge", "data"),           # a role word, not a self-reference
            ("shop.order_lines", "product_id"): ("shop.products.id", "name"),    # the name rule, unchanged
        }, analyzed
        assert all(f.severity is Severity.WARNING for f in unconstrained.values())
        # the traps: quantity 1..12 in the 40 products, rating 1..5, a status code: not reported at all;
        # a column held by two lookup tables: a candidate with both; empty columns: candidates with the reason
        assert sorted(candidates) == [("shop.orders", "coupon_id"), ("shop.orders", "handler"),
                                      ("shop.returns", "order_id")], analyzed
        handler = candidates[("shop.orders", "handler")]
        # both hold 105, 110, 120, 130 (unlikely by chance): the closer fit first
        assert [a["references"] for a in handler.details["alternatives"]] == ["shop.handlers_us.code",
                                                                              "shop.handlers_eu.code"]
        assert "no name tells which" in handler.message and handler.severity is Severity.INFO
        assert candidates[("shop.orders", "coupon_id")].details["reason"] == "has no non-NULL value"
        assert candidates[("shop.returns", "order_id")].details["reason"] == "its table has no row"
        clerk = unconstrained[("shop.orders", "clerk_id")].details
        assert (clerk["values"], clerk["missing"], clerk["range"], clerk["parent_keys"]) == (20, 0, [1001, 1039], 54)
        assert clerk["chance"] < 1e-6 and "alternatives" not in clerk
        db.execute("ANALYZE")


# A role named after what the row does, not after its table (Chinook's `Customer.SupportRepId`): three
# values, 3..5, held by every serial table of at least five rows, so the data alone cannot tell which;
# the rows they point at, and only those, say "Support" in employees.title. Keys named `Id` under
# PascalCase (`Orders.CustomerId` -> `Customers.Id`, a text key) beside it.
ROLES = """
CREATE SCHEMA music;
CREATE TABLE music.employees (id int PRIMARY KEY, title text, name text);
INSERT INTO music.employees VALUES (1, 'General Manager', 'a'), (2, 'Sales Manager', 'b'),
    (3, 'Sales Support Agent', 'c'), (4, 'Sales Support Agent', 'd'), (5, 'Sales Support Agent', 'e'),
    (6, 'IT Manager', 'f'), (7, 'IT Staff', 'g'), (8, NULL, 'h');
CREATE TABLE music.media_types (id int PRIMARY KEY, name text);
INSERT INTO music.media_types SELECT g, 'format ' || g FROM generate_series(1, 5) g;
CREATE TABLE music.genres (id int PRIMARY KEY, name text);
INSERT INTO music.genres SELECT g, 'genre ' || g FROM generate_series(1, 25) g;
CREATE TABLE music.customers (id int PRIMARY KEY, name text, support_rep_id int, level int);
INSERT INTO music.customers SELECT g, 'n' || g, 3 + g % 3, 1 + g % 3 FROM generate_series(1, 59) g;
-- every row says "level": no evidence for `customers.level`
CREATE TABLE music.badges (id int PRIMARY KEY, label text);
INSERT INTO music.badges SELECT g, 'level ' || g FROM generate_series(1, 6) g;
-- two tables whose rows 3..5, and only those, say "auditor": no way to tell which
CREATE TABLE music.staff (id int PRIMARY KEY, job text);
INSERT INTO music.staff SELECT g, CASE WHEN g BETWEEN 3 AND 5 THEN 'auditor' ELSE 'clerk' END FROM generate_series(1, 9) g;
CREATE TABLE music.contractors (id int PRIMARY KEY, job text);
INSERT INTO music.contractors SELECT g, CASE WHEN g BETWEEN 3 AND 5 THEN 'Auditors' ELSE 'other' END FROM generate_series(1, 7) g;
CREATE TABLE music.invoices (id int PRIMARY KEY, auditor_id int);
INSERT INTO music.invoices SELECT g, 3 + g % 3 FROM generate_series(1, 30) g;
-- a quantity 1..12 inside 40 products whose rows 1..12, and only those, say "quantity": a column that
-- does not name a reference is never weighed by its role (its containment is likely by chance)
CREATE TABLE music.products (id int PRIMARY KEY, note text);
INSERT INTO music.products SELECT g, CASE WHEN g <= 12 THEN 'quantity discount' ELSE 'none' END
FROM generate_series(1, 40) g;
CREATE TABLE music.order_lines (id int PRIMARY KEY, quantity int);
INSERT INTO music.order_lines SELECT g, 1 + g % 12 FROM generate_series(1, 100) g;
CREATE SCHEMA "Shop";
CREATE TABLE "Shop"."Customers" ("Id" varchar(5) PRIMARY KEY, "CompanyName" text);
INSERT INTO "Shop"."Customers" SELECT 'C' || g, 'company ' || g FROM generate_series(1, 20) g;
CREATE TABLE "Shop"."Orders" ("Id" int PRIMARY KEY, "CustomerId" varchar(5));
INSERT INTO "Shop"."Orders" SELECT g, 'C' || (1 + g % 12) FROM generate_series(1, 40) g;
"""


def test_a_role_is_found_in_the_rows_it_points_at(db):
    db.execute(ROLES)
    for analyzed in (False, True):
        result = scan(db.conninfo, Config())
        unconstrained = {(f.table, f.column): f for f in found(result, "unconstrained_fk")}
        candidates = {(f.table, f.column): f for f in found(result, "fk_candidate")}
        assert {k: (f.references, f.details["rule"]) for k, f in unconstrained.items()} == {
            ("music.customers", "support_rep_id"): ("music.employees.id", "role in rows"),
            ("Shop.Orders", "CustomerId"): ("Shop.Customers.Id", "table name"),
        }, analyzed
        rep = unconstrained[("music.customers", "support_rep_id")]
        assert rep.severity is Severity.WARNING
        assert (rep.details["values"], rep.details["role_in"], rep.details["range"]) == (3, "title", [3, 5])
        assert rep.details["chance"] > 1e-6          # the data alone would not do
        assert "have a word of its name in employees.title" in rep.message
        # held by media_types, genres, staff, contractors and employees alike: the role words decide
        assert {a["references"] for a in rep.details["alternatives"]} >= {"music.media_types.id", "music.employees.id"}
        # the traps: `level` (every badge says "level"), `auditor_id` (two tables say "auditor" in rows 3..5)
        assert ("music.customers", "level") not in candidates
        assert ("music.order_lines", "quantity") not in candidates
        auditor = candidates[("music.invoices", "auditor_id")]
        assert auditor.severity is Severity.INFO
        assert {a["references"] for a in auditor.details["alternatives"] if a.get("role_in")} == {
            "music.staff.id", "music.contractors.id"}
        db.execute("ANALYZE")
    # fix --include schema adds what is confirmed, and only that
    added = sorted(s.id for s in plan(db.conninfo, Config(), FixOptions(include="schema")).steps if s.id.startswith("fk-add:"))
    assert added == ["fk-add:Shop.Orders.CustomerId", "fk-add:music.customers.support_rep_id"]

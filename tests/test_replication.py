"""Logical replication: a real publisher and a real subscriber cluster (wal_level = logical), started here.

Without the subscribers prepared, `fix --apply` refuses before the first change and names the
publications and the slot; after the subscriber script (`fix --subscriber-sql`), `fix --apply
--subscribers-ready`, the second script and `ALTER SUBSCRIPTION ... REFRESH PUBLICATION`, the
subscription streams, its worker logged no error, and every replicated table has the publisher's rows.
"""
from __future__ import annotations

import json
import subprocess
import time

import psycopg
import pytest
from standby import Cluster, _free_port, bin_dirs
from test_cli import invoke, one_line_error

from yumai_audit.demo import build_demo_database
from yumai_audit.fix.replication import dry_run_notes
from yumai_audit.fix.subscriber import after_path

pytestmark = pytest.mark.skipif(not bin_dirs(), reason="no PostgreSQL binaries (initdb, pg_ctl) on this machine")


class Pair:
    """A publisher and a subscriber cluster, each on a free port of 127.0.0.1."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        pub_dir, sub_dir = cluster.base / "publisher", cluster.base / "subscriber"
        for data in (pub_dir, sub_dir):
            cluster.run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync")
        self.publisher = cluster.start(pub_dir, _free_port(), {"wal_level": "logical", "fsync": "off",
                                                               "max_wal_senders": "20", "max_replication_slots": "20"})
        self.subscriber = cluster.start(sub_dir, _free_port(), {"fsync": "off", "wal_retrieve_retry_interval": "'1s'",
                                                                "max_logical_replication_workers": "8"})
        self.subscriber_log = cluster.base / "subscriber.log"

    @staticmethod
    def db(conninfo: str, name: str) -> str:
        return conninfo.replace("dbname=postgres", f"dbname={name}")

    def tool(self, name: str, *args: str) -> str:
        done = subprocess.run([str(self.cluster.bindir / name), *args], check=True, capture_output=True, text=True,
                              timeout=120)
        return done.stdout


@pytest.fixture(scope="module")
def pair():
    cluster = Cluster(bin_dirs()[0])
    try:
        yield Pair(cluster)
    finally:
        cluster.stop()


def scalar(conninfo: str, query: str, params=None):
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return conn.execute(query, params).fetchone()[0]


def wait_for(what: str, test, timeout: float = 90.0) -> None:
    """Poll `test()` until true, at most `timeout` seconds (then fail naming `what`)."""
    deadline = time.monotonic() + timeout
    while not test():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g}s for {what}")
        time.sleep(0.2)


def synced(sub: str) -> bool:
    return scalar(sub, "SELECT count(*) FILTER (WHERE srsubstate <> 'r') = 0 AND count(*) > 0 FROM pg_subscription_rel")


def caught_up(pub: str, slot: str) -> bool:
    return scalar(pub, "SELECT confirmed_flush_lsn >= pg_current_wal_lsn() FROM pg_replication_slots "
                       "WHERE slot_name = %s", (slot,))


def counts(conninfo: str, tables: list[str]) -> dict[str, int]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}   # names from the catalog


def fingerprint(conninfo: str) -> list[tuple]:
    """Every table with its column types and row count, and the constraints: what 'unchanged' compares."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1")]
        out = [(t, conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in tables]
        out += conn.execute("SELECT attrelid::regclass::text, attname, atttypid::regtype::text FROM pg_attribute a "
                            "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                            "WHERE a.attnum > 0 AND n.nspname = 'chatbot' ORDER BY 1, 2").fetchall()
        out += conn.execute("SELECT conname, conrelid::regclass::text FROM pg_constraint "
                            "WHERE connamespace = 'chatbot'::regnamespace ORDER BY 1").fetchall()
        out += conn.execute("SELECT nspname FROM pg_namespace ORDER BY 1").fetchall()
    return out


CASES = {"all": ("FOR ALL TABLES", "FOR ALL TABLES"),
         "schema": ("FOR TABLES IN SCHEMA chatbot", "FOR TABLES IN SCHEMA chatbot")}


@pytest.mark.parametrize("case", list(CASES))
def test_logical_subscriber_refused_then_prepared(pair, case, tmp_path):
    publication, how = CASES[case]
    name = f"yumai_{case}"
    for conninfo in (pair.publisher, pair.subscriber):
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
    pub, sub = pair.db(pair.publisher, name), pair.db(pair.subscriber, name)
    build_demo_database(pub)
    schema = tmp_path / "schema.sql"
    schema.write_text(pair.tool("pg_dump", "--schema-only", "-d", pub), encoding="utf-8")
    pair.tool("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", sub, "-f", str(schema))
    with psycopg.connect(pub, autocommit=True) as conn:
        conn.execute(f"CREATE PUBLICATION pub_{case} {publication}")
    with psycopg.connect(sub, autocommit=True) as conn:
        port = pub.split("port=")[1].split()[0]
        conn.execute(f"CREATE SUBSCRIPTION sub_{case} CONNECTION 'host=127.0.0.1 port={port} user=postgres "
                     f"dbname={name}' PUBLICATION pub_{case}")
    wait_for("the initial copy", lambda: synced(sub))

    # not prepared: refused before the first change, every publication and the slot named
    before = fingerprint(pub)
    refused = invoke("fix", "--dsn", pub, "--apply", "--yes", "--no-backup", "--out", str(tmp_path / "refused"))
    assert refused.exit_code == 2, refused.output
    line = one_line_error(refused)
    assert f"publication pub_{case} ({how})" in line and f"logical slot sub_{case} (pgoutput, streaming)" in line
    assert "--subscriber-sql" in line and "--subscribers-ready" in line
    assert fingerprint(pub) == before
    assert scalar(pub, "SELECT to_regnamespace('yumai_audit') IS NULL")

    # the dry run says so too
    dry = invoke("fix", "--dsn", pub, "--subscriber-sql", str(tmp_path / "subscriber.sql"))
    assert dry.exit_code == 1, dry.output
    assert f"logical replication: publication pub_{case} ({how})" in dry.output

    # prepared: the subscriber script, the apply, the second script once caught up, REFRESH PUBLICATION
    script = (tmp_path / "subscriber.sql").read_text(encoding="utf-8")
    assert "CREATE TABLE IF NOT EXISTS \"yumai_audit\".\"journal\"" in script
    assert "CREATE TABLE IF NOT EXISTS \"chatbot\".\"session_master\"" in script
    assert "REFERENCES" not in script and "TRIGGER" not in script
    after = after_path(tmp_path / "subscriber.sql")
    assert "ALTER COLUMN \"session_id\" TYPE uuid" in after.read_text(encoding="utf-8")
    pair.tool("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", sub, "-f", str(tmp_path / "subscriber.sql"))
    applied = invoke("fix", "--dsn", pub, "--apply", "--yes", "--no-backup", "--subscribers-ready",
                     "--out", str(tmp_path / "applied"))
    # exit 1: the demo's user findings, which this plan (no --include users) reports and does not repair
    assert applied.exit_code == 1, applied.output
    assert json.loads((tmp_path / "applied" / "apply-log.json").read_text(encoding="utf-8"))["ok"] is True
    wait_for("the subscriber to catch up", lambda: caught_up(pub, f"sub_{case}"))
    pair.tool("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", sub, "-f", str(after))
    with psycopg.connect(sub, autocommit=True) as conn:
        conn.execute(f"ALTER SUBSCRIPTION sub_{case} REFRESH PUBLICATION")
    wait_for("the new tables' copy", lambda: synced(sub))
    wait_for("the subscriber to catch up", lambda: caught_up(pub, f"sub_{case}"))

    with psycopg.connect(sub, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT srrelid::regclass::text FROM pg_subscription_rel ORDER BY 1")]
        assert conn.execute("SELECT pid IS NOT NULL FROM pg_stat_subscription WHERE subname = %s AND relid IS NULL",
                            (f"sub_{case}",)).fetchone()[0]
    assert "chatbot.session_master" in tables
    assert ("yumai_audit.journal" in tables) == (case == "all")
    wait_for("equal row counts", lambda: counts(sub, tables) == counts(pub, tables), timeout=30)
    assert counts(pub, ["chatbot.session_master"])["chatbot.session_master"] >= 400   # the demo has 400 sessions
    log = pair.subscriber_log.read_text(encoding="utf-8", errors="replace")
    assert "does not exist" not in log and "ERROR" not in log, log[-2000:]


def test_dry_run_note_names_the_remedy_unless_ready():
    rows = ["publication p (FOR ALL TABLES)"]
    assert dry_run_notes([], False) == []
    assert "--subscriber-sql" in dry_run_notes(rows, False)[0]
    assert "REFRESH PUBLICATION" in dry_run_notes(rows, True)[0] and "refuses" not in dry_run_notes(rows, True)[0]


def test_subscriber_scripts_follow_the_plan_and_leave_out_fks(db, tmp_path):
    """No replication here: the scripts are made from the plan alone."""
    from yumai_audit import api
    from yumai_audit.config import Config

    build_demo_database(db.conninfo)
    written = api.write_subscriber_scripts(api.plan(db.conninfo, Config()), tmp_path / "s.sql")
    assert written == [tmp_path / "s.sql", tmp_path / "s-after.sql"]
    text = written[0].read_text(encoding="utf-8")
    journal = text.index('"yumai_audit"."journal"')
    master = text.index('"chatbot"."session_master"')
    assert journal < master
    assert "REFERENCES" not in text and "INDEX" not in text
    converted = written[1].read_text(encoding="utf-8")
    assert converted.count("TYPE uuid USING") == 1 and '"chatbot"."recommendations_log"' in converted


# --- which publications the preflight names (no subscriber needed: a publication exists at any wal_level) ---

def _preflight_rows(db, **options) -> list[str]:
    from yumai_audit import api
    from yumai_audit.config import Config

    plan = api.plan(db.conninfo, Config(), api.FixOptions(**options))
    with psycopg.connect(db.conninfo, autocommit=True) as conn:
        return [r[0] for r in conn.execute(plan.step("preflight").statements[0]).fetchall()]


@pytest.mark.parametrize("publication, named", [
    ("FOR TABLE chatbot.conversations_2026_08", "publication p (FOR TABLE chatbot.conversations_2026_08)"),
    ("FOR TABLE chatbot.conversations WITH (publish_via_partition_root = true)",
     "publication p (FOR TABLE chatbot.conversations (publish_via_partition_root))"),
    ("FOR TABLE chatbot.user_feedback, chatbot.users",
     "publication p (FOR TABLE chatbot.user_feedback, chatbot.users)"),
])
def test_explicit_lists_name_a_table_the_plan_writes_or_its_partition(db, publication, named):
    build_demo_database(db.conninfo)
    db.execute(f"CREATE PUBLICATION p {publication}")
    rows = [r for r in _preflight_rows(db) if r.startswith("logical replication")]
    assert len(rows) == 1 and named in rows[0] and "--subscribers-ready" in rows[0]
    assert not [r for r in _preflight_rows(db, subscribers_ready=True) if r.startswith("logical replication")]


def test_a_publication_of_other_tables_is_not_named(db):
    build_demo_database(db.conninfo)
    db.execute("CREATE SCHEMA other; CREATE TABLE other.t (id int PRIMARY KEY); CREATE PUBLICATION p FOR TABLE other.t")
    assert not [r for r in _preflight_rows(db) if r.startswith("logical replication")]
    from yumai_audit import api
    from yumai_audit.config import Config

    assert not [n for n in api.plan(db.conninfo, Config()).notes if n.startswith("logical replication")]

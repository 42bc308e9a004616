"""The replica-lag throttle (auditor/engine/lag.py): the position-to-time measure, and a real hot standby whose
replay is paused during a backfill (`pg_wal_replay_pause()`): the apply waits, says so, and goes on when
replay resumes; held past --wait-timeout, it stops with one line, and the next run resumes and finishes."""
from __future__ import annotations

import json
import re
import threading
import time
from datetime import timedelta

import psycopg
import pytest
from standby import bin_dirs, primary_and_standby
from test_cli import invoke

from yumai_audit import api
from yumai_audit.config import Config
from yumai_audit.demo import build_demo_database
from yumai_audit.engine.lag import WalClock
from yumai_audit.operations import Operation

# the standby reports its replay position every second (default 10 s), so a resumed replay is seen soon
STANDBY = {"wal_receiver_status_interval": "1"}


def test_wal_clock_maps_a_position_back_to_when_it_was_written():
    clock = WalClock()
    clock.add(100.0, 1000)
    clock.add(110.0, 2000)
    assert clock.seconds_behind(2000, 120.0) == 0.0          # replayed everything: idle is not behind
    assert clock.seconds_behind(1500, 120.0) == pytest.approx(15.0)   # written at 105
    assert clock.seconds_behind(1000, 120.0) == pytest.approx(20.0)
    assert clock.seconds_behind(500, 120.0) == pytest.approx(20.0)    # older than the first measure: since it
    assert clock.seconds_behind(500, 120.0, reported=30.0) == pytest.approx(30.0)   # or as the server says
    clock.add(111.0, 1900)                                    # a measure never goes backwards
    assert clock.positions[-1] == 2000


def _pause(standby: str) -> None:
    with psycopg.connect(standby, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")


def _resume(standby: str) -> None:
    with psycopg.connect(standby, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_resume()")


def _demo(primary: str) -> str:
    with psycopg.connect(primary, autocommit=True) as conn:
        conn.execute("CREATE DATABASE yumai")
    dsn = primary.replace("dbname=postgres", "dbname=yumai")
    build_demo_database(dsn)
    return dsn


@pytest.mark.skipif(not bin_dirs(), reason="no PostgreSQL binaries (initdb, pg_basebackup) on this machine")
def test_backfill_waits_for_a_paused_standby_and_goes_on_when_it_resumes(tmp_path):
    with primary_and_standby(STANDBY) as (primary, standby):
        dsn = _demo(primary)
        resume = threading.Timer(4.0, _resume, (standby,))

        def hook(step, _conn):
            """In each backfill batch's transaction: the first pauses replay (resumed 4 s later); each takes
            50 ms, so that the backfill lasts longer than --max-replica-lag."""
            if step.operation is Operation.BACKFILL:
                if not resume.is_alive() and not resume.finished.is_set():
                    _pause(standby)
                    resume.start()
                time.sleep(0.05)

        said: list[str] = []
        try:
            result = api.apply(dsn, Config(), api.FixOptions(batch_size=5, max_replica_lag=0.5, wait_timeout=60),
                               progress=said.append, step_hook=hook, rescan=False, out_dir=tmp_path)
        finally:
            resume.join()
    assert result.ok, said
    waiting = [m for m in said if "waiting for replicas to catch up" in m]
    assert waiting and "(--max-replica-lag 0.5s): standby 'walreceiver'" in waiting[0], said
    assert any("replicas caught up after" in m for m in said), said
    log = json.loads((tmp_path / "apply-log.json").read_text(encoding="utf-8"))["replication"]
    assert log["waits"] >= 1 and log["waited_seconds"] >= 1.0
    assert log["max_lag_seconds"] > 0.5 and log["max_lag_of"].startswith("standby")
    assert log["wal_bytes"] > 0


@pytest.mark.skipif(not bin_dirs(), reason="no PostgreSQL binaries (initdb, pg_basebackup) on this machine")
def test_a_pause_held_past_wait_timeout_stops_with_one_line_and_the_next_run_resumes(tmp_path):
    with primary_and_standby(STANDBY) as (primary, standby):
        dsn = _demo(primary)
        _pause(standby)
        with psycopg.connect(dsn, autocommit=True) as conn:   # WAL the paused standby does not replay
            conn.execute("CREATE TABLE scratch AS SELECT g FROM generate_series(1, 10000) g")
        time.sleep(2.5)   # the standby reports (every second) that it is behind: replay_lag grows
        args = ("fix", "--dsn", dsn, "--apply", "--yes", "--no-backup", "--batch-size", "5",
                "--max-replica-lag", "0.5")
        stopped = invoke(*args, "--wait-timeout", "3", "--out", str(tmp_path / "first"))
        assert stopped.exit_code == 3, stopped.output
        assert "Traceback" not in stopped.output + stopped.stderr
        said = stopped.stderr.strip().splitlines()     # the progress lines, then the error's one line
        line = said[-1]
        assert any("backfill:" in m and "waiting for replicas" in m for m in said[:-1]), said
        assert "stopped after waiting 3s (--wait-timeout 3) for replicas to catch up (--max-replica-lag 0.5s): " \
            "standby 'walreceiver'" in line, line
        assert "run fix --apply again once it has caught up, it resumes" in line
        with psycopg.connect(dsn, autocommit=True) as conn:   # the steps before stay done; the backfill stopped
            journal = dict(conn.execute("SELECT step, outcome FROM yumai_audit.journal").fetchall())
        assert journal["master"] == "done" and journal["backfill:chatbot.conversations_2026_08"] == "failed"
        _resume(standby)
        finished = invoke(*args, "--out", str(tmp_path / "second"))
        # exit 1: the demo's user findings, which this plan (no --include users) reports and does not repair
        assert finished.exit_code == 1, finished.output
        assert int(re.search(r"(\d+) already done", finished.output).group(1)) >= 1   # the first run's steps
        second = json.loads((tmp_path / "second" / "apply-log.json").read_text(encoding="utf-8"))
        assert second["ok"] is True
        backfilled = {o["step"]: o for o in second["steps"]}["backfill:chatbot.conversations_2026_08"]
        assert backfilled["outcome"] == "done" and backfilled["rows"] > 0
        plan = api.plan(dsn, Config())
        assert plan.pending == []


@pytest.mark.parametrize("value, exit_code", [("-1", 2), ("nan", 2)])
def test_max_replica_lag_out_of_range_is_one_line_before_connecting(value, exit_code):
    res = invoke("fix", "--dsn", "postgresql://nobody@127.0.0.1:1/none", "--apply", "--yes", "--max-replica-lag", value)
    assert res.exit_code == exit_code, res.output
    assert "--max-replica-lag must be from 0 up to 604800 seconds" in res.output
    assert "Traceback" not in res.output


class _Primary:
    """What tests/migrated.py's builders use of the `db` fixture, on the throw-away primary."""

    def __init__(self, conninfo: str):
        self.conninfo = conninfo

    def execute(self, query, params=None) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(query, params)


@pytest.mark.skipif(not bin_dirs(), reason="no PostgreSQL binaries (initdb, pg_basebackup) on this machine")
def test_sessions_prune_waits_between_batches_for_a_paused_standby():
    from migrated import add_rows, add_session, build

    from yumai_audit.maintenance.sessions import prune

    with primary_and_standby(STANDBY) as (primary, standby):
        db = _Primary(primary)
        build(db)
        for n in range(1, 5):
            add_session(db, n, start_ago="201 days", ended_ago="200 days", active=False)
            add_rows(db, "chatbot.conversations", n, 3, "200 days")
        _pause(standby)
        db.execute("CREATE TABLE scratch AS SELECT g FROM generate_series(1, 10000) g")   # WAL not replayed
        time.sleep(2.5)
        resume = threading.Timer(3.0, _resume, (standby,))
        resume.start()
        said: list[str] = []
        try:
            r = prune(primary, None, timedelta(days=180), apply=True, batch_size=1, max_replica_lag=0.5,
                      progress=said.append)
        finally:
            resume.join()
    assert (r.deleted_sessions, r.batches) == (4, [1, 1, 1, 1])
    assert any("prune: waiting for replicas to catch up (--max-replica-lag 0.5s): standby" in m for m in said), said
    assert any("prune: replicas caught up after" in m for m in said), said

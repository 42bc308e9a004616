"""Through a real pgbouncer (tests/pgbouncer.py) in transaction and in session mode: the scan finds what
a direct scan finds, `fix --apply` finishes in one run (session mode) or refuses before the first change
(transaction mode), and afterwards no server connection of the pool keeps a setting of the tool."""
from __future__ import annotations

import threading

import psycopg
import pytest
from click.testing import CliRunner
from pgbouncer import BINARY, MISSING, pgbouncer

from yumai_audit.api import scan
from yumai_audit.cli import cli
from yumai_audit.connection import connect, resolve_target
from yumai_audit.demo import build_demo_database
from yumai_audit.pooler import sessions_change

pytestmark = pytest.mark.skipif(BINARY is None, reason=MISSING)

POOL_SIZE = 3


@pytest.fixture(params=["transaction", "session"])
def pool(request, db):
    build_demo_database(db.conninfo)
    with pgbouncer(db.conninfo, request.param, pool_size=POOL_SIZE) as conninfo:
        yield request.param, conninfo


def _findings(result) -> list[dict]:
    return [f.to_dict() for f in result.findings]


def _show_all(conn: psycopg.Connection) -> dict[str, str]:
    return {name: value for name, value, _ in conn.execute("SHOW ALL").fetchall()}


def _defaults(conninfo: str) -> dict[str, str]:
    """SHOW ALL of a fresh direct connection that has loaded PL/pgSQL (a session that ran a DO block lists
    the plpgsql.* settings, at their defaults)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("DO $$BEGIN END$$")
        return _show_all(conn)


def _every_server_session(pooled: str) -> list[dict[str, str]]:
    """SHOW ALL of every server connection the pool holds: POOL_SIZE clients, each inside a transaction
    (so each holds a server connection of its own) until all have read."""
    results: list[dict[str, str]] = []
    barrier = threading.Barrier(POOL_SIZE, timeout=30)
    errors: list[BaseException] = []

    def client() -> None:
        try:
            with psycopg.connect(pooled, prepare_threshold=None) as conn:
                with conn.transaction():
                    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
                    results.append(_show_all(conn) | {"pid": str(pid)})
                    barrier.wait()
        except BaseException as exc:  # noqa: BLE001 - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(POOL_SIZE)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    return results


def test_the_probe_tells_a_transaction_pooler_from_a_session(pool, db):
    mode, pooled = pool
    direct, through = resolve_target(db.conninfo), resolve_target(pooled)
    with connect(direct, autocommit=True) as conn:
        assert sessions_change(conn, lambda: connect(direct, autocommit=True)) is None
    with connect(through, autocommit=True) as conn:
        changed = sessions_change(conn, lambda: connect(through, autocommit=True))
    if mode == "transaction":
        assert changed is not None and changed[0] != changed[1]
    else:
        assert changed is None


def test_scan_and_dry_run_through_the_pool_find_what_a_direct_scan_finds_and_leave_no_setting(pool, db):
    _mode, pooled = pool
    direct = scan(db.conninfo)
    assert len(direct.findings) > 5
    for _ in range(3):   # a prepared statement of ours would collide on a server connection by the third run
        assert _findings(scan(pooled, jobs=2)) == _findings(direct)
    res = CliRunner().invoke(cli, ["fix", "--dsn", pooled])
    assert res.exit_code == 1 and "database error" not in res.output, res.output
    defaults = _defaults(db.conninfo)
    sessions = _every_server_session(pooled)
    assert len({s["pid"] for s in sessions}) == POOL_SIZE
    for seen in sessions:
        del seen["pid"]
        assert {k: v for k, v in seen.items() if defaults.get(k) != v} == {}


def test_apply_finishes_in_session_mode_and_refuses_in_transaction_mode_before_the_first_change(pool, db, tmp_path):
    mode, pooled = pool
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["fix", "--dsn", pooled, "--apply", "--yes", "--out", str(out)])
    if mode == "transaction":
        assert res.exit_code == 2, res.output
        lines = [line for line in res.output.splitlines() if line.startswith("yumai-audit:")]
        assert len(lines) == 1 and "pooler in transaction mode" in lines[0] and "session-mode pool" in lines[0] \
            and "connect directly" in lines[0] and "nothing was changed" in lines[0], res.output
        assert list(out.glob("backup-*.dump")) == []
        assert db.scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'yumai%'") == 0
        assert db.scalar("SELECT to_regclass('chatbot.session_master') IS NULL")
    else:
        assert res.exit_code == 1 and "Verdict: Migrated, bridge on" in res.output, res.output
        assert len(list(out.glob("backup-*.dump"))) == 1
        again = CliRunner().invoke(cli, ["fix", "--dsn", pooled, "--apply", "--yes", "--out", str(tmp_path / "again")])
        assert again.exit_code == 1 and "Nothing to do" in again.output, again.output
        assert db.scalar("SELECT count(*) FROM yumai_audit.journal WHERE outcome IS DISTINCT FROM 'done'") == 0
    defaults = _defaults(db.conninfo)
    for seen in _every_server_session(pooled):
        del seen["pid"]
        assert {k: v for k, v in seen.items() if defaults.get(k) != v} == {}
    # no advisory lock of ours is left on a server connection of the pool
    assert db.scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                     "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())") == 0


@pytest.mark.parametrize("command", [["sessions", "close-idle", "--idle", "30m", "--apply"],
                                     ["sessions", "prune", "--older-than", "30d", "--apply"]],
                         ids=["close-idle", "prune"])
def test_the_maintenance_commands_refuse_a_transaction_pooler_before_the_first_change(db, command):
    build_demo_database(db.conninfo)
    db.execute("CREATE TABLE chatbot.session_master (session_id uuid PRIMARY KEY, session_end timestamptz, "
               "is_active boolean)")
    with pgbouncer(db.conninfo, "transaction", pool_size=POOL_SIZE) as pooled:
        res = CliRunner().invoke(cli, [*command, "--dsn", pooled])
        assert res.exit_code == 2, res.output
        line = [line for line in res.output.splitlines() if line.startswith("yumai-audit:")]
        assert len(line) == 1 and f"sessions {command[1]} needs one server session" in line[0] \
            and "session-mode pool" in line[0], res.output
        for seen in _every_server_session(pooled):
            assert seen["lock_timeout"] == _defaults(db.conninfo)["lock_timeout"]

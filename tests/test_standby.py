"""A scan on a hot standby cancelled by a replication conflict: one line naming the cause and the remedy."""
from __future__ import annotations

import psycopg
import pytest
from standby import bin_dirs, primary_and_standby, wait_replayed
from test_cli import invoke, one_line_error

from yumai_audit import cli as cli_module
from yumai_audit.errors import database_error_line


def test_recovery_conflict_behind_a_lost_connection_is_named():
    """A conflict in a savepoint ends the session; psycopg then reports the rollback's "connection is lost",
    with the 40001 error as its context: the line names the conflict, not the lost connection."""
    conflict = psycopg.errors.SerializationFailure("terminating connection due to conflict with recovery")
    try:
        try:
            raise conflict
        except psycopg.Error:
            raise psycopg.OperationalError("the connection is lost")
    except psycopg.Error as exc:
        line = database_error_line(exc)
    assert "conflict with recovery" in line and "40001" in line
    assert "hot_standby_feedback" in line and "max_standby_streaming_delay" in line
    assert "connection is lost" not in line
    assert database_error_line(psycopg.OperationalError("the connection is lost")) == \
        "database error: the connection is lost"


class _Conflicting:
    """A progress printer that, at the first line, makes the primary remove row versions the standby's scan
    still sees (UPDATE + VACUUM, replayed at once with max_standby_streaming_delay = 0), bounded to 20 rounds."""

    def __init__(self, primary: str, standby: str):
        self.primary, self.standby, self.rounds = primary, standby, None

    def __call__(self, _message: str) -> None:
        if self.rounds is not None:
            return
        for self.rounds in range(1, 21):
            with psycopg.connect(self.primary, autocommit=True) as conn:
                conn.execute("UPDATE t SET session_id = session_id")
                conn.execute("VACUUM t")
            wait_replayed(self.primary, self.standby)
            with psycopg.connect(self.standby, autocommit=True) as conn:
                if conn.execute("SELECT confl_snapshot FROM pg_stat_database_conflicts "
                                "WHERE datname = current_database()").fetchone()[0]:
                    return

    def close(self) -> None:
        pass


@pytest.mark.skipif(not bin_dirs(), reason="no PostgreSQL binaries (initdb, pg_basebackup) on this machine")
def test_scan_on_a_standby_cancelled_by_a_recovery_conflict(tmp_path, monkeypatch):
    with primary_and_standby({"max_standby_streaming_delay": "0", "hot_standby_feedback": "off"}) as (primary, standby):
        with psycopg.connect(primary, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, session_id uuid)")
            conn.execute("INSERT INTO t SELECT g, gen_random_uuid() FROM generate_series(1, 2000) g")
        wait_replayed(primary, standby)
        printer = _Conflicting(primary, standby)
        monkeypatch.setattr(cli_module, "progress_printer", lambda _enabled: printer)
        result = invoke("scan", "--dsn", standby, "--out", str(tmp_path), "--progress")
    assert result.exit_code == 2, result.output
    line = one_line_error(result)
    assert "conflict with recovery" in line and "SQLSTATE 40001" in line
    assert "hot_standby_feedback" in line and "max_standby_streaming_delay" in line

"""`yumai-audit demo --keep`: the embedded server outlives the demo's process, with the demo database before
and after its migration, so a newcomer can run scan and fix by hand; `demo --stop` ends it."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

YUMAI = str(Path(sys.executable).parent / "yumai-audit")


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([YUMAI, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def _tables(dsn: str) -> int:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        return conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'chatbot' "
                            "AND tablename = 'session_master'").fetchone()[0]


def test_demo_keep_leaves_a_server_to_scan_and_stop(tmp_path):
    demo = _run("demo", "--keep", "--out", str(tmp_path / "report"), cwd=tmp_path)
    stop = re.search(r"^Stop it: yumai-audit demo --stop (\S+)$", demo.stdout, re.M)
    try:
        assert demo.returncode == 0, demo.stderr
        before = re.search(r"before the migration: export DATABASE_URL='([^']+)'", demo.stdout).group(1)
        after = re.search(r"after the migration:  export DATABASE_URL='([^']+)'", demo.stdout).group(1)
        assert stop, demo.stdout
        # the demo's process has ended: the server it started still answers
        assert (_tables(before), _tables(after)) == (0, 1)
        scan = _run("scan", "--dsn", before, "--out", "scan", cwd=tmp_path)
        assert scan.returncode == 1, scan.stderr          # the planted defects
        assert "missing_master_rows (1 finding)" in scan.stdout
        fix = _run("fix", "--dsn", before, "--include", "users", "--missing-users", "null", "--apply", "--yes",
                   "--no-backup", "--out", "fix", cwd=tmp_path)
        assert "Verdict: Migrated" in fix.stdout, fix.stdout + fix.stderr
        assert _tables(before) == 1
    finally:
        if stop:
            stopped = _run("demo", "--stop", stop.group(1), cwd=tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    assert not Path(stop.group(1)).exists()
    with pytest.raises(psycopg.OperationalError):
        _tables(after)


def test_demo_stop_refuses_a_folder_it_did_not_make(tmp_path):
    result = _run("demo", "--stop", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"yumai-audit: error: {tmp_path} is not the data directory of a server "
                                     "`yumai-audit demo --keep` started")
    assert tmp_path.exists()

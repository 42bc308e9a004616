"""A real pgbouncer (Debian's package) in front of the test server, for the pooler tests.

Started on a free port of 127.0.0.1 in the pool mode asked for, as a non-root user (pgbouncer refuses
root): the owner of the server's socket directory for the embedded server (its data directory is
readable by that user only), else `nobody`. Its configuration lives in a temporary directory that
user can read; clients are trusted (the test server trusts them too). Stopped and removed afterwards.
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
from collections.abc import Iterator
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

BINARY = shutil.which("pgbouncer") or next(
    (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None)
MISSING = "pgbouncer is not installed (apt-get install pgbouncer; .ci/run installs it)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as(server_host: str) -> pwd.struct_passwd | None:
    """The user pgbouncer runs as (None: the current one, when not root)."""
    if os.geteuid() != 0:
        return None
    if server_host.startswith("/") and os.stat(server_host).st_uid != 0:
        return pwd.getpwuid(os.stat(server_host).st_uid)
    return pwd.getpwnam("nobody")


@contextlib.contextmanager
def pgbouncer(server_conninfo: str, pool_mode: str, users: tuple[str, ...] = ("postgres",),
              pool_size: int = 3) -> Iterator[str]:
    """Yield a conninfo of the same database through a pgbouncer in `pool_mode` (transaction, session)."""
    if BINARY is None:
        raise RuntimeError(MISSING)
    params = conninfo_to_dict(server_conninfo)
    host = params.get("host") or "/tmp"
    port = params.get("port") or "5432"
    user = _run_as(host)
    base = Path(tempfile.mkdtemp(prefix="yumai-pgbouncer-"))
    listen = _free_port()
    (base / "users.txt").write_text("".join(f'"{u}" ""\n' for u in users), encoding="utf-8")
    (base / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={host} port={port}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {listen}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {base / 'users.txt'}\n"
        f"pool_mode = {pool_mode}\ndefault_pool_size = {pool_size}\nmax_client_conn = 200\n"
        f"logfile = {base / 'pgbouncer.log'}\npidfile = {base / 'pgbouncer.pid'}\n"
        "ignore_startup_parameters = extra_float_digits\n", encoding="utf-8")
    if user is not None:
        for path in (base, *base.iterdir()):
            os.chown(path, user.pw_uid, user.pw_gid)
    base.chmod(0o755)
    cmd = [BINARY, str(base / "pgbouncer.ini")]
    if user is not None:
        cmd = ["runuser", "-u", user.pw_name, "--", *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", listen)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (base / "pgbouncer.log").read_text(errors="replace") if (base / "pgbouncer.log").exists() else ""
                out = proc.stdout.read().decode(errors="replace") if proc.stdout and proc.poll() is not None else ""
                raise RuntimeError(f"pgbouncer did not start within 20 s: {out} {log}")
            time.sleep(0.05)
        pooled = {k: v for k, v in params.items() if k not in ("host", "port", "hostaddr", "password")}
        yield make_conninfo(**pooled, host="127.0.0.1", port=str(listen))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(base, ignore_errors=True)

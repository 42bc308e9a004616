"""Connection poolers: whether a connection keeps one server session, told from what the server shows.

A pooler in transaction (or statement) mode, pgbouncer's most common setup, gives a client connection
a server session for one transaction only, then hands that session to another client. What lives in a
session (a plain SET, a session advisory lock, a prepared statement, CREATE INDEX CONCURRENTLY's
several transactions) then reaches, or is left to, another client. A session-mode pool keeps one
server session per client connection and resets it (pgbouncer: `server_reset_query = DISCARD ALL`)
when the client leaves.

The probe does not trust a port number or the pid libpq reports (pgbouncer sends its own cancel key):
it asks the server for `pg_backend_pid()` on the connection, holds a transaction open on a second
connection, and asks again. The second connection taking the first one's server session, or the first
one answering from another session while the second holds a transaction, is a transaction pooler:
a pooler reuses its most recently freed server session first (pgbouncer's default), which is the one
the first connection has just released.
"""
from __future__ import annotations

from collections.abc import Callable

import psycopg

from .errors import AuditError


class TransactionPooler(AuditError):
    """A command that needs one server session for the whole run reached a transaction pooler."""


def server_pid(conn: psycopg.Connection) -> int:
    """The pid of the server process that answers this statement (not libpq's: a pooler sends its own)."""
    pid = _pid(conn)
    if not conn.autocommit:
        conn.commit()
    return pid


def _pid(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None    # a SELECT without FROM returns its one row
    return int(row[0])


def sessions_change(conn: psycopg.Connection, open_other: Callable[[], psycopg.Connection]) -> tuple[int, int] | None:
    """(the server pid before, the one after) when `conn`'s transactions run in different server
    sessions (a pooler in transaction or statement mode); None when it keeps its session."""
    first = server_pid(conn)
    with open_other() as other:
        with other.transaction():
            theirs = _pid(other)
            again = server_pid(conn)
    if theirs == first:
        return first, again
    if again != first:
        return first, again
    return None


def require_session(conn: psycopg.Connection, open_other: Callable[[], psycopg.Connection], command: str) -> None:
    """Refuse (one line, with the remedy) when `conn` goes through a transaction pooler: `command`
    keeps session state (settings, an advisory lock, CONCURRENTLY statements) for its whole run."""
    changed = sessions_change(conn, open_other)
    if changed is None:
        return
    before, after = changed
    raise TransactionPooler(
        f"{command} needs one server session for its whole run, and this connection goes through a connection "
        f"pooler in transaction mode (a second client got this connection's server process {before} between two "
        f"of its transactions; the next one ran in process {after}): connect directly to PostgreSQL, or through a "
        "session-mode pool (pgbouncer: pool_mode = session), then run again; nothing was changed")

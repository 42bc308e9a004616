"""Errors that end a command with exit code 2 and one clear line (usage, connection, configuration),
those with exit code 3 (a run that changes the database did not finish: DidNotFinish), and the
driver's errors the CLI shows as one line. docs/outputs.md lists the exit codes."""
from __future__ import annotations

import psycopg

# what the driver raises for a database problem: the CLI shows it as one line (database_error_line)
DatabaseError = psycopg.Error


class AuditError(Exception):
    """A problem the user must fix before the tool can run; shown as one line, exit code 2."""

    exit_code = 2


class ConfigError(AuditError):
    """The configuration file, a flag or an environment variable is invalid."""


class ConnectionFailed(AuditError):
    """The server could not be reached or refused the login."""


class NothingToAudit(AuditError):
    """The database has no table the tool could audit."""


class DidNotFinish(AuditError):
    """A run that changes the database stopped before its end (a step failed, a lock or a wait was not
    had in time, a gate stopped it): what is done stays done, nothing is half-done, a rerun resumes.
    Exit code 3, apart from 2 (the run could not start: usage, connection, configuration, preflight)
    and 1 (it finished, with error findings left)."""

    exit_code = 3


class GateClosed(DidNotFinish):
    """--bridge none: the application wrote sessions without registering them; the run stopped before
    the foreign key (nothing half-changed), a later run resumes there."""


class ConnectionEnded(DidNotFinish):
    """The server ended the connection (a restart, a terminated backend, a lost network) during a run
    that changes the database; the message says what was done and that a rerun resumes."""


# SQLSTATEs of a session the server ends: administrator command (pg_terminate_backend, a fast or smart
# shutdown), crash shutdown, starting up or shutting down, idle-session and idle-in-transaction timeouts
SESSION_ENDED = ("57P01", "57P02", "57P03", "57P05", "25P03")


def connection_ended(exc: BaseException, conn: psycopg.Connection | None = None) -> bool:
    """Whether `exc` means the connection is gone, not that a statement failed: an error class 08 or a
    SQLSTATE of SESSION_ENDED; with `conn` (the connection it was raised on), that connection closed or
    broken; without it, a driver error without SQLSTATE (the connection is lost, closed, the server
    closed it unexpectedly)."""
    state = getattr(exc, "sqlstate", None)
    if state is not None and (state.startswith("08") or state in SESSION_ENDED):
        return True
    if conn is not None:
        return conn.closed or conn.broken
    return isinstance(exc, psycopg.OperationalError) and state is None


def ending_error(exc: BaseException) -> BaseException:
    """The error that says why a connection ended: the first in `exc`'s chain with a SQLSTATE of
    SESSION_ENDED or class 08 (the server's own words, e.g. "terminating connection due to administrator
    command"), rather than a later "the connection is closed"; else `exc`."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        state = getattr(current, "sqlstate", None)
        if state and (state.startswith("08") or state in SESSION_ENDED):
            return current
        current = current.__cause__ or current.__context__
    return exc


# SQLSTATEs PostgreSQL uses when a hot standby cancels a query or ends a session to go on replaying WAL
RECOVERY_CONFLICT = ("40001", "57P04")


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (its type's name when the message is empty)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def database_error_line(exc: BaseException) -> str:
    """One line for a database error: a recovery conflict on a standby is named with its remedy,
    whatever the error finally raised was (a conflict in a savepoint ends the connection, so the
    error that surfaces is often "the connection is lost", with the conflict as its cause)."""
    seen: set[int] = set()
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    for e in chain:
        state = getattr(e, "sqlstate", None)
        text = str(e)
        if state in RECOVERY_CONFLICT or "conflict with recovery" in text:
            detail = getattr(getattr(e, "diag", None), "message_detail", None)
            return ("the standby cancelled the scan: a conflict with recovery "
                    f"(SQLSTATE {state or '40001'}, serialization failure"
                    + (f": {detail.strip().rstrip('.')}" if detail else "") + "); "
                    "WAL replay removed row versions the scan's snapshot still needed. Remedy: on the standby "
                    "set hot_standby_feedback = on, or raise max_standby_streaming_delay (-1 waits without "
                    "limit) for the audit, or scan the primary")
    return f"database error: {first_line(exc)}"

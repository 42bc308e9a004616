"""The session protocol for applications, after cutover: register a session first, then write its rows.

    from yumai_audit.lifecycle import start_session, end_session

    sid = start_session(conn, user_id=42)          # INSERT INTO chatbot.session_master ... RETURNING
    conn.execute("INSERT INTO chatbot.conversations (session_id, ...) VALUES (%s, ...)", (sid, ...))
    end_session(conn, sid)                          # session_end = now, is_active = false

`conn` is a psycopg connection or a SQLAlchemy `Connection` (on the psycopg driver). The caller owns
the transaction: nothing here commits, so the registration and the first rows can share one
transaction (the foreign key sees the master row inside it). Names go through `psycopg.sql`.
"""
from __future__ import annotations

import uuid
from typing import Any

from psycopg import sql

from .catalog import QualifiedName

DEFAULT_MASTER = "chatbot.session_master"


class UnknownSession(LookupError):
    """end_session was given a session id that the master does not have."""


def _master(master: str | QualifiedName) -> QualifiedName:
    return master if isinstance(master, QualifiedName) else QualifiedName.parse(master, "master")


def _run(conn: Any, query: sql.Composable, params: dict) -> list[tuple]:
    """Execute on a psycopg connection or a SQLAlchemy Connection; return the rows."""
    sa_connections: tuple[type, ...]
    try:
        from sqlalchemy.engine import Connection as SAConnection
        sa_connections = (SAConnection,)
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency
        sa_connections = ()
    if isinstance(conn, sa_connections):
        driver = conn.connection.driver_connection
        text = query.as_string(driver if hasattr(driver, "adapters") else None)
        return [tuple(r) for r in conn.exec_driver_sql(text, params).fetchall()]
    return conn.execute(query, params).fetchall()


def start_session(conn: Any, user_id: int | None = None, *, session_id: uuid.UUID | None = None,
                  master: str | QualifiedName = DEFAULT_MASTER, key_column: str = "session_id",
                  user_column: str = "user_id") -> uuid.UUID:
    """Register a new session in the master and return its id; write the session's rows after this.

    The id is generated here (uuid4) unless given, so the master needs no column default.
    """
    name = _master(master)
    sid = session_id or uuid.uuid4()
    query = sql.SQL("INSERT INTO {} ({}, {}) VALUES (%(sid)s, %(uid)s) RETURNING {}").format(
        sql.Identifier(name.schema, name.name), sql.Identifier(key_column), sql.Identifier(user_column),
        sql.Identifier(key_column))
    value = _run(conn, query, {"sid": sid, "uid": user_id})[0][0]
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def end_session(conn: Any, session_id: uuid.UUID | str, *, master: str | QualifiedName = DEFAULT_MASTER,
                key_column: str = "session_id") -> None:
    """Mark a session ended (`session_end` = now, `is_active` = false). Ending it twice keeps the first end.

    Raises UnknownSession when the master has no such session.
    """
    name = _master(master)
    query = sql.SQL(
        "UPDATE {} SET session_end = coalesce(session_end, CURRENT_TIMESTAMP), is_active = false "
        "WHERE {} = %(sid)s RETURNING 1").format(sql.Identifier(name.schema, name.name), sql.Identifier(key_column))
    sid = session_id if isinstance(session_id, uuid.UUID) else uuid.UUID(str(session_id))
    if not _run(conn, query, {"sid": sid}):
        raise UnknownSession(f"no session {sid} in {name}")

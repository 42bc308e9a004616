"""The session protocol for applications, after cutover: register a session first, then write its rows.

    from yumai_audit.lifecycle import start_session, end_session

    sid = start_session(conn, user_id=42)          # INSERT INTO chatbot.session_master ... RETURNING
    conn.execute("INSERT INTO chatbot.conversations (session_id, ...) VALUES (%s, ...)", (sid, ...))
    end_session(conn, sid)                          # session_end = now, is_active = false

`conn` is where the statement runs:

- a psycopg 3 connection, a SQLAlchemy `Connection` or an ORM `Session` (on the psycopg driver): the
  caller owns the transaction. Nothing here commits, so the registration and the first rows can share
  one transaction (the foreign key sees the master row inside it);
- a SQLAlchemy `Engine`, or a URL: `postgresql+psycopg://...` (a SQLAlchemy URL, str or `URL`) or a
  libpq DSN as `--dsn` takes it (`postgresql://...`, `host=... dbname=...`): the call runs in a
  transaction of its own and commits it. One engine (with its pool) is kept per URL; `dispose_engines()`
  closes them.

SQLAlchemy is imported only for what is not a psycopg connection. Names go through `psycopg.sql`.
"""
from __future__ import annotations

import threading
import uuid
from typing import Any

import psycopg
from psycopg import sql

from .catalog import QualifiedName

DEFAULT_MASTER = "chatbot.session_master"


class UnknownSession(LookupError):
    """end_session was given a session id that the master does not have."""


def _master(master: str | QualifiedName) -> QualifiedName:
    return master if isinstance(master, QualifiedName) else QualifiedName.parse(master, "master")


def _run(conn: Any, query: sql.Composed, params: dict) -> list[tuple]:
    """Execute on any of the connections the module takes (see its docstring); return the rows."""
    if isinstance(conn, (psycopg.Connection, psycopg.Cursor)):
        return conn.execute(query, params).fetchall()
    import sqlalchemy
    from sqlalchemy import orm

    if isinstance(conn, (str, sqlalchemy.engine.URL)):
        conn = _engine(conn)
    if isinstance(conn, sqlalchemy.engine.Engine):
        with conn.begin() as connection:       # a transaction of its own, committed on the way out
            return _run(connection, query, params)
    if isinstance(conn, orm.Session):
        conn = conn.connection()                # the session's transaction (begun here when none is)
    if isinstance(conn, sqlalchemy.engine.Connection):
        driver = conn.connection.driver_connection
        text = query.as_string(driver if isinstance(driver, psycopg.Connection) else None)
        return [tuple(r) for r in conn.exec_driver_sql(text, params).fetchall()]
    raise TypeError(f"not a connection: {type(conn).__name__} (a psycopg connection, a SQLAlchemy Connection, "
                    "Session or Engine, or a database URL)")


_ENGINES: dict[str, Any] = {}
_ENGINES_LOCK = threading.Lock()


def _engine(url: Any) -> Any:
    """The engine kept for `url`: a SQLAlchemy URL (`postgresql+psycopg://`) as SQLAlchemy reads it; a libpq
    DSN (`postgresql://`, `key=value`) through psycopg itself, so that it means what it means to `--dsn`."""
    import sqlalchemy

    key = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            scheme = key.split("://", 1)[0] if "://" in key else ""
            if "+" in scheme:
                engine = sqlalchemy.create_engine(url)
            else:
                engine = sqlalchemy.create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(key))
            _ENGINES[key] = engine
        return engine


def dispose_engines() -> None:
    """Close the pooled connections of the engines made for URLs (they are made again when needed)."""
    with _ENGINES_LOCK:
        engines = list(_ENGINES.values())
        _ENGINES.clear()
    for engine in engines:
        engine.dispose()


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

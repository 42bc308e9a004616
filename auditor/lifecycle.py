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

The master's key may be a uuid (yumai's session ids) or an integer (a device id, an order number). A uuid
is generated here when none is given; an integer comes from the caller (`session_id=`) or from the key
column's default or identity (the value PostgreSQL generated is returned). What the key is comes from the
catalog, read only when it is needed (no key given to start_session, a key given as text to end_session).

SQLAlchemy is imported only for what is not a psycopg connection. Names go through `psycopg.sql`.
"""
from __future__ import annotations

import threading
import uuid
from typing import Any

import psycopg
from psycopg import sql

from .catalog import QualifiedName
from .keytype import KeyType, of_typname

DEFAULT_MASTER = "chatbot.session_master"


Key = uuid.UUID | int


class UnknownSession(LookupError):
    """end_session was given a session id that the master does not have."""


class NoKeyValue(ValueError):
    """start_session was given no key for a master whose key is neither a uuid nor has a default."""


_KEY_COLUMN = sql.SQL(
    "SELECT t.typname, a.atthasdef OR a.attidentity <> '' FROM pg_attribute a "
    "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
    "JOIN pg_type t ON t.oid = a.atttypid "
    "WHERE n.nspname = %(schema)s AND c.relname = %(table)s AND a.attname = %(column)s AND NOT a.attisdropped")


def _key_column(conn: Any, name: QualifiedName, key_column: str) -> tuple[KeyType, bool]:
    """The master's key type and whether its key column has a default or is an identity (one catalog query)."""
    found = _run(conn, _KEY_COLUMN, {"schema": name.schema, "table": name.name, "column": key_column})
    if not found:
        raise LookupError(f"{name} has no column {key_column}")
    key_type = of_typname(found[0][0])
    if key_type is None:
        raise LookupError(f"{name}.{key_column} is of type {found[0][0]}: not a key type (uuid, bigint, integer, "
                          "smallint)")
    return key_type, bool(found[0][1])


def _parse(text: str, key_type: KeyType) -> Key:
    """A key given as text, as the key type reads it (ValueError, before any statement, when it is not one)."""
    try:
        if key_type.is_uuid:
            return uuid.UUID(text.strip())
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a {key_type.name}") from None
    low, high = key_type.bounds
    if not low <= value <= high:
        raise ValueError(f"{text!r} is out of range for {key_type.name}")
    return value


def _master(master: str | QualifiedName) -> QualifiedName:
    return master if isinstance(master, QualifiedName) else QualifiedName.parse(master, "master")


def _run(conn: Any, query: sql.SQL | sql.Composed, params: dict) -> list[tuple]:
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


def start_session(conn: Any, user_id: int | None = None, *, session_id: Key | str | None = None,
                  master: str | QualifiedName = DEFAULT_MASTER, key_column: str = "session_id",
                  user_column: str = "user_id") -> Key:
    """Register a new session (a device, an order: a key of the master) and return its key; write its rows
    after this.

    `session_id` is the key to register. Without it: a uuid master gets a uuid4 generated here (the master
    needs no column default); an integer master gets its key column's default or identity value, and
    NoKeyValue is raised when the column has neither.
    """
    name = _master(master)
    table, key, user = (sql.Identifier(name.schema, name.name), sql.Identifier(key_column),
                        sql.Identifier(user_column))
    if session_id is None:
        key_type, has_default = _key_column(conn, name, key_column)
        if key_type.is_uuid:
            session_id = uuid.uuid4()
        elif not has_default:
            raise NoKeyValue(f"{name}.{key_column} is {key_type.name} without a default: give the key to register "
                             "(start_session(..., session_id=...))")
    if session_id is None:
        query = sql.SQL("INSERT INTO {} ({}) VALUES (%(uid)s) RETURNING {}").format(table, user, key)
    else:
        query = sql.SQL("INSERT INTO {} ({}, {}) VALUES (%(sid)s, %(uid)s) RETURNING {}").format(table, key, user, key)
    value = _run(conn, query, {"sid": session_id, "uid": user_id})[0][0]
    return value if isinstance(value, (uuid.UUID, int)) else uuid.UUID(str(value))


def end_session(conn: Any, session_id: Key | str, *, master: str | QualifiedName = DEFAULT_MASTER,
                key_column: str = "session_id") -> None:
    """Mark a session ended (`session_end` = now, `is_active` = false). Ending it twice keeps the first end.

    A key given as text is read as the master's key type (ValueError when it is not one). Raises
    UnknownSession when the master has no such session.
    """
    name = _master(master)
    query = sql.SQL(
        "UPDATE {} SET session_end = coalesce(session_end, CURRENT_TIMESTAMP), is_active = false "
        "WHERE {} = %(sid)s RETURNING 1").format(sql.Identifier(name.schema, name.name), sql.Identifier(key_column))
    sid = _parse(session_id, _key_column(conn, name, key_column)[0]) if isinstance(session_id, str) else session_id
    if not _run(conn, query, {"sid": sid}):
        raise UnknownSession(f"no session {sid} in {name}")

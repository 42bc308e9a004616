"""Finding the database and connecting to it, without ever showing a password.

A DSN is a `postgresql://` URL (SQLAlchemy parses and redacts it) or a libpq `key=value` string.
With neither `--dsn` nor `DATABASE_URL`, libpq's own `PG*` environment variables apply.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .errors import ConnectionFailed, ConfigError

_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)


@dataclass(frozen=True)
class Target:
    """Where to connect: a libpq conninfo (may hold a password) and a display form (never does)."""

    conninfo: str
    display: str
    password: str | None

    def scrub(self, text: str) -> str:
        """Remove the password from a message that a library produced."""
        if self.password:
            text = text.replace(self.password, "***")
        return text


def resolve_target(dsn: str | None) -> Target:
    if not dsn:
        return Target(conninfo="", display="(libpq environment: PGHOST, PGDATABASE, ...)", password=None)
    if _URL.match(dsn):
        try:
            url = make_url(dsn)
        except ArgumentError:
            raise ConfigError("--dsn: not a valid postgresql:// URL") from None
        if not url.drivername.startswith("postgresql") and url.drivername != "postgres":
            raise ConfigError(f"--dsn: only postgresql:// URLs are supported, not {url.drivername}://")
        url = url.set(drivername="postgresql")
        return Target(
            conninfo=url.render_as_string(hide_password=False),
            display=url.render_as_string(hide_password=True),
            password=url.password,
        )
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise ConfigError("--dsn: not a valid libpq connection string") from None
    password = params.get("password")
    shown = {k: ("***" if k == "password" else v) for k, v in params.items()}
    return Target(conninfo=make_conninfo(**params), display=make_conninfo(**shown), password=password)


def connect(target: Target, *, autocommit: bool = False, application_name: str = "yumai-audit") -> psycopg.Connection:
    try:
        return psycopg.connect(
            target.conninfo, autocommit=autocommit, application_name=application_name, connect_timeout=10
        )
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConnectionFailed(f"cannot connect to {target.display}: {target.scrub(first)}") from None

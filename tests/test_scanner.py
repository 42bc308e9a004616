"""The scan writes nothing: it runs as a SELECT-only login whose transactions are read-only."""
from __future__ import annotations

import uuid

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from yumai_audit.api import scan
from yumai_audit.config import Config
from yumai_audit.demo import EXPECTED, build_demo_database

SNAPSHOT = """
SELECT (SELECT md5(string_agg(c::text, ',' ORDER BY c::text)) FROM chatbot.conversations c),
       (SELECT md5(string_agg(r::text, ',' ORDER BY r::text)) FROM chatbot.recommendations_log r),
       (SELECT md5(string_agg(i::text, ',' ORDER BY i::text)) FROM chatbot.user_interactions i),
       (SELECT count(*) FROM pg_class), (SELECT count(*) FROM pg_namespace),
       (SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables)
"""


def test_scan_as_select_only_read_only_role_changes_nothing(db):
    build_demo_database(db.conninfo)
    role = f"yumai_reader_{uuid.uuid4().hex[:8]}"
    ident = sql.Identifier(role)
    db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
    try:
        db.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(db.name), ident))
        db.execute(sql.SQL("GRANT USAGE ON SCHEMA chatbot TO {}").format(ident))
        db.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA chatbot TO {}").format(ident))
        db.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(ident))
        params = conninfo_to_dict(db.conninfo)
        params["user"] = role
        params.pop("password", None)
        reader = make_conninfo(**params)
        with psycopg.connect(reader, autocommit=True) as conn:
            assert conn.execute("SHOW default_transaction_read_only").fetchone()[0] == "on"
        db.execute("SELECT pg_stat_force_next_flush()") if db.server.version_num >= 150000 else None
        before = db.fetchall(SNAPSHOT)
        result = scan(reader, Config())
        after = db.fetchall(SNAPSHOT)
        assert before == after
        counted = {(f.check, f.table, f.column): (f.rows, f.keys) for f in result.findings
                   if (f.check, f.table, f.column) in EXPECTED}
        assert counted == EXPECTED
    finally:
        db.execute(sql.SQL("DROP OWNED BY {}").format(ident))
        db.execute(sql.SQL("DROP ROLE {}").format(ident))

"""Watch benchmark (not a test): the cost of `watch --since` grows with the new rows, not the table.

Builds the demo's schema with N old messages (August to October 2026, in the monthly partitions),
N/4 old clicks, and a fixed batch of new rows (in November, the default partition), at two sizes
(N and 4N). Times the full `scan` and `watch --since 2026-11-15` on each and prints the ratios:
the scan's time grows with N, the watch's stays about flat.

    python benchmarks/watch.py                          # embedded PostgreSQL 18
    python benchmarks/watch.py --dsn postgresql://postgres@127.0.0.1:5432/postgres
    python benchmarks/watch.py --messages 100000
"""
from __future__ import annotations

import argparse
import contextlib
import time
import uuid
from datetime import datetime, timezone

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from yumai_audit.api import scan
from yumai_audit.config import Config
from yumai_audit.connection import resolve_target
from yumai_audit.demo import SCHEMA
from yumai_audit.scan.watch import watch

NEW = 2000
SINCE = datetime(2026, 11, 15, tzinfo=timezone.utc)

DATA = """
INSERT INTO chatbot.users (display_name) SELECT 'user ' || g FROM generate_series(1, 1000) g;
INSERT INTO chatbot.conversations (session_id, user_id, role, message, created_at)
SELECT md5('s' || (g / 10))::uuid, 1 + g %% 1000, 'user', 'm',
       timestamptz '2026-08-01 00:00+00' + (g::float / %(n)s) * interval '91 days'
FROM generate_series(1, %(n)s) g;
INSERT INTO chatbot.user_interactions (session_id, user_id, interaction_type, created_at)
SELECT md5('s' || (g * 4 / 10))::uuid, 1 + g %% 1000, 'click',
       timestamptz '2026-08-01 00:00+00' + (g::float * 4 / %(n)s) * interval '91 days'
FROM generate_series(1, %(n)s / 4) g;
CREATE INDEX ON chatbot.conversations (session_id);
-- new rows: messages and clicks of known sessions, a few orphans
INSERT INTO chatbot.conversations (session_id, user_id, role, message, created_at)
SELECT md5('s' || g)::uuid, 1, 'user', 'new', timestamptz '2026-11-20 00:00+00' + g * interval '1 second'
FROM generate_series(1, %(new)s) g;
INSERT INTO chatbot.user_interactions (session_id, user_id, interaction_type, created_at)
SELECT CASE WHEN g %% 100 = 0 THEN md5('ghost' || g)::uuid ELSE md5('s' || g)::uuid END, 1, 'click',
       timestamptz '2026-11-20 00:00+00' + g * interval '1 second'
FROM generate_series(1, %(new)s) g;
ANALYZE;
"""


@contextlib.contextmanager
def database(admin: str):
    name = f"yumai_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(admin)
    params["dbname"] = name
    try:
        yield make_conninfo(**params)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def timed(fn) -> tuple[float, object]:
    started = time.monotonic()
    value = fn()
    return time.monotonic() - started, value


def measure(admin: str, messages: int) -> tuple[float, float, int]:
    with database(admin) as conninfo:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(SCHEMA)
            for statement in filter(str.strip, DATA.split(";")):
                conn.execute(statement, {"n": messages, "new": NEW})
        config = Config(checks=("orphaned_session_ids", "null_session_ids", "orphaned_user_ids"))
        scan(conninfo, config)            # warm the cache once
        t_scan, _ = timed(lambda: scan(conninfo, config))
        t_watch, result = timed(lambda: watch(conninfo, config, SINCE))
        orphans = sum(f.rows or 0 for f in result.findings if f.check == "orphaned_session_ids")
        return t_scan, t_watch, orphans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="a server's maintenance database (default: an embedded PostgreSQL 18)")
    parser.add_argument("--messages", type=int, default=200_000)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.dsn:
            admin = resolve_target(args.dsn).conninfo
        else:
            from yumai_audit.embedded import embedded_server
            admin = resolve_target(stack.enter_context(embedded_server())).conninfo
        rows = []
        for n in (args.messages, 4 * args.messages):
            t_scan, t_watch, orphans = measure(admin, n)
            rows.append((n, t_scan, t_watch))
            print(f"{n:>9} old messages: scan {t_scan:6.2f}s   watch {t_watch:6.3f}s   "
                  f"(watch found {orphans} new orphaned rows of {NEW} new clicks)")
        (n1, s1, w1), (n2, s2, w2) = rows
        print(f"old data x{n2 // n1}: scan time x{s2 / s1:.1f}, watch time x{w2 / w1:.1f}; "
              f"watch/scan at the larger size: 1/{s2 / w2:.0f}")


if __name__ == "__main__":
    main()

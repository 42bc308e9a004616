"""A yumai-shaped database at a scale factor, generated server-side with generate_series.

The demo's schema (`yumai_audit.demo.SCHEMA`): `chatbot.conversations` range-partitioned by month
(here twelve monthly partitions and a default one), `user_interactions` (uuid key, indexed),
`recommendations_log` (varchar key), `user_feedback`, `users`; no session master yet.

Scale 1 is 20,000 sessions; scale 50 is 1M sessions, 3M messages and 4.2M rows in the key tables:
per session 3 messages on average, 0.6 interactions, 0.4 recommendations and 0.2 feedback rows.
The defects are the demo's kinds, `scale` times the demo's counts (EXPECTED is derived from them):
orphaned session ids in three tables, malformed and non-canonical text keys, NULL keys, sessions
with conflicting users and rows naming users that do not exist.

    python benchmarks/generate.py --dsn postgresql://postgres@127.0.0.1/yumai_bench --scale 5

Deterministic: session s has the id md5('session-' || s)::uuid.
"""
from __future__ import annotations

import argparse
import sys
import time

import psycopg
from psycopg import sql

from yumai_audit.demo import SCHEMA

SESSIONS_PER_SCALE = 20_000
USERS_PER_SCALE = 1_000
START = "2025-10-25 00:00+00"          # sessions of the first week fall into the default partition
MONTHS = [f"{y}-{m:02d}" for y, m in [(2025, 11), (2025, 12)] + [(2026, m) for m in range(1, 11)]]


def _next_month(month: str) -> str:
    y, m = map(int, month.split("-"))
    return f"{y + m // 12}-{m % 12 + 1:02d}"


def schema_sql() -> sql.Composable:
    """The demo's schema (same tables, index and default partition), with a monthly partition for each
    of MONTHS that the demo does not have."""
    parts = [sql.SQL(SCHEMA)]
    for month in MONTHS:
        name = "conversations_" + month.replace("-", "_")
        if f"chatbot.{name} " in SCHEMA:
            continue
        parts.append(sql.SQL("CREATE TABLE {} PARTITION OF chatbot.conversations FOR VALUES FROM ({}) TO ({});").format(
            sql.Identifier("chatbot", name),
            sql.Literal(f"{month}-01 00:00+00"), sql.Literal(f"{_next_month(month)}-01 00:00+00")))
    return sql.SQL("\n").join(parts)


def data_sql(scale: int, unit: int = SESSIONS_PER_SCALE) -> list[tuple[str, sql.Composable]]:
    """The load, one (label, statement) per table. Session s (1..n) belongs to user 1 + s % users."""
    n, users, d = scale * unit, max(scale * USERS_PER_SCALE, 50), scale
    p = {"n": sql.Literal(n), "users": sql.Literal(users), "d": sql.Literal(d), "start": sql.Literal(START),
         "step": sql.Literal(f"{365 * 86400 / n:.6f} seconds"),
         # users that do not exist (deleted accounts)
         "gone_a": sql.Literal(users + 1), "gone_b": sql.Literal(users + 2)}
    sid = "md5('session-' || s)::uuid"
    uid = "1 + s % {users}"
    at = "{start}::timestamptz + s * {step}::interval"
    stmts = [
        ("users", "INSERT INTO chatbot.users (display_name) SELECT 'user ' || g FROM generate_series(1, {users}) g"),
        # 1 + s % 5 messages per session (3 on average). Defects: the first message of sessions
        # 10i+7 (i = 1..d) names a user that does not exist; 2d messages have no session id.
        ("conversations", f"""
INSERT INTO chatbot.conversations (session_id, user_id, role, message, created_at)
SELECT {sid},
       CASE WHEN m = 1 AND s % 10 = 7 AND s / 10 BETWEEN 1 AND {{d}} THEN {{gone_b}} ELSE {uid} END,
       CASE WHEN m % 2 = 1 THEN 'user' ELSE 'assistant' END,
       'message ' || m || ' of session ' || s || ': ' || repeat('lorem ipsum ', 1 + (s + m) % 6),
       {at} + m * interval '1 minute'
FROM generate_series(1, {{n}}) s, generate_series(1, 1 + s % 5) m
UNION ALL
SELECT NULL, 1, 'user', 'lost message', timestamptz '2025-06-01 00:00+00' + g * interval '1 minute'
FROM generate_series(1, 2 * {{d}}) g"""),
        # sessions with s % 5 < 3. Defects: sessions 10i+1 (i = 1..2d) name another user; 7d rows
        # for 3d sessions that never existed; 4d rows with no session id.
        ("user_interactions", f"""
INSERT INTO chatbot.user_interactions (session_id, user_id, interaction_type, created_at)
SELECT {sid}, CASE WHEN s % 10 = 1 AND s / 10 BETWEEN 1 AND 2 * {{d}} THEN 2 + s % {{users}} ELSE {uid} END,
       CASE WHEN s % 3 = 0 THEN 'click' ELSE 'scroll' END, {at} + interval '5 minutes'
FROM generate_series(1, {{n}}) s WHERE s % 5 < 3
UNION ALL
SELECT md5('ghost-' || (g % (3 * {{d}})))::uuid, 1, 'click', timestamptz '2026-10-02 12:00+00'
FROM generate_series(1, 7 * {{d}}) g
UNION ALL
SELECT NULL, 1, 'scroll', timestamptz '2026-09-15 00:00+00' FROM generate_series(1, 4 * {{d}}) g"""),
        # sessions with s % 5 < 2, keys as text. Defects: 4d rows for 2d unknown sessions; 3d
        # malformed keys; 3d keys of real sessions (10i+3) spelled upper-case, padded or in braces.
        ("recommendations_log", f"""
INSERT INTO chatbot.recommendations_log (session_id, user_id, item_id, created_at)
SELECT {sid}::text, {uid}, s % 97, {at} + interval '6 minutes'
FROM generate_series(1, {{n}}) s WHERE s % 5 < 2
UNION ALL
SELECT md5('ghost-log-' || (g % (2 * {{d}})))::uuid::text, 3, 1, timestamptz '2026-10-04 12:00+00'
FROM generate_series(1, 4 * {{d}}) g
UNION ALL
SELECT (ARRAY['fake-uuid-' || g, '', left(md5(g::text), 13)])[1 + g % 3], 4, 1, timestamptz '2026-10-05 12:00+00'
FROM generate_series(1, 3 * {{d}}) g
UNION ALL
SELECT (ARRAY[upper(sid::text), '  ' || sid::text || ' ', '{{{{' || sid::text || '}}}}'])[1 + s % 3], {uid}, 5,
       {at} + interval '10 minutes'
FROM (SELECT 10 * i + 3 AS s FROM generate_series(1, 3 * {{d}}) i) x, LATERAL (SELECT {sid} AS sid) k"""),
        # sessions with s % 5 = 0. Defects: sessions 10i+5 (i = 1..d) name a user that does not
        # exist; 2d rows for d unknown sessions.
        ("user_feedback", f"""
INSERT INTO chatbot.user_feedback (session_id, user_id, rating, comment, created_at)
SELECT {sid}, CASE WHEN s % 10 = 5 AND s / 10 BETWEEN 1 AND {{d}} THEN {{gone_a}} ELSE {uid} END,
       1 + s % 5, 'thanks', {at} + interval '9 minutes'
FROM generate_series(1, {{n}}) s WHERE s % 5 = 0
UNION ALL
SELECT md5('ghost-feedback-' || (g % {{d}}))::uuid, 2, 1, NULL, timestamptz '2026-10-03 12:00+00'
FROM generate_series(1, 2 * {{d}}) g"""),
    ]
    return [(label, sql.SQL(text).format(**p)) for label, text in stmts]


def expected(scale: int, unit: int = SESSIONS_PER_SCALE) -> dict:
    """What `yumai-audit scan` must find: (check, table, column) -> (rows, keys), like demo.EXPECTED."""
    d = scale
    return {
        ("missing_master_rows", "chatbot.session_master", "session_id"): (None, scale * unit),
        ("orphaned_session_ids", "chatbot.user_interactions", "session_id"): (7 * d, 3 * d),
        ("orphaned_session_ids", "chatbot.user_feedback", "session_id"): (2 * d, d),
        ("orphaned_session_ids", "chatbot.recommendations_log", "session_id"): (4 * d, 2 * d),
        ("malformed_session_ids", "chatbot.recommendations_log", "session_id"): (3 * d, None),
        ("noncanonical_session_ids", "chatbot.recommendations_log", "session_id"): (3 * d, None),
        ("null_session_ids", "chatbot.user_interactions", "session_id"): (4 * d, None),
        ("null_session_ids", "chatbot.conversations", "session_id"): (2 * d, None),
        ("conflicting_session_users", "chatbot.conversations", "user_id"): (None, 4 * d),
        ("orphaned_user_ids", "chatbot.user_feedback", "user_id"): (d, None),
        ("orphaned_user_ids", "chatbot.conversations", "user_id"): (d, None),
    }


def row_counts(scale: int, unit: int = SESSIONS_PER_SCALE) -> dict[str, int]:
    """Exact rows per key table."""
    n, d = scale * unit, scale
    per5 = n // 5
    return {
        "chatbot.conversations": 3 * n + 2 * d,
        "chatbot.user_interactions": 3 * per5 + 7 * d + 4 * d,
        "chatbot.recommendations_log": 2 * per5 + 4 * d + 3 * d + 3 * d,
        "chatbot.user_feedback": per5 + 2 * d,
    }


# -- the varied shape (issue 16): another yumai-shaped database, as real ones differ -------------------------

VARIED_MONTHS = ["2026-06", "2026-07", "2026-08", "2026-09"]
VARIED_SCHEMA = """
CREATE SCHEMA chatbot;
CREATE TABLE chatbot.users (id serial PRIMARY KEY, display_name text NOT NULL,
                            created_at timestamptz NOT NULL DEFAULT '2026-01-01');
CREATE TABLE chatbot.conversations (
    id bigserial, session_id uuid, user_id int, role text NOT NULL, message text NOT NULL,
    created_at timestamptz NOT NULL, PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE chatbot.conversations_default PARTITION OF chatbot.conversations DEFAULT;
CREATE TABLE chatbot.user_interactions (id bigserial PRIMARY KEY, session_id uuid, user_id int,
                                        interaction_type text NOT NULL, created_at timestamptz NOT NULL);
CREATE INDEX user_interactions_session_idx ON chatbot.user_interactions (session_id);
CREATE TABLE chatbot.recommendations_log (id bigserial PRIMARY KEY, session_id uuid, user_id int,
                                          item_id int NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE chatbot.user_feedback (id bigserial PRIMARY KEY, session_id varchar(64), user_id int,
                                    rating int NOT NULL, comment text, created_at timestamptz NOT NULL);
CREATE SCHEMA "Analytics";
CREATE TABLE "Analytics"."SessionEvents" (id bigserial PRIMARY KEY, session_id uuid, "EventKind" text NOT NULL,
                                          created_at timestamptz NOT NULL);
"""
# The half-done migration: the master holds the older half of the sessions (the backfill got that far),
# user_interactions' foreign key is NOT VALID.
HALF_DONE_SQL = """
CREATE TABLE chatbot.session_master (
    session_id uuid PRIMARY KEY,
    user_id int REFERENCES chatbot.users (id),
    session_start timestamp, session_end timestamp, is_active boolean DEFAULT true);
INSERT INTO chatbot.session_master (session_id, user_id, session_start, session_end)
SELECT md5('session-' || s)::uuid, 1 + s % {users}, {at}, {at} + interval '10 minutes'
FROM generate_series(1, {n} / 2) s;
ALTER TABLE chatbot.user_interactions ADD CONSTRAINT user_interactions_session_fk
    FOREIGN KEY (session_id) REFERENCES chatbot.session_master (session_id) NOT VALID;
"""


def varied_schema_sql() -> sql.Composable:
    """Four monthly partitions and a default one (which gets 1% of the sessions), uuid keys but for
    user_feedback (varchar), and a mixed-case table in a second schema."""
    parts = [sql.SQL(VARIED_SCHEMA)]
    for month in VARIED_MONTHS:
        parts.append(sql.SQL("CREATE TABLE {} PARTITION OF chatbot.conversations FOR VALUES FROM ({}) TO ({});").format(
            sql.Identifier("chatbot", "conversations_" + month.replace("-", "_")),
            sql.Literal(f"{month}-01 00:00+00"), sql.Literal(f"{_next_month(month)}-01 00:00+00")))
    return sql.SQL("\n").join(parts)


def _varied_params(scale: int, unit: int, days: int = 120) -> dict:
    n, users = scale * unit, max(scale * USERS_PER_SCALE, 50)
    # Sessions spread over the four months (`days`); every 100th session falls after them (the default partition).
    at = sql.SQL("(timestamptz '2026-06-01 00:00+00' + s * {step}::interval"
                 " + CASE WHEN s % 100 = 0 THEN {after} ELSE interval '0' END)").format(
        step=sql.Literal(f"{days * 86400 / n:.6f} seconds"), after=sql.Literal(f"{days + 10} days"))
    return {"n": sql.Literal(n), "users": sql.Literal(users), "at": at,
            # 1 session in 500 names a user that does not exist, in every table
            "uid": sql.SQL("CASE WHEN s % 500 = 0 THEN {} ELSE 1 + s % {} END").format(
                sql.Literal(users + 1), sql.Literal(users)),
            "sid": sql.SQL("md5('session-' || s)::uuid")}


def daily_schema_sql(days: int) -> sql.Composable:
    """The varied shape with `days` daily partitions from 2026-06-01 (as pg_partman makes them) instead of
    the four monthly ones, and the default one."""
    parts = [sql.SQL(VARIED_SCHEMA)]
    for d in range(days):
        parts.append(sql.SQL("CREATE TABLE {} PARTITION OF chatbot.conversations FOR VALUES FROM "
                             "(timestamptz '2026-06-01 00:00+00' + {} * interval '1 day') TO "
                             "(timestamptz '2026-06-01 00:00+00' + {} * interval '1 day');").format(
            sql.Identifier("chatbot", f"conversations_p{d:04d}"), sql.Literal(d), sql.Literal(d + 1)))
    return sql.SQL("\n").join(parts)


def generate_daily(conninfo: str, scale: int, days: int, unit: int = SESSIONS_PER_SCALE, replace: bool = False,
                   say=lambda _msg: None) -> dict[str, float]:
    """Build the daily shape at `conninfo`: the varied shape's data spread over `days` daily partitions,
    every 100th session after them (the default partition)."""
    return _load(conninfo, scale, unit, ("chatbot", "Analytics"), daily_schema_sql(days),
                 varied_data_sql(scale, unit, days), VARIED_TABLES, replace, say)


def varied_data_sql(scale: int, unit: int = SESSIONS_PER_SCALE, days: int = 120) -> list[tuple[str, sql.Composable]]:
    """The varied shape's load. Session s (1..n): 1-5 messages; clicks for a third (two each) plus 2%
    orphaned clicks and NULL keys; recommendations for a quarter plus a few orphans; text-keyed feedback
    for a seventh, some upper-case, padded, empty or malformed; events in "Analytics"."SessionEvents"
    for a tenth. 1 session in 211 has a second user on its second message."""
    p = _varied_params(scale, unit, days)
    stmts = [
        ("users", "INSERT INTO chatbot.users (display_name) SELECT 'user ' || g FROM generate_series(1, {users}) g"),
        ("conversations", """
INSERT INTO chatbot.conversations (session_id, user_id, role, message, created_at)
SELECT {sid}, CASE WHEN m = 2 AND s % 211 = 0 THEN 2 + s % {users} ELSE {uid} END,
       CASE WHEN m % 2 = 1 THEN 'user' ELSE 'assistant' END,
       'message ' || m || ' of session ' || s || ': ' || repeat('lorem ipsum ', 1 + (s + m) % 6),
       {at} + m * interval '1 minute'
FROM generate_series(1, {n}) s, generate_series(1, 1 + (s * 7) % 5) m"""),
        ("user_interactions", """
INSERT INTO chatbot.user_interactions (session_id, user_id, interaction_type, created_at)
SELECT {sid}, {uid}, 'click', {at} + c * interval '2 minutes'
FROM generate_series(3, {n}, 3) s, generate_series(1, 2) c
UNION ALL
SELECT md5('ghost-click-' || (s % ({n} / 150 + 1)))::uuid, {uid}, 'click', {at}
FROM generate_series(1, {n} * 2 / 150) s
UNION ALL
SELECT NULL, {uid}, 'scroll', {at} FROM generate_series(1, {n} / 1000 + 1) s"""),
        ("recommendations_log", """
INSERT INTO chatbot.recommendations_log (session_id, user_id, item_id, created_at)
SELECT {sid}, {uid}, s % 97, {at} + interval '6 minutes' FROM generate_series(1, {n}, 4) s
UNION ALL
SELECT md5('ghost-rec-' || s)::uuid, {uid}, 1, {at} FROM generate_series(1, {n} / 5000 + 1) s"""),
        ("user_feedback", """
INSERT INTO chatbot.user_feedback (session_id, user_id, rating, comment, created_at)
SELECT CASE (s / 7) % 100 WHEN 0 THEN upper({sid}::text) WHEN 1 THEN '  ' || {sid}::text || ' '
            WHEN 2 THEN '' WHEN 3 THEN 'not-a-uuid-' || s ELSE {sid}::text END,
       {uid}, 1 + s % 5, 'thanks', {at} + interval '9 minutes'
FROM generate_series(2, {n}, 7) s"""),
        ("SessionEvents", """
INSERT INTO "Analytics"."SessionEvents" (session_id, "EventKind", created_at)
SELECT {sid}, 'view', {at} + interval '3 minutes' FROM generate_series(3, {n}, 10) s"""),
    ]
    return [(label, sql.SQL(text).format(**p)) for label, text in stmts]


def half_done_sql(scale: int, unit: int = SESSIONS_PER_SCALE) -> sql.Composable:
    p = _varied_params(scale, unit)
    return sql.SQL(HALF_DONE_SQL).format(**p)


VARIED_TABLES = ("chatbot.users", "chatbot.conversations", "chatbot.user_interactions", "chatbot.recommendations_log",
                 "chatbot.user_feedback", '"Analytics"."SessionEvents"')


def generate_varied(conninfo: str, scale: int, unit: int = SESSIONS_PER_SCALE, half_done: bool = False,
                    replace: bool = False, say=lambda _msg: None) -> dict[str, float]:
    """Build the varied shape at `conninfo` (pre-migration, or with `half_done` the half-done migration)."""
    steps = varied_data_sql(scale, unit) + ([("half-done master", half_done_sql(scale, unit))] if half_done else [])
    tables = VARIED_TABLES + (("chatbot.session_master",) if half_done else ())
    return _load(conninfo, scale, unit, ("chatbot", "Analytics"), varied_schema_sql(), steps, tables, replace, say)


def make_half_done(conninfo: str, scale: int, unit: int = SESSIONS_PER_SCALE) -> None:
    """Turn a varied pre-migration database into the half-done state (idempotent)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('chatbot.session_master')").fetchone()[0] is None:
            conn.execute(half_done_sql(scale, unit))
            conn.execute("VACUUM (ANALYZE) chatbot.session_master, chatbot.user_interactions")


def undo_half_done(conninfo: str) -> None:
    """Back to the pre-migration state: no master, no foreign key."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("ALTER TABLE chatbot.user_interactions DROP CONSTRAINT IF EXISTS user_interactions_session_fk")
        conn.execute("DROP TABLE IF EXISTS chatbot.session_master")


def _load(conninfo: str, scale: int, unit: int, schemas: tuple[str, ...], schema: sql.Composable,
          steps: list[tuple[str, sql.Composable]], tables: tuple[str, ...], replace: bool, say) -> dict[str, float]:
    """Create `schemas` (dropping them first with `replace`), run the steps, VACUUM (ANALYZE) `tables`;
    seconds per step."""
    if scale < 1 or unit < 100 or unit % 10:
        raise ValueError("scale must be >= 1 and unit a multiple of 10, at least 100")
    timings = {}
    with psycopg.connect(conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = ANY(%s)", (list(schemas),)).fetchone()
        if exists and not replace:
            raise SystemExit(f"generate: the database already has a schema {' or '.join(schemas)} (use --replace)")
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '256MB'")
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.SQL(", ").join(map(sql.Identifier, schemas))))
        conn.execute(schema)
        for label, stmt in steps:
            t0 = time.monotonic()
            conn.execute(stmt)
            timings[label] = time.monotonic() - t0
            say(f"{label}: {timings[label]:.1f}s")
        # Set hint bits and the visibility map now, so that no timed query pays for them.
        t0 = time.monotonic()
        conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.SQL(", ").join(sql.SQL(t) for t in tables)))
        timings["vacuum analyze"] = time.monotonic() - t0
        say(f"vacuum analyze: {timings['vacuum analyze']:.1f}s")
    return timings


def generate(conninfo: str, scale: int, unit: int = SESSIONS_PER_SCALE, replace: bool = False,
             say=lambda _msg: None) -> dict[str, float]:
    """Build the database at `conninfo` (which must not have a `chatbot` schema unless `replace`).
    Returns seconds per step."""
    tables = ("chatbot.users", "chatbot.conversations", "chatbot.user_interactions", "chatbot.recommendations_log",
              "chatbot.user_feedback")
    return _load(conninfo, scale, unit, ("chatbot",), schema_sql(), data_sql(scale, unit), tables, replace, say)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn", required=True, help="database to fill (must exist)")
    ap.add_argument("--scale", type=int, default=5, help="scale factor: 20,000 sessions each (default 5)")
    ap.add_argument("--replace", action="store_true", help="drop an existing chatbot schema first")
    ap.add_argument("--shape", choices=["generator", "varied", "daily"], default="generator",
                    help="generator: twelve months, the demo's defects (default); varied: four months and a "
                         "populated default partition, a text-keyed user_feedback, a second schema; daily: the "
                         "varied shape's data over --days daily partitions and a default one")
    ap.add_argument("--days", type=int, default=365, help="with --shape daily: the daily partitions (default 365)")
    ap.add_argument("--half-done", action="store_true",
                    help="with --shape varied: the master holds half of the sessions, user_interactions' FK is NOT VALID")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    say = lambda m: print(f"  {m}", file=sys.stderr)  # noqa: E731
    if args.shape == "varied":
        generate_varied(args.dsn, args.scale, half_done=args.half_done, replace=args.replace, say=say)
        print(f"scale {args.scale} (varied{', half-done' if args.half_done else ''}): "
              f"{args.scale * SESSIONS_PER_SCALE:,} sessions in {time.monotonic() - t0:.1f}s")
        return 0
    if args.half_done:
        ap.error("--half-done needs --shape varied")
    if args.shape == "daily":
        generate_daily(args.dsn, args.scale, args.days, replace=args.replace, say=say)
        print(f"scale {args.scale} (daily, {args.days} days): {args.scale * SESSIONS_PER_SCALE:,} sessions in "
              f"{time.monotonic() - t0:.1f}s")
        return 0
    generate(args.dsn, args.scale, replace=args.replace, say=say)
    rows = row_counts(args.scale)
    print(f"scale {args.scale}: {args.scale * SESSIONS_PER_SCALE:,} sessions, {sum(rows.values()):,} key-table rows "
          f"in {time.monotonic() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`fix --apply` versus a one-shot migration to the same end state (not a test), on copies of one database.

Builds a template database once (`generate.py`: `--shape varied` at `--scale`, four monthly partitions and a
default one; or `--shape daily`, the same data over `--days` daily partitions and a default one), then, for
each round, in turn: each `--yumai-audit` command's `fix --apply --yes --no-backup` (a process: its before
and after scans included) and the one-shot migration (one transaction: the master created and filled from
the source table, malformed text keys and orphans moved to quarantine tables, the text key converted, every
key column indexed, every foreign key added, so validated), each on a fresh copy of the template
(CREATE DATABASE ... TEMPLATE). Prints each run's seconds and the server's WAL written (pg_current_wal_lsn
before and after: other databases' writes on the same server count too), then best and median per
contestant and the ratio of medians to the one-shot's. After each run the master's content (sessions,
starts, ends, users) is hashed: every contestant must end with the same.

    python benchmarks/apply_vs_oneshot.py --dsn postgresql://postgres@127.0.0.1:5432/postgres --shape daily \\
        --scale 2 --days 365 --rounds 3 --yumai-audit yumai-audit --yumai-audit /tmp/venv-main/bin/yumai-audit

`--dsn` names a maintenance database of the server (the template and the copies are created next to it, named
`--db-prefix` + template and + run, dropped first: by default yumai_vs_template and yumai_vs_run; a prefix of
one's own keeps two calls on one server apart); without it, an embedded PostgreSQL 18 is started for the call.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import conninfo as ci
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generate  # noqa: E402

from yumai_audit.checks.predicates import TRIM_CHARS, UUID_INPUT_PATTERN  # noqa: E402

PREFIX = "yumai_vs_"      # the databases' names: PREFIX + "template", PREFIX + "run" (--db-prefix)
KEY_TABLES = (("chatbot", "user_interactions"), ("chatbot", "recommendations_log"), ("chatbot", "user_feedback"),
              ("Analytics", "SessionEvents"))
MASTER = sql.Identifier("chatbot", "session_master")
# the master's content, is_active aside (it depends on the clock)
CONTENT = ("SELECT md5(string_agg(concat_ws('|', session_id, user_id, session_start, session_end), ',' "
           "ORDER BY session_id)) FROM chatbot.session_master")


def one_shot() -> list[sql.Composable]:
    """The migration in one transaction, as a DBA would write it for the generator's varied shape."""
    trim = sql.Literal(TRIM_CHARS)
    malformed = sql.SQL("session_id IS NOT NULL AND NOT (btrim(session_id, {}) ~ {})").format(
        trim, sql.Literal(UUID_INPUT_PATTERN))
    out: list[sql.Composable] = [
        sql.SQL("CREATE TABLE {} (session_id uuid PRIMARY KEY DEFAULT gen_random_uuid(), user_id int REFERENCES "
                "chatbot.users (id) ON DELETE SET NULL, session_start timestamptz DEFAULT CURRENT_TIMESTAMP, "
                "session_end timestamptz, is_active boolean DEFAULT true)").format(MASTER),
        sql.SQL("CREATE INDEX ON {} (user_id)").format(MASTER),
        sql.SQL("INSERT INTO {} (session_id, user_id, session_start, session_end, is_active) "
                "SELECT c.session_id, (SELECT u.id FROM chatbot.users u WHERE u.id = "
                "(array_agg(c.user_id ORDER BY c.created_at, c.id))[1]), min(c.created_at), max(c.created_at), "
                "coalesce(max(c.created_at) >= now() - interval '30 minutes', false) "
                "FROM chatbot.conversations c WHERE c.session_id IS NOT NULL GROUP BY c.session_id").format(MASTER),
        sql.SQL("CREATE SCHEMA yumai_quarantine"),
        sql.SQL("CREATE TABLE yumai_quarantine.user_feedback_malformed AS SELECT * FROM chatbot.user_feedback "
                "WHERE {}").format(malformed),
        sql.SQL("DELETE FROM chatbot.user_feedback WHERE {}").format(malformed),
        sql.SQL("ALTER TABLE chatbot.user_feedback ALTER COLUMN session_id TYPE uuid USING btrim(session_id, {})::uuid"
                ).format(trim),
        sql.SQL("CREATE INDEX ON chatbot.conversations (session_id)"),
    ]
    for schema, table in KEY_TABLES:
        t = sql.Identifier(schema, table)
        orphan = sql.SQL("t.session_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {} m WHERE m.session_id = "
                         "t.session_id)").format(MASTER)
        out += [sql.SQL("CREATE TABLE {} AS SELECT * FROM {} t WHERE {}").format(
                    sql.Identifier("yumai_quarantine", f"{table}_orphans"), t, orphan),
                sql.SQL("DELETE FROM {} t WHERE {}").format(t, orphan)]
        if table != "user_interactions":     # the one table the shape indexes already
            out.append(sql.SQL("CREATE INDEX ON {} (session_id)").format(t))
    for schema, table in (("chatbot", "conversations"), *KEY_TABLES):
        out.append(sql.SQL("ALTER TABLE {} ADD FOREIGN KEY (session_id) REFERENCES {} (session_id) ON DELETE CASCADE"
                           ).format(sql.Identifier(schema, table), MASTER))
    return out


def names(prefix: str) -> tuple[str, str]:
    """The template's and the copy's database names."""
    return prefix + "template", prefix + "run"


def build(admin: str, args) -> None:
    template, copy = names(args.db_prefix)
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in (copy, template):
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(template)))
    dsn = ci.make_conninfo(admin, dbname=template)
    if args.shape == "daily":
        generate.generate_daily(dsn, args.scale, args.days)
    else:
        generate.generate_varied(dsn, args.scale)


def fresh_copy(admin: str, prefix: str) -> str:
    template, copy = names(prefix)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(copy)))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(copy), sql.Identifier(template)))
        conn.execute("CHECKPOINT")
    return ci.make_conninfo(admin, dbname=copy)


def wal(admin: str) -> int:
    with psycopg.connect(admin, autocommit=True) as conn:
        return int(conn.execute("SELECT pg_current_wal_lsn() - '0/0'").fetchone()[0])


def run_tool(command: str, dsn: str) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as out:
        started = time.monotonic()
        proc = subprocess.run([command, "fix", "--dsn", dsn, "--apply", "--yes", "--no-backup", "--out", out],
                              capture_output=True, text=True, check=False)
        seconds = time.monotonic() - started
        path = Path(out) / "apply-log.json"
        log = json.loads(path.read_text()) if path.exists() else {"ok": False, "problems": [proc.stderr[-500:]]}
    if not log["ok"]:
        raise SystemExit(f"{command}: fix --apply failed: {log['problems'] or log['steps'][-1]}")
    return seconds, log


def gaps(conn: psycopg.Connection, prefixes: list[str]) -> str:
    """The seconds between the journal's previous step's end and the start of each step whose id starts with
    one of `prefixes` (the guards of the steps skipped between them, and the executor's own work)."""
    rows = conn.execute("SELECT step, extract(epoch FROM started_at - lag(finished_at) OVER (ORDER BY id)) "
                        "FROM yumai_audit.journal ORDER BY id").fetchall()
    return ", ".join(f"{step} {gap:.3f} s" for step, gap in rows
                     if gap is not None and step.startswith(tuple(prefixes)))


def run_one_shot(dsn: str) -> float:
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET max_parallel_workers_per_gather = 0")       # as the tool: one core for the migration
        conn.execute("SET max_parallel_maintenance_workers = 0")
        with conn.transaction():
            for stmt in one_shot():
                conn.execute(stmt)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="a maintenance database of the server (default: an embedded PostgreSQL 18)")
    parser.add_argument("--shape", choices=["varied", "daily"], default="varied")
    parser.add_argument("--scale", type=int, default=20)
    parser.add_argument("--days", type=int, default=365, help="with --shape daily: the daily partitions")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--yumai-audit", action="append", dest="commands",
                        help="a yumai-audit command to time (repeatable; default: yumai-audit)")
    parser.add_argument("--keep-template", action="store_true", help="reuse the template of an earlier call")
    parser.add_argument("--gap-before", action="append", default=[], metavar="STEP_PREFIX",
                        help="after each apply, the seconds from the end of the journal's previous step to the start "
                        "of each step whose id starts with STEP_PREFIX (the guards of the steps skipped between; "
                        "repeatable)")
    parser.add_argument("--db-prefix", default=PREFIX,
                        help="the databases' names: PREFIX + template, PREFIX + run (default: %(default)s)")
    args = parser.parse_args()
    if args.dsn:
        compare(args)
        return
    from yumai_audit.connection import resolve_target
    from yumai_audit.embedded import embedded_server

    with embedded_server() as uri:
        args.dsn = resolve_target(uri).conninfo
        args.keep_template = False
        compare(args)


def compare(args) -> None:
    if not args.keep_template:
        build(args.dsn, args)
    contestants = [(c, c) for c in (args.commands or ["yumai-audit"])] + [("one-shot", None)]
    seconds: dict[str, list[float]] = {label: [] for label, _c in contestants}
    wal_mb: dict[str, list[float]] = {label: [] for label, _c in contestants}
    content: dict[str, set[str]] = {label: set() for label, _c in contestants}
    for number in range(1, args.rounds + 1):
        for label, command in contestants:
            dsn = fresh_copy(args.dsn, args.db_prefix)
            before = wal(args.dsn)
            if command is None:
                took, extra = run_one_shot(dsn), ""
            else:
                took, log = run_tool(command, dsn)
                backfill = sum(s["seconds"] for s in log["steps"] if s["step"].startswith("backfill:"))
                guess = log["plan"].get("estimate") or {}
                extra = f", {len(log['steps'])} steps, backfill {backfill:.2f} s"
                if guess:
                    extra += f"; the plan's estimate {guess['seconds']:.0f} s, {guess['wal_bytes'] / 2**20:.0f} MB WAL"
            written = (wal(args.dsn) - before) / 2**20
            with psycopg.connect(dsn) as conn:
                content[label].add(conn.execute(CONTENT).fetchone()[0])
                if command is not None and args.gap_before:
                    extra += "; gaps " + gaps(conn, args.gap_before)
            seconds[label].append(took)
            wal_mb[label].append(written)
            print(f"round {number} {label}: {took:.2f} s, WAL {written:.0f} MB{extra}", flush=True)
    base = statistics.median(seconds["one-shot"])
    for label, _c in contestants:
        s = seconds[label]
        print(f"{label}: best {min(s):.2f} s, median {statistics.median(s):.2f} s of {len(s)}; "
              f"{statistics.median(s) / base:.2f}x the one-shot's median; "
              f"WAL median {statistics.median(wal_mb[label]):.0f} MB")
    same = len(set().union(*content.values())) == 1
    print("master content: " + ("identical in every run" if same else f"DIFFERS: {content}"))
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(names(args.db_prefix)[1])))


if __name__ == "__main__":
    main()

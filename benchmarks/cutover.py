"""Cutover benchmark (not a test): writer stalls during `fix --apply` versus a one-shot migration.

Builds the same yumai-shaped database twice (the demo's schema, about 1.2M messages, generated
server-side with generate_series), runs two writer threads that insert continuously for existing
sessions (one into chatbot.conversations, one into chatbot.user_interactions), and meanwhile
migrates it: once with `yumai_audit.api.apply` (what `fix --apply --yes` runs), once the one-shot
way (one transaction creating the master, backfilling and cleaning up, then each FK added validated
in one statement). Each copy is checkpointed once built, so that every run starts settled. Prints
failed writes, the worst and the p99 insert latency ("stall") of each run, what the writers were
waiting on, and the ratio of the worst stalls.

    python benchmarks/cutover.py                          # embedded PostgreSQL 18
    python benchmarks/cutover.py --dsn postgresql://postgres@127.0.0.1:5432/postgres   # a server of yours
    python benchmarks/cutover.py --sessions 20000         # smaller and faster
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from yumai_audit.checks.predicates import UUID_INPUT_PATTERN
from yumai_audit.connection import resolve_target
from yumai_audit.demo import SCHEMA, traffic

USERS = 1000
BATCH_SIZE = 5000


def data(sessions: int) -> str:
    # the demo's traffic, scaled: session s starts at 2026-08-01 + s minutes, so 120,000 sessions
    # spread over the three monthly partitions and the default one; then a few defects
    return traffic(sessions, USERS, "2026-08-01 00:00+00", "1 minute", "5 seconds") + """
INSERT INTO chatbot.user_interactions (session_id, user_id, interaction_type, created_at)
SELECT md5('ghost-' || g)::uuid, 1, 'click', now() FROM generate_series(1, 100) g;
INSERT INTO chatbot.user_interactions (session_id, user_id, interaction_type, created_at)
SELECT NULL, 1, 'scroll', now() FROM generate_series(1, 50) g;
INSERT INTO chatbot.recommendations_log (session_id, user_id, item_id, created_at)
SELECT 'bad-' || g, 1, 1, now() FROM generate_series(1, 10) g;
"""


ONE_SHOT = [
    """CREATE TABLE chatbot.session_master (session_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        user_id int REFERENCES chatbot.users(id), session_start timestamptz DEFAULT CURRENT_TIMESTAMP,
        session_end timestamptz, is_active boolean DEFAULT true)""",
    """INSERT INTO chatbot.session_master (session_id, user_id, session_start, session_end, is_active)
       SELECT c.session_id, (SELECT u.id FROM chatbot.users u WHERE u.id = (array_agg(c.user_id ORDER BY c.created_at, c.id))[1]),
              min(c.created_at), max(c.created_at), max(c.created_at) >= now() - interval '30 minutes'
       FROM chatbot.conversations c WHERE c.session_id IS NOT NULL GROUP BY c.session_id""",
    "DELETE FROM chatbot.recommendations_log WHERE session_id IS NOT NULL AND NOT (btrim(session_id) ~ %(pattern)s)",
    "ALTER TABLE chatbot.recommendations_log ALTER COLUMN session_id TYPE uuid USING btrim(session_id)::uuid",
    """DELETE FROM chatbot.user_interactions t WHERE t.session_id IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM chatbot.session_master m WHERE m.session_id = t.session_id)""",
    """DELETE FROM chatbot.user_feedback t WHERE t.session_id IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM chatbot.session_master m WHERE m.session_id = t.session_id)""",
    """DELETE FROM chatbot.recommendations_log t WHERE t.session_id IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM chatbot.session_master m WHERE m.session_id = t.session_id)""",
]
ONE_SHOT_FKS = [
    sql.SQL("ALTER TABLE {} ADD FOREIGN KEY (session_id) REFERENCES chatbot.session_master (session_id) "
            "ON DELETE CASCADE").format(sql.Identifier("chatbot", t))
    for t in ("conversations", "user_interactions", "recommendations_log", "user_feedback")
]


class Writers:
    """Two threads inserting for existing sessions; every insert's latency is recorded."""

    def __init__(self, conninfo: str, sessions: int):
        self.conninfo = conninfo
        self.sessions = sessions
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.worst: list[tuple[float, float, int]] = []   # (latency, started, writer)
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(n,), daemon=True) for n in range(2)]
        self.threads.append(threading.Thread(target=self.sample_lock_waits, daemon=True))
        self.worst_lock_wait = 0.0
        self.waits: collections.Counter[str] = collections.Counter()
        self.timeline: list[tuple[float, list[tuple[str, str]]]] = []

    def sample_lock_waits(self) -> None:
        """How long a writer has been waiting for a heavyweight lock, sampled every few milliseconds:
        the part of a stall that locks cause (the rest is CPU, I/O and scheduling). The same samples
        count what the busy writers were waiting on (`waits`): a lock, a WAL flush (WALWrite, WalSync),
        a new WAL segment being zero-filled (WalInitWrite, WalInitSync), or nothing (on CPU).
        Every other busy backend of the database (and the server's own processes, when not idle) is
        kept in `timeline`, so that `explain` can tell what was going on during a stall."""
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            while not self.stop.is_set():
                rows = conn.execute(
                    "SELECT application_name = 'bench-writer', CASE WHEN wait_event_type = 'Lock' "
                    "THEN extract(epoch FROM clock_timestamp() - query_start) ELSE 0 END::float8, "
                    "coalesce(wait_event, 'CPU'), coalesce(nullif(application_name, ''), backend_type) "
                    "FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                    "AND (datname = current_database() AND state = 'active' "
                    "OR datname IS NULL AND wait_event_type IS DISTINCT FROM 'Activity')"
                ).fetchall()
                now = time.perf_counter()
                if now >= self.measure_from:
                    writers = [r for r in rows if r[0]]
                    self.worst_lock_wait = max([self.worst_lock_wait] + [r[1] for r in writers])
                    self.waits.update(r[2] for r in writers)
                    self.timeline.append((now, [("writer" if r[0] else r[3], r[2]) for r in rows]))
                time.sleep(0.002)

    def explain(self, started: float, latency: float) -> str:
        """What the samples taken during a stall saw: (who, wait event) by number of samples."""
        seen = collections.Counter(x for t, rows in self.timeline if started <= t <= started + latency for x in rows)
        return ", ".join(f"{who} {event} x{n}" for (who, event), n in seen.most_common(5)) or "no sample"

    def run(self, n: int) -> None:
        stmt = ("INSERT INTO chatbot.conversations (session_id, user_id, role, message, created_at) "
                "VALUES (md5('session-' || %s)::uuid, 1, 'user', 'live', timestamptz '2026-09-15' + %s * interval '1 ms')"
                if n == 0 else
                "INSERT INTO chatbot.user_interactions (session_id, user_id, interaction_type, created_at) "
                "VALUES (md5('session-' || %s)::uuid, 1, 'live', now() + %s * interval '0 ms')")
        with psycopg.connect(self.conninfo, autocommit=True, application_name="bench-writer") as conn:
            i = 0
            while not self.stop.is_set():
                i += 1
                started = time.perf_counter()
                try:
                    conn.execute(stmt, (1 + (i * 7919) % self.sessions, i))
                except psycopg.Error as exc:
                    with self.lock:
                        self.failures.append(str(exc).splitlines()[0])
                elapsed = time.perf_counter() - started
                if started < self.measure_from:   # warm-up: connection, plan and relation caches
                    continue
                with self.lock:
                    self.latencies.append(elapsed)
                    self.worst.append((elapsed, started, n))
                    if len(self.worst) > 50:
                        self.worst = sorted(self.worst, reverse=True)[:5]
                time.sleep(0.002)

    def __enter__(self):
        self.measure_from = time.perf_counter() + 0.5
        for t in self.threads:
            t.start()
        time.sleep(1.0)
        return self

    def __exit__(self, *exc):
        time.sleep(0.5)
        self.stop.set()
        for t in self.threads:
            t.join()

    def print_worst(self) -> None:
        latency, at, n = max(self.worst, default=(0.0, 0.0, 0))
        print(f"    worst stall {1000 * latency:.1f} ms (writer {n}), sampled: {self.explain(at, latency)}")

    def stats(self) -> dict:
        lat = sorted(self.latencies)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0.0
        return {"writes": len(lat), "failed": len(self.failures), "worst_ms": 1000 * (lat[-1] if lat else 0.0),
                "p99_ms": 1000 * p99, "median_ms": 1000 * (statistics.median(lat) if lat else 0.0),
                "first_failure": self.failures[0] if self.failures else "",
                "lock_wait_ms": 1000 * self.worst_lock_wait, "waits": dict(self.waits)}


SETTLE = True


def create_database(admin: str, sessions: int) -> tuple[str, str]:
    name = f"yumai_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(admin)
    params["dbname"] = name
    conninfo = make_conninfo(**params)
    started = time.monotonic()
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(SCHEMA)
            conn.execute(data(sessions))
            conn.execute("VACUUM ANALYZE")
            # Settle before measuring, the same for every run: the build leaves some 200 MB of dirty pages for
            # the kernel to write back during the run and, on a freshly initialised server, no recycled WAL
            # segment, so each 16 MB of the run's WAL is a new segment zero-filled and fsynced under
            # WALWriteLock (writers wait on WalInitWrite/WalInitSync): a fresh cluster's cost, not a live one's.
            if SETTLE:
                conn.execute("CHECKPOINT")
            messages = conn.execute("SELECT count(*) FROM chatbot.conversations").fetchone()[0]
    except BaseException:
        drop_database(admin, name)
        raise
    print(f"  built {name}: {messages:,} messages in {time.monotonic() - started:.1f}s")
    return name, conninfo


def drop_database(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def run_ours(conninfo: str, sessions: int) -> dict:
    """`yumai-audit fix --apply --yes` in a process of its own, as an operator would run it."""
    events: list[tuple[float, str]] = []
    # No backup: the one-shot migration takes none either, and the pg_dump's I/O is not the migration.
    out = tempfile.mkdtemp(prefix="yumai-cutover-")
    cmd = [sys.executable, "-c", "from yumai_audit.cli import main; main()", "fix", "--dsn", conninfo,
           "--apply", "--yes", "--no-backup", "--out", out, "--batch-size", str(BATCH_SIZE)]
    with Writers(conninfo, sessions) as writers:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        reader = threading.Thread(target=lambda: events.extend((time.perf_counter(), line.strip())
                                                               for line in proc.stderr), daemon=True)
        reader.start()
        # Python's start-up (imports) is not the migration: measure from the tool's first connection
        with psycopg.connect(conninfo, autocommit=True) as watch:
            while proc.poll() is None and not watch.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'yumai-audit%%'").fetchone()[0]:
                time.sleep(0.005)
        writers.measure_from = time.perf_counter()
        proc.wait()
        reader.join()
        seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"fix --apply failed: {events[-1][1] if events else proc.returncode}")
    for latency, at, n in sorted(writers.worst, reverse=True)[:3]:
        during = [m for t, m in events if t <= at]
        print(f"    stall {1000 * latency:.1f} ms (writer {n}) during: {during[-1] if during else 'the before-scan and plan'}")
        print(f"      sampled: {writers.explain(at, latency)}")
    return {**writers.stats(), "seconds": seconds}


def run_one_shot(conninfo: str, sessions: int) -> dict:
    with Writers(conninfo, sessions) as writers:
        started = time.monotonic()
        with psycopg.connect(conninfo, autocommit=True) as conn:
            with conn.transaction():
                for stmt in ONE_SHOT:
                    conn.execute(stmt, {"pattern": UUID_INPUT_PATTERN} if "%(pattern)s" in stmt else None)
            for stmt in ONE_SHOT_FKS:
                conn.execute(stmt)
        seconds = time.monotonic() - started
    writers.print_worst()
    return {**writers.stats(), "seconds": seconds}


def run_idle(conninfo: str, sessions: int) -> dict:
    """The same writers with nothing else going on: the machine's noise floor."""
    with Writers(conninfo, sessions) as writers:
        time.sleep(10)
    writers.print_worst()
    return {**writers.stats(), "seconds": 10.0}


@contextlib.contextmanager
def server(dsn: str | None):
    if dsn:
        yield resolve_target(dsn).conninfo
        return
    from yumai_audit.embedded import embedded_server

    with embedded_server() as uri:
        yield resolve_target(uri).conninfo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="maintenance database of a server to use (default: embedded PostgreSQL)")
    parser.add_argument("--sessions", type=int, default=120_000, help="sessions (about 10 messages each)")
    parser.add_argument("--batch-size", type=int, default=5000, help="fix --apply --batch-size")
    parser.add_argument("--no-settle", action="store_true",
                        help="no CHECKPOINT after building (to see what an unsettled, freshly built server adds)")
    args = parser.parse_args()
    global BATCH_SIZE, SETTLE
    BATCH_SIZE = args.batch_size
    SETTLE = not args.no_settle
    with server(args.dsn) as admin:
        with psycopg.connect(admin) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
        print(f"PostgreSQL {version}, {args.sessions:,} sessions")
        results = {}
        for label, runner in (("idle", run_idle), ("fix --apply", run_ours), ("one-shot", run_one_shot)):
            name, conninfo = create_database(admin, args.sessions)
            try:
                print(f"  running {label} with two writers...")
                results[label] = runner(conninfo, args.sessions)
            finally:
                drop_database(admin, name)
    print()
    print(f"{'':14}{'seconds':>9}{'writes':>9}{'failed':>8}{'median ms':>11}{'p99 ms':>9}{'worst ms':>10}"
          f"{'lock wait ms':>14}")
    for label, r in results.items():
        print(f"{label:14}{r['seconds']:9.1f}{r['writes']:9}{r['failed']:8}{r['median_ms']:11.1f}"
              f"{r['p99_ms']:9.1f}{r['worst_ms']:10.1f}{r['lock_wait_ms']:14.1f}")
        busy = sum(r["waits"].values()) or 1
        print(f"{'':14}writers busy on: " + ", ".join(
            f"{event} {100 * n / busy:.0f}%" for event, n in sorted(r["waits"].items(), key=lambda e: -e[1])[:5]))
        if r["first_failure"]:
            print(f"  first failure: {r['first_failure']}")
    ours, one = results["fix --apply"], results["one-shot"]
    print("(idle: the same writers for 10 s with no migration running, the machine's noise floor)")
    ratio = ours["worst_ms"] / one["worst_ms"] if one["worst_ms"] else float("inf")
    print(f"\nworst stall ratio (fix --apply / one-shot): {ratio:.3f}  (target <= 0.1)")
    lock_ratio = ours["lock_wait_ms"] / one["lock_wait_ms"] if one["lock_wait_ms"] else float("inf")
    print(f"worst lock wait ratio: {lock_ratio:.3f}  (the stall that locks cause; the rest is CPU and I/O)")
    idle = results["idle"]["worst_ms"]
    print(f"fix --apply's worst stall / the idle run's: {ours['worst_ms'] / idle if idle else float('inf'):.2f}  "
          "(<= 1: no stall beyond the machine's own noise)")
    print(f"p99 stall ratio: {ours['p99_ms'] / one['p99_ms'] if one['p99_ms'] else float('inf'):.3f}")


if __name__ == "__main__":
    main()

"""Cutover benchmark (not a test): writer stalls and failed writes during `fix --apply` versus a one-shot migration.

Builds the same yumai-shaped database for each run (the demo's schema, about 10 messages per session,
generated server-side with generate_series) and runs three writer threads: new sessions (the
application as it is today: a fresh uuid and the first message, no master row), messages to existing
sessions, clicks on existing sessions. Meanwhile it migrates: `fix --apply --yes` (the default bridge)
against that application; `fix --apply --bridge none` against the updated application, which registers
each new session first (the master is created beforehand); and the one-shot way (one transaction
creating the master, backfilling and cleaning up, then each FK added validated in one statement)
against today's application. Each copy is checkpointed once built. Prints per kind of writer: writes,
failed writes, p99 and worst latency ("stall"); what the writers waited on; the worst stalls against
the one-shot's; and, after the bridged apply, one writer's insert throughput with the bridge and
without it (alternating, same run).

    python benchmarks/cutover.py                          # embedded PostgreSQL 18
    python benchmarks/cutover.py --dsn postgresql://postgres@127.0.0.1:5432/postgres   # a server of yours
    python benchmarks/cutover.py --sessions 20000         # smaller and faster
    python benchmarks/cutover.py --sessions 30000 --rounds 3   # alternate the runs, best and median
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import pathlib
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
GATE_WINDOW = 2.0


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
    """CREATE TABLE IF NOT EXISTS chatbot.session_master (session_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        user_id int REFERENCES chatbot.users(id), session_start timestamptz DEFAULT CURRENT_TIMESTAMP,
        session_end timestamptz, is_active boolean DEFAULT true)""",
    """INSERT INTO chatbot.session_master (session_id, user_id, session_start, session_end, is_active)
       SELECT c.session_id, (SELECT u.id FROM chatbot.users u WHERE u.id = (array_agg(c.user_id ORDER BY c.created_at, c.id))[1]),
              min(c.created_at), max(c.created_at), max(c.created_at) >= now() - interval '30 minutes'
       FROM chatbot.conversations c WHERE c.session_id IS NOT NULL GROUP BY c.session_id ON CONFLICT DO NOTHING""",
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


KINDS = ("new", "message", "click")
KIND_LABELS = {"new": "new sessions", "message": "messages", "click": "clicks"}


class Writers:
    """Three writer threads, one per kind: `new` starts sessions (the old way: a fresh uuid and the first
    message, no master row; with `register_first`, the updated application: the master row, then the
    message, in one transaction), `message` adds messages to existing sessions, `click` logs clicks for
    existing sessions. Every write's latency is recorded per kind; failed writes are counted."""

    def __init__(self, conninfo: str, sessions: int, register_first: bool = False):
        self.conninfo = conninfo
        self.sessions = sessions
        self.register_first = register_first
        self.stop = threading.Event()
        self.latencies: dict[str, list[float]] = {k: [] for k in KINDS}
        self.worst: list[tuple[float, float, str]] = []   # (latency, started, kind)
        self.failures: dict[str, list[str]] = {k: [] for k in KINDS}
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(k,), daemon=True) for k in KINDS]
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

    def write(self, conn, kind: str, i: int) -> None:
        if kind == "new":
            sid = uuid.uuid4()
            with conn.transaction():
                if self.register_first:
                    conn.execute("INSERT INTO chatbot.session_master (session_id, user_id, session_start) "
                                 "VALUES (%s, %s, now())", (sid, 1 + i % USERS))
                conn.execute("INSERT INTO chatbot.conversations (session_id, user_id, role, message, created_at) "
                             "VALUES (%s, %s, 'user', 'hello', now())", (sid, 1 + i % USERS))
        elif kind == "message":
            conn.execute("INSERT INTO chatbot.conversations (session_id, user_id, role, message, created_at) "
                         "VALUES (md5('session-' || %s)::uuid, 1, 'user', 'live', "
                         "timestamptz '2026-09-15' + %s * interval '1 ms')", (1 + (i * 7919) % self.sessions, i))
        else:
            conn.execute("INSERT INTO chatbot.user_interactions (session_id, user_id, interaction_type, created_at) "
                         "VALUES (md5('session-' || %s)::uuid, 1, 'live', now())", (1 + (i * 7919) % self.sessions,))

    def run(self, kind: str) -> None:
        with psycopg.connect(self.conninfo, autocommit=True, application_name="bench-writer") as conn:
            i = 0
            while not self.stop.is_set():
                i += 1
                started = time.perf_counter()
                failed = None
                try:
                    self.write(conn, kind, i)
                except psycopg.Error as exc:
                    failed = str(exc).splitlines()[0]
                elapsed = time.perf_counter() - started
                if started < self.measure_from:   # warm-up: connection, plan and relation caches
                    continue
                with self.lock:
                    if failed is not None:
                        self.failures[kind].append(failed)
                    self.latencies[kind].append(elapsed)
                    self.worst.append((elapsed, started, kind))
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
        latency, at, kind = max(self.worst, default=(0.0, 0.0, "-"))
        print(f"    worst stall {1000 * latency:.1f} ms ({kind}), sampled: {self.explain(at, latency)}")

    def stats(self) -> dict:
        per_kind = {}
        for kind in KINDS:
            lat = sorted(self.latencies[kind])
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0.0
            per_kind[kind] = {"writes": len(lat), "failed": len(self.failures[kind]),
                              "worst_ms": 1000 * (lat[-1] if lat else 0.0), "p99_ms": 1000 * p99,
                              "median_ms": 1000 * (statistics.median(lat) if lat else 0.0),
                              "first_failure": self.failures[kind][0] if self.failures[kind] else ""}
        every = sorted(x for k in KINDS for x in self.latencies[k])
        return {"kinds": per_kind, "writes": len(every), "failed": sum(len(f) for f in self.failures.values()),
                "worst_ms": 1000 * (every[-1] if every else 0.0),
                "p99_ms": 1000 * (every[min(len(every) - 1, int(len(every) * 0.99))] if every else 0.0),
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


MASTER_DDL = ONE_SHOT[0]


def run_ours(conninfo: str, sessions: int, *, bridge: str = "auto", register_first: bool = False) -> dict:
    """`yumai-audit fix --apply --yes` in a process of its own, as an operator would run it, while the
    application starts sessions the old way (`register_first` False) or registers them first (then the
    master is created beforehand, as the updated application needs it)."""
    events: list[tuple[float, str]] = []
    if register_first:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(MASTER_DDL)
    # No backup: the one-shot migration takes none either, and the pg_dump's I/O is not the migration.
    out = tempfile.mkdtemp(prefix="yumai-cutover-")
    cmd = [sys.executable, "-c", "from yumai_audit.cli import main; main()", "fix", "--dsn", conninfo,
           "--apply", "--yes", "--no-backup", "--out", out, "--batch-size", str(BATCH_SIZE), "--bridge", bridge,
           "--gate-window", str(GATE_WINDOW)]
    with Writers(conninfo, sessions, register_first=register_first) as writers:
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
    # exit 1 with every step done is the verdict's "needs a decision" (this data's missing users):
    # the migration finished; only the apply log says whether it did
    log_file = pathlib.Path(out) / "apply-log.json"
    if proc.returncode not in (0, 1) or not log_file.exists() or not json.loads(log_file.read_text())["ok"]:
        raise SystemExit(f"fix --apply failed: {events[-1][1] if events else proc.returncode}")
    for latency, at, kind in sorted(writers.worst, reverse=True)[:3]:
        during = [m for t, m in events if t <= at]
        print(f"    stall {1000 * latency:.1f} ms ({kind}) during: {during[-1] if during else 'the before-scan and plan'}")
        print(f"      sampled: {writers.explain(at, latency)}")
    log = json.loads(log_file.read_text())
    slow = sorted(log["steps"], key=lambda o: -o["seconds"])[:3]
    print("    slowest steps: " + ", ".join(f"{o['step']} {o['seconds']:.1f}s" for o in slow))
    # a step that ran out of lock_timeout and was retried (a lock held elsewhere, or a lock-order cycle); a
    # batched step's tries count its batches too
    batched = {s["id"] for s in log["plan"]["steps"] if s["kind"] == "batched"}
    retried = [f"{o['step']} ({o['tries']} tries, {o['seconds']:.2f}s)" for o in log["steps"]
               if o["tries"] > 1 and o["step"] not in batched]
    print("    steps retried after lock_timeout: " + (", ".join(retried) or "none"))
    result = {**writers.stats(), "seconds": seconds}
    if bridge != "none":
        result["insert_cost"] = bridge_insert_cost(conninfo, sessions)
    return result


def _single_writer(conn, sessions: int, seconds: float, new_sessions: bool, register: bool) -> float:
    """Inserts per second of one writer: messages to existing sessions, or first messages of new
    sessions (the old way; with `register`, the master row first, in the same transaction)."""
    n, i = 0, 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        i += 1
        if new_sessions:
            sid = uuid.uuid4()
            with conn.transaction():
                if register:
                    conn.execute("INSERT INTO chatbot.session_master (session_id, user_id, session_start) "
                                 "VALUES (%s, %s, now())", (sid, 1 + i % USERS))
                conn.execute("INSERT INTO chatbot.conversations (session_id, user_id, role, message, created_at) "
                             "VALUES (%s, %s, 'user', 'hello', now())", (sid, 1 + i % USERS))
        else:
            conn.execute("INSERT INTO chatbot.conversations (session_id, user_id, role, message, created_at) "
                         "VALUES (md5('session-' || %s)::uuid, 1, 'user', 'x', now())", (1 + (i * 7919) % sessions,))
        n += 1
    return n / seconds


SERVER_LOOP = ("DO $$ BEGIN FOR i IN 1..{n} LOOP INSERT INTO chatbot.conversations "
               "(session_id, user_id, role, message, created_at) VALUES (md5('session-' || (1 + (i * 7919) % {s}))::uuid, "
               "1, 'user', 'x', now()); END LOOP; END $$")


def bridge_insert_cost(conninfo: str, sessions: int, rounds: int = 10, seconds: float = 1.0) -> dict:
    """After the apply, in the same run, the bridge against no bridge (the trigger dropped and re-created
    between slices; which goes first alternates, so that a trend in the machine's load favours neither):
    - `message_ratios`: one client writer's throughput, one insert per transaction, as the application
      writes (a message to an existing session: the bridge looks the session up);
    - `new_session_ratios`: the same for new sessions: the bridge registering them against the
      application registering first (two inserts either way);
    - `server_loop_ratios`: 3,000 inserts in a server-side loop, one transaction: no round trip and no
      commit, so the trigger's CPU against the insert's own (the worst case)."""
    from yumai_audit.catalog import QualifiedName
    from yumai_audit.fix.ops.bridge import TRIGGER, create_trigger, function_name

    source = QualifiedName("chatbot", "conversations")
    create = create_trigger(source, "session_id", function_name(source))
    drop = sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(TRIGGER), sql.Identifier("chatbot", "conversations"))
    loop = SERVER_LOOP.format(n=3000, s=sessions)
    out = {"message_ratios": [], "new_session_ratios": [], "server_loop_ratios": []}
    with psycopg.connect(conninfo, autocommit=True) as admin, psycopg.connect(conninfo, autocommit=True) as conn:
        _single_writer(conn, sessions, 0.5, False, False)    # warm-up: caches, the function compiled

        def server_loop() -> float:
            started = time.perf_counter()
            conn.execute(loop)
            return 3000 / (time.perf_counter() - started)

        def bridged():
            return (_single_writer(conn, sessions, seconds, False, False),
                    _single_writer(conn, sessions, seconds, True, False), server_loop())

        def bare():
            admin.execute(drop)
            try:
                return (_single_writer(conn, sessions, seconds, False, False),
                        _single_writer(conn, sessions, seconds, True, True), server_loop())
            finally:
                admin.execute(create)

        for r in range(rounds):
            if r % 2 == 0:
                a, b = bridged(), bare()
            else:
                b, a = bare(), bridged()
            for key, x, y in zip(("message_ratios", "new_session_ratios", "server_loop_ratios"), a, b):
                out[key].append(x / y)
    return out


def run_one_shot(conninfo: str, sessions: int) -> dict:
    """Against the updated application (it registers first; the master is created beforehand): against
    today's one the FK's validation fails on the sessions it writes meanwhile, and the run cannot end."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(MASTER_DDL)
    with Writers(conninfo, sessions, register_first=True) as writers:
        started = time.monotonic()
        with psycopg.connect(conninfo, autocommit=True) as conn:
            with conn.transaction():
                for stmt in ONE_SHOT:
                    conn.execute(stmt, {"pattern": UUID_INPUT_PATTERN} if "%(pattern)s" in stmt else None)
            for stmt in ONE_SHOT_FKS:
                # the registering application holds the master and waits for the table while the FK holds
                # the table and waits for the master: PostgreSQL aborts one of the two. When it is the
                # migration's statement, an operator runs it again (the writers' failed writes are counted)
                for attempt in range(1, 6):
                    try:
                        conn.execute(stmt)
                        break
                    except psycopg.errors.DeadlockDetected:
                        print(f"    one-shot: deadlock on its FK statement, attempt {attempt}; running it again")
                        if attempt == 5:
                            raise
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
    parser.add_argument("--gate-window", type=float, default=2.0, help="fix --apply --bridge none --gate-window")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the runs this many times")
    parser.add_argument("--no-settle", action="store_true",
                        help="no CHECKPOINT after building (to see what an unsettled, freshly built server adds)")
    args = parser.parse_args()
    global BATCH_SIZE, SETTLE, GATE_WINDOW
    BATCH_SIZE = args.batch_size
    SETTLE = not args.no_settle
    GATE_WINDOW = args.gate_window
    runs = (("idle", run_idle),
            ("fix --apply (bridge)", run_ours),
            ("--bridge none, app registers", lambda c, n: run_ours(c, n, bridge="none", register_first=True)),
            ("one-shot", run_one_shot))
    with server(args.dsn) as admin:
        with psycopg.connect(admin) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
        print(f"PostgreSQL {version}, {args.sessions:,} sessions, {args.rounds} round(s)")
        results: dict[str, list[dict]] = collections.defaultdict(list)
        for round_ in range(args.rounds):
            for label, runner in runs:
                name, conninfo = create_database(admin, args.sessions)
                try:
                    print(f"  round {round_ + 1}: {label}, three writers...")
                    results[label].append(runner(conninfo, args.sessions))
                finally:
                    drop_database(admin, name)
    report(results)


def report(results: dict[str, list[dict]]) -> None:
    print()
    print(f"{'':30}{'kind':>14}{'writes':>8}{'failed':>8}{'p99 ms':>9}{'worst ms':>10}")
    for label, rs in results.items():
        for n, r in enumerate(rs, 1):
            for kind in KINDS:
                k = r["kinds"][kind]
                print(f"{label + (f' #{n}' if len(rs) > 1 else ''):30}{KIND_LABELS[kind]:>14}{k['writes']:8}"
                      f"{k['failed']:8}{k['p99_ms']:9.1f}{k['worst_ms']:10.1f}")
                if k["first_failure"]:
                    print(f"{'':44}first failure: {k['first_failure'][:90]}")
            busy = sum(r["waits"].values()) or 1
            print(f"{'':30}{r['seconds']:.1f}s; worst lock wait {r['lock_wait_ms']:.1f} ms; writers busy on: " + ", ".join(
                f"{event} {100 * c / busy:.0f}%" for event, c in sorted(r["waits"].items(), key=lambda e: -e[1])[:4]))
    one = [r["worst_ms"] for r in results["one-shot"]]
    print("\n(idle: the same writers for 10 s with no migration running, the machine's noise floor)")
    for label in ("fix --apply (bridge)", "--bridge none, app registers"):
        worst = [r["worst_ms"] for r in results[label]]
        ratios = sorted(w / o for w, o in zip(worst, one) if o)
        failed = [r["failed"] for r in results[label]]
        print(f"{label}: failed writes {failed}; worst stall / one-shot's, per round: "
              + ", ".join(f"{x:.3f}" for x in ratios)
              + (f" (best {ratios[0]:.3f}, median {statistics.median(ratios):.3f}; target <= 0.1)" if ratios else ""))
        # the part of a stall that the migration's locks cause, without the machine's own (WAL flushes, CPU)
        waits = sorted(r["lock_wait_ms"] / o["lock_wait_ms"] for r, o in zip(results[label], results["one-shot"])
                       if o["lock_wait_ms"])
        if waits:
            print(f"{'':4}worst lock wait / one-shot's, per round: " + ", ".join(f"{x:.4f}" for x in waits))
    for key, what in (("message_ratios", "single writer, messages to existing sessions, with the bridge / without"),
                      ("new_session_ratios", "single writer, new sessions, the bridge registering / the app registering"),
                      ("server_loop_ratios", "server-side insert loop (no round trip, no commit), with / without")):
        xs = sorted(x for r in results["fix --apply (bridge)"] for x in r["insert_cost"][key])
        if xs:
            print(f"{what}: median {statistics.median(xs):.2f}, best {xs[-1]:.2f}, worst {xs[0]:.2f} "
                  f"({len(xs)} alternating slices)" + ("; target >= 0.8" if key == "message_ratios" else ""))


if __name__ == "__main__":
    main()

"""Bounded waits: a second connection watches what a running statement waits for.

A statement in a transaction waits at most `lock_timeout` for each lock, then the executor backs
off and retries. CREATE/DROP INDEX CONCURRENTLY cannot take that bound: besides its table lock it
waits for every transaction older than its snapshot, in the whole database (an idle REPEATABLE READ
session makes it wait forever, silently). The watcher polls `pg_stat_activity` and
`pg_blocking_pids()` of the backend running the step, says in a progress line what it waits for,
and, given `cancel_after`, cancels the statement once it has waited that long without a break,
remembering who it waited for, so that the step fails with a line naming the blocking backend (pid,
application, state, since when). A cancelled CONCURRENTLY build leaves an invalid index of ours,
which the step drops and builds again on the next run.

The watcher only reads the activity view and cancels the one backend it was given (our own).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql

from ..connection import APPLICATION_NAME, Target, connect
from ..errors import ConnectionFailed
from ..pgversion import CLIENT_CONNECTION_CHECK

# What the watched backend waits for and, per blocking backend, what it is (no query text: it may
# hold conversation text or secrets). pid 0 in pg_blocking_pids is a prepared transaction.
BLOCKERS = """
SELECT a.wait_event_type, a.wait_event, bp.pid, b.application_name, b.state, b.usename,
       coalesce(b.xact_start, b.state_change, b.backend_start), b.backend_type
FROM pg_stat_activity a
CROSS JOIN LATERAL unnest(pg_blocking_pids(a.pid)) AS bp(pid)
LEFT JOIN pg_stat_activity b ON b.pid = bp.pid
WHERE a.pid = %s
ORDER BY bp.pid
"""

WAIT_EVENTS = {
    "virtualxid": "older transactions to end (CONCURRENTLY waits for every transaction that started before it)",
    "relation": "a table lock",
    "transactionid": "a row lock (another transaction's change)",
    "tuple": "a row lock",
}


@dataclass(frozen=True)
class Blocker:
    pid: int
    application: str | None
    state: str | None
    user: str | None
    since: datetime | None
    backend_type: str | None

    def describe(self) -> str:
        if self.pid == 0:
            return "a prepared transaction (see pg_prepared_xacts)"
        bits = [f"application {self.application!r}" if self.application else "no application name"]
        if self.user:
            bits.append(f"user {self.user}")
        if self.state:
            bits.append(self.state + (f" since {self.since.isoformat(timespec='seconds')}" if self.since else ""))
        elif self.backend_type and self.backend_type != "client backend":
            bits.append(self.backend_type)
        return f"backend {self.pid} ({', '.join(bits)})"


@dataclass
class Wait:
    """What one watched statement waited for (filled in by the watcher thread)."""

    waiting_for: str = ""
    blockers: list[Blocker] = field(default_factory=list)
    longest: float = 0.0           # seconds of the longest unbroken wait seen
    cancelled: bool = False        # the watcher cancelled the statement after `cancel_after`

    def who(self) -> str:
        return "; ".join(b.describe() for b in self.blockers) or "another backend"

    def line(self) -> str:
        return f"{self.waiting_for or 'a lock'}: held by {self.who()}"


def waiting_for(event_type: str | None, event: str | None) -> str:
    if event_type == "Lock":
        return WAIT_EVENTS.get(event or "", f"a lock ({event})")
    return f"{event_type or 'something'} ({event})" if event else "a lock"


def bounds(lock_timeout_seconds: float, server_version: int) -> dict[str, str]:
    """The settings that bound a read of the plan (catalog, guards, probes, counts), for `set_local`:
    lock waits at most `lock_timeout`; a killed dry run leaves nothing running on the server."""
    # no JIT: the guards' and the preflight's estimates are large, the JIT's compile takes seconds, they milliseconds
    out = {"lock_timeout": f"{int(lock_timeout_seconds * 1000)}ms", "application_name": APPLICATION_NAME + " fix",
           "jit": "off"}
    if server_version >= CLIENT_CONNECTION_CHECK:
        out["client_connection_check_interval"] = "1000"
    return out


def bound_session(conn: psycopg.Connection, lock_timeout_seconds: float) -> None:
    """Bound every lock wait of this session (guards, checks, journal) by `lock_timeout`."""
    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout_seconds * 1000)}ms")))


class Watcher:
    """One watching connection for a run; `watch()` around each statement to watch."""

    def __init__(self, target: Target, say: Callable[[str], None], *, poll: float = 0.2, report_every: float = 5.0):
        self.target = target
        self.say = say
        self.poll = poll
        self.report_every = report_every
        self._conn: psycopg.Connection | None = None
        self.last: Wait | None = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            # a session of its own (its setting is reset before it is closed)
            self._conn = connect(self.target, autocommit=True, application_name="yumai-audit fix (wait watcher)",
                                 session="the wait watcher of fix --apply")
            self._conn.execute("SET statement_timeout = '10s'")
        return self._conn

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()

    @contextmanager
    def watch(self, pid: int, label: str, cancel_after: float | None = None):
        """Watch backend `pid` while the block runs; yields the `Wait` it fills in."""
        wait = self.last = Wait()
        try:
            conn = self._connection()
        except (psycopg.Error, ConnectionFailed) as exc:   # cannot watch: the statement runs under its own bounds
            self.say(f"    {label}: cannot watch its waits ({(str(exc).strip().splitlines() or ['?'])[0]})")
            yield wait
            return
        stop = threading.Event()
        thread = threading.Thread(target=self._loop, args=(conn, pid, label, cancel_after, wait, stop),
                                  name=f"wait watcher {label}", daemon=True)
        thread.start()
        try:
            yield wait
        finally:
            stop.set()
            thread.join()

    def _loop(self, conn, pid, label, cancel_after, wait: Wait, stop: threading.Event) -> None:
        since = None
        reported = 0.0
        while not stop.wait(self.poll):
            try:
                rows = conn.execute(BLOCKERS, (pid,)).fetchall()
            except psycopg.Error:
                return
            if not rows:
                since = None
                continue
            now = time.monotonic()
            since = since or now
            wait.waiting_for = waiting_for(rows[0][0], rows[0][1])
            wait.blockers = [Blocker(r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows]
            waited = now - since
            wait.longest = max(wait.longest, waited)
            if waited >= self.report_every and now - reported >= self.report_every:
                reported = now
                bound = f" (cancelled at {cancel_after:g}s)" if cancel_after else ""
                self.say(f"    {label}: waiting {waited:.0f}s{bound} for {wait.line()}")
            if cancel_after is not None and waited >= cancel_after and not stop.is_set():
                wait.cancelled = True
                try:
                    conn.execute("SELECT pg_cancel_backend(%s)", (pid,))
                except psycopg.Error:
                    pass
                return

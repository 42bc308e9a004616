"""How far behind the standbys and the logical slots are, and the throttle that waits between batches.

A batched step (backfill, quarantine, prune) writes WAL as fast as the primary takes it; a standby
that replays slower, or a logical consumer that applies slower, falls behind without bound. Between
batches the throttle measures every physical standby (`pg_stat_replication.replay_lsn`) and every
logical slot of this database (`pg_replication_slots.confirmed_flush_lsn`) and, while one is further
behind than `max_lag` seconds, waits (saying what for), at most `wait_timeout` seconds, as gh-ost's
`--max-lag-millis` and pt-online-schema-change's `--max-lag` do.

The lag in seconds is measured from positions, not read from `replay_lag`: `replay_lag` is NULL or a
stale value when the primary is idle, and a standby whose replay is paused (`pg_wal_replay_pause()`)
keeps receiving WAL, so only its replay position tells. The throttle keeps the primary's WAL position
at each of its measures (a clock: at time t the primary had written up to LSN l); a standby that has
replayed up to position P is as far behind as the time since the primary was at P (interpolated
between two measures). So a standby that stops replaying is seen falling behind second by second as
soon as anything is written past its position, and one that is merely idle is 0 s behind. A standby
already behind when the run starts (before the first measure) counts as behind since then, or by
`replay_lag` when that says more (the walsender's own estimate, growing while WAL is being sent).
"""
from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

from ..errors import DidNotFinish

# The physical standbys: walsenders that no logical slot uses (logical walsenders are measured by their slot).
DEFAULT_MAX_REPLICA_LAG = 10.0   # seconds (--max-replica-lag): gh-ost's and pt-osc's order of magnitude

STANDBYS = """
SELECT coalesce(nullif(r.application_name, ''), 'walsender ' || r.pid) AS name, host(r.client_addr),
       pg_wal_lsn_diff(r.replay_lsn, '0/0')::bigint, extract(epoch FROM r.replay_lag)::float8
FROM pg_stat_replication r
WHERE r.pid NOT IN (SELECT s.active_pid FROM pg_replication_slots s WHERE s.slot_type = 'logical'
                    AND s.active_pid IS NOT NULL)
ORDER BY r.pid
"""
SLOTS = """
SELECT s.slot_name, s.active, pg_wal_lsn_diff(s.confirmed_flush_lsn, '0/0')::bigint
FROM pg_replication_slots s
WHERE s.slot_type = 'logical' AND s.database = current_database()
ORDER BY s.slot_name
"""
POSITION = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"


class LagTimeout(DidNotFinish):
    """A standby or a logical slot stayed further behind than --max-replica-lag for --wait-timeout."""


@dataclass(frozen=True)
class Behind:
    """One replica's distance: what it is, how many seconds and bytes behind the primary."""

    what: str              # 'standby "walreceiver" (127.0.0.1)' or 'logical slot "sub" (inactive)'
    seconds: float
    bytes: int

    def describe(self) -> str:
        return f"{self.what}: {self.seconds:.1f}s ({_size(self.bytes)}) behind"


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    size = float(n)
    for unit in ("kB", "MB", "GB"):
        size /= 1024
        if size < 1024 or unit == "GB":
            break
    return f"{size:.1f} {unit}"


def position(conn: psycopg.Connection) -> int:
    """The primary's WAL position now, in bytes."""
    row = conn.execute(POSITION).fetchone()
    assert row is not None
    return int(row[0])


@dataclass
class WalClock:
    """The primary's WAL position over time, as measured: maps a position back to when it was written."""

    times: list[float] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    limit: int = 10000

    def add(self, at: float, position: int) -> None:
        if self.positions and position < self.positions[-1]:
            position = self.positions[-1]     # never backwards (a measure is a snapshot of a moving value)
        self.times.append(at)
        self.positions.append(position)
        if len(self.times) > self.limit:
            del self.times[: len(self.times) - self.limit]
            del self.positions[: len(self.positions) - self.limit]

    def seconds_behind(self, position: int, now: float, reported: float | None = None) -> float:
        """How long ago the primary was at `position` (0 when it is not past it now); a position older
        than the first measure: since the first measure, or the server's `reported` lag when longer."""
        if not self.positions or position >= self.positions[-1]:
            return 0.0
        i = bisect.bisect_right(self.positions, position) - 1     # the last measure at or before it
        if i < 0:
            return max(now - self.times[0], reported or 0.0)
        t0, p0, t1, p1 = self.times[i], self.positions[i], self.times[i + 1], self.positions[i + 1]
        written_at = t0 + (position - p0) / (p1 - p0) * (t1 - t0)
        return max(0.0, now - written_at)


@dataclass
class LagSummary:
    """What the apply log records: the WAL written during the run and the worst lag seen."""

    wal_bytes: int = 0
    max_lag_seconds: float = 0.0
    max_lag_of: str = ""
    waited_seconds: float = 0.0
    waits: int = 0
    unmeasured: str = ""      # why the standbys could not be measured, when they could not

    def to_dict(self) -> dict:
        return {"wal_bytes": self.wal_bytes, "max_lag_seconds": round(self.max_lag_seconds, 3),
                "max_lag_of": self.max_lag_of, "waited_seconds": round(self.waited_seconds, 3),
                "waits": self.waits, "unmeasured": self.unmeasured}


def measure(conn: psycopg.Connection, clock: WalClock, now: float) -> tuple[list[Behind], bool]:
    """Every standby and logical slot, how far behind; and whether some standby's position was hidden
    (pg_stat_replication shows positions only to superusers and members of pg_read_all_stats)."""
    at = position(conn)
    clock.add(now, at)
    out, hidden = [], False
    for name, host, replay, reported in conn.execute(STANDBYS).fetchall():
        if replay is None:
            hidden = True
            continue
        where = f" ({host})" if host else ""
        out.append(Behind(f"standby {name!r}{where}", clock.seconds_behind(int(replay), now, reported),
                          max(0, at - int(replay))))
    for slot, active, flushed in conn.execute(SLOTS).fetchall():
        if flushed is None:
            continue
        state = "" if active else ", no consumer connected"
        out.append(Behind(f"logical slot {slot!r}{state}", clock.seconds_behind(int(flushed), now),
                          max(0, at - int(flushed))))
    return out, hidden


class Throttle:
    """Between the batches of a step: wait while a replica is more than `max_lag` seconds behind."""

    def __init__(self, max_lag: float, wait_timeout: float, say: Callable[[str], None], command: str, *,
                 poll: float = 0.5, report_every: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.max_lag = max_lag
        self.wait_timeout = wait_timeout
        self.say = say
        self.command = command
        self.poll = poll
        self.report_every = report_every
        self.now = clock
        self.wal = WalClock()
        self.summary = LagSummary()
        self.start_position: int | None = None

    @property
    def enabled(self) -> bool:
        return self.max_lag > 0

    def start(self, conn: psycopg.Connection) -> None:
        """At the start of the run: where the WAL is (for the bytes written) and the first measure."""
        self.start_position = position(conn)
        if self.enabled:
            self._measure(conn)

    def finish(self, conn: psycopg.Connection) -> None:
        """At the end of the run: the WAL written meanwhile (by the run and whatever else wrote)."""
        if self.start_position is None or conn.closed:
            return
        try:
            self.summary.wal_bytes = position(conn) - self.start_position
        except psycopg.Error:   # the connection broke: the run's own error is the one to report
            pass

    def _measure(self, conn: psycopg.Connection) -> list[Behind]:
        behind, hidden = measure(conn, self.wal, self.now())
        if hidden and not self.summary.unmeasured:
            self.summary.unmeasured = ("pg_stat_replication hides the standbys' positions from this role (grant it "
                                       "pg_read_all_stats): the throttle watches the logical slots only")
            self.say(f"    note: {self.summary.unmeasured}")
        for b in behind:
            if b.seconds > self.summary.max_lag_seconds:
                self.summary.max_lag_seconds, self.summary.max_lag_of = b.seconds, b.what
        return [b for b in behind if b.seconds > self.max_lag]

    def between_batches(self, conn: psycopg.Connection, label: str) -> None:
        """Measure; while a replica is too far behind, wait (saying so) up to `wait_timeout`, then stop."""
        if not self.enabled:
            return
        late = self._measure(conn)
        if not late:
            return
        started = reported = self.now()
        self.summary.waits += 1
        bound = f"--max-replica-lag {self.max_lag:g}s"
        self.say(f"    {label}: waiting for replicas to catch up ({bound}): {self._line(late)}")
        while late:
            waited = self.now() - started
            if waited >= self.wait_timeout:
                self.summary.waited_seconds += waited
                raise LagTimeout(
                    f"{label}: stopped after waiting {waited:.0f}s (--wait-timeout {self.wait_timeout:g}) for replicas "
                    f"to catch up ({bound}): {self._line(late)}; the batches done stay done: run "
                    f"{self.command} again once it has caught up, it resumes")
            time.sleep(self.poll)
            late = self._measure(conn)
            if late and self.now() - reported >= self.report_every:
                reported = self.now()
                self.say(f"    {label}: still waiting ({self.now() - started:.0f}s): {self._line(late)}")
        waited = self.now() - started
        self.summary.waited_seconds += waited
        self.say(f"    {label}: replicas caught up after {waited:.1f}s; going on")

    @staticmethod
    def _line(late: list[Behind]) -> str:
        return "; ".join(b.describe() for b in late)

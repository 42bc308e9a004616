"""Runs the per-table checks: one aggregate pass per table, the set of known sessions built once.

- Every table gets one statement (`count(*)` and every measure that does not need the set, in one
  read): NULL, malformed and non-canonical keys, unknown users, and keys missing from the master
  (`USES_MASTER`: a join with the master alone, hashed, no DISTINCT when its key is unique).
- The set of sessions (`scan.pass_sql.session_set`: one row per session of the master, the source
  table and the other key tables, with its rows per table and its smallest and largest user id) is
  built once, by a statement that reads it once, as the grouping emits it, for every measure over
  the set (missing master rows, orphans per table, conflicting users, sessions per week) and their
  samples; on several connections, in parts, one key range of session ids each (`key_ranges`), whose
  rows add up to the whole set's (`pass_sql.merge_set_rows`).
- No statement is read through a cursor: the server runs a cursor's (a portal's) query without
  parallel workers. Each statement has its own statement timeout: one that times out marks its
  checks `error`; the rest continue.
- A table whose measures join the known sessions row by row (none of the built-in checks: they
  measure over the set or look keys up in the master) gets a statement of its own after the set.
- Samples over the set are columns of the set's statement: the sessions with the defect collected
  per week of their first row (unordered), then the first n of them (top-N). Samples over a table,
  with one connection, come from a second statement restricted to the defective rows, run only when
  the table's pass counted some: an ordered `array_agg` in the pass would keep the server from reading
  the table in parallel (PostgreSQL 15 has no parallel array_agg), and the source table is the largest
  of all. On several connections, where no statement runs in parallel, they are aggregates of the pass
  itself. Each sample is `array_agg(... ORDER BY ...) FILTER (WHERE defect)[1:n]`: only n values per
  finding leave the server.

Everything runs inside the scan's read-only transaction (one snapshot): no temporary table, so it
works on a standby. With helper connections (`run(helpers)`: `--jobs`, each in the same exported
snapshot, see scanner.shared_snapshot) every connection takes the next piece of work (a part of the
set, a table's pass, the report's row counts per partition) until none is left. The largest table's pass,
when read in parts of its partitions, counts each partition's rows itself (`pass_sql.leaf_pass`): the
report's rows per partition then cost no read of that table of their own.
"""
from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql

from yumai_audit.checks.base import (
    OVER_SESSIONS,
    OVER_TABLE,
    USES_KNOWN,
    USES_SESSION_ROWS,
    USES_SESSION_USERS,
    Check,
    Measure,
    Sample,
    TableCheck,
    count_where,
)

from .. import lockbudget
from ..context import AuditContext, KeyTable
from ..model import Finding
from ..pgversion import PRESORTED_AGGREGATE
from ..rows import one_row
from ..sqlparts import LEAVES_PER_STATEMENT
from .key_ranges import key_ranges
from .pass_sql import (
    SetSample,
    Weeks,
    leaf_pass,
    merge_samples,
    merge_set_rows,
    sample_aggregate,
    sample_pass,
    set_statement,
    table_pass,
)
from .stats import leaves_readable_query

SESSIONS = "the set of known sessions"
# What a pass's column holds when it is not a check's measure (a name no measure can have):
SAMPLE_COLUMN = "\0sample"              # a check's sample of defective keys
SAMPLE_ROWS_COLUMN = "\0sample_rows"    # over a table: how many rows its sample's predicate holds for
WEEKS_COLUMN = "\0weeks"                # the set's sessions by week


@dataclass
class _Entry:
    """One (check, target): its declared measures, then the values measured."""

    check: Check
    target: KeyTable
    measures: dict[str, Measure]
    values: dict[str, int] = field(default_factory=dict)
    sample: list = field(default_factory=list)      # the sample, aggregated in the same pass
    table_sample: Sample | None = None                # over a table: fetched by a second statement
    sample_rows: int = 0                              # ... when its predicate holds for some row


@dataclass
class _Pass:
    """One statement's worth of work: a table (or the known set when `target` is None)."""

    target: KeyTable | None
    # (entry, measure name or SAMPLE_COLUMN, expression, joins it needs); the set's weeks have no entry, and the
    # set's samples and weeks are declarations (SetSample, Weeks) that pass_sql.set_statement renders
    columns: list[tuple[_Entry | None, str, sql.Composable | SetSample | Weeks, frozenset]] = field(
        default_factory=list)

    @property
    def joins(self) -> frozenset:
        return frozenset().union(*(c[3] for c in self.columns))

    @property
    def name(self) -> str:
        return str(self.target.name) if self.target is not None else SESSIONS

    @property
    def key_table(self) -> KeyTable:
        """The table of a table's pass (the set's pass has none)."""
        if self.target is None:
            raise TypeError(f"{SESSIONS} is not a table")
        return self.target

    def checks_columns(self) -> list[tuple[_Entry, str, sql.Composable, frozenset]]:
        """The columns of a table's pass: each a check's measure or its sample's row count, an SQL expression."""
        out = []
        for entry, key, expression, joins in self.columns:
            if entry is None or not isinstance(expression, sql.Composable):
                raise TypeError(f"{self.name}: a table's pass holds the checks' expressions only")
            out.append((entry, key, expression, joins))
        return out

    @property
    def owners(self) -> list[str]:
        return list(dict.fromkeys(c[0].check.id for c in self.columns if c[0] is not None))

    def without_known(self) -> tuple[_Pass, _Pass]:
        """(the columns that need no known set, those that do)."""
        return (_Pass(self.target, [c for c in self.columns if USES_KNOWN not in c[3]]),
                _Pass(self.target, [c for c in self.columns if USES_KNOWN in c[3]]))


@dataclass
class _Split:
    """A table's pass read in parts, some of its leaf partitions each, on whichever connection is free: the
    parts' rows, until all are in."""

    count: int
    rows: list[list] = field(default_factory=list)
    leaf_rows: dict[tuple[str, str], int] = field(default_factory=dict)     # (schema, partition): rows
    seconds: float = 0.0
    failed: bool = False


#: A table's pass is read in parts (its leaf partitions shared out) only when every measure adds up over them:
#: a count of rows or a sum (not a count of distinct values); its samples are merged (`merge_samples`).
ADDITIVE = ("count(*) FILTER (WHERE ", "coalesce(sum(")


def _set_timeout(conn: psycopg.Connection, timeout: float | None) -> None:
    if timeout:
        conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(f"{int(timeout * 1000)}ms")))


#: What a table's pass costs per byte when its key is text, against a uuid or integer key: each row's key is
#: trimmed and matched against the uuid patterns for several measures. On the daily shape (PostgreSQL 15 and 18,
#: scale 20), user_feedback's pass (varchar key) took 14-19 ms per MB of the table, the uuid-keyed tables' 1.4-4.5.
TEXT_KEY_COST = 5


def pass_cost(k: KeyTable) -> int:
    """A table pass's expected cost, for taking the costliest first (with several connections, a costly pass
    taken last runs alone while the others wait): the table's bytes, weighted by `TEXT_KEY_COST` for a text key."""
    return int(k.table.bytes or 0) * (TEXT_KEY_COST if k.key.is_text else 1)


@contextlib.contextmanager
def statement_settings(conn: psycopg.Connection, settings: dict[str, str]):
    """`settings` for the statements inside, then back to what they were (in a savepoint: an error
    inside reverts them too). None: nothing is sent."""
    if not settings:
        yield
        return
    with conn.transaction():
        before = {}
        for name, value in settings.items():
            before[name] = one_row(conn.execute("SELECT current_setting(%s)", (name,)))[0]
            conn.execute("SELECT set_config(%s, %s, true)", (name, value))
        yield
        for name, value in before.items():
            conn.execute("SELECT set_config(%s, %s, true)", (name, value))


#: The set's statement: its grouping by week hashed (the planner, which cannot estimate how many sessions
#: the union groups into, expects 200 and would sort them all, the statement's only sort).
SET_SETTINGS = {"enable_sort": "off"}
#: The memory the set's grouping may take before it spills to disk, when the server's work_mem is lower:
#: with hash_mem_multiplier 2, enough for a part of half a million sessions to group in memory, where the
#: default 4 MB spills it to disk in batches. A limit, not an allocation: a smaller set takes what it
#: needs, a larger one spills as before.
SET_WORK_MEM_KB = 64 * 1024
#: A statement on one of several connections: no parallel workers (the connections are the parallelism:
#: a parallel grouping of the set merges as many partial groups as it has sessions, and a parallel
#: table pass cannot take its samples in the same read).
SERIAL = {"max_parallel_workers_per_gather": "0"}
#: A table's pass on one of several connections takes its samples in the same read, as ordered
#: aggregates of the defective rows. From PostgreSQL 16 the planner sorts the whole table for one of
#: them instead (presorted aggregates): every row sorted, on disk for a large table, to sample a few.
NO_PRESORT = {"enable_presorted_aggregate": "off"}


def execute_in_savepoint(conn: psycopg.Connection, query: sql.SQL | sql.Composed,
                         timeout: float | None) -> list[tuple[Any, ...]]:
    """Run one query inside a savepoint, so that a timeout leaves the scan's transaction usable."""
    with conn.transaction():
        _set_timeout(conn, timeout)
        return conn.execute(query).fetchall()


def _table_sample(entry: _Entry) -> Sample:
    """The sample of a check whose table pass counted the rows it comes from (`sample_rows`)."""
    if entry.table_sample is None:
        raise TypeError(f"{entry.check.id}: no sample over its table")
    return entry.table_sample


class TablePasses:
    def __init__(self, conn, ctx: AuditContext, checks: list[Check], targets: dict, timer, say, weeks=None,
                 partition_rows: dict | None = None):
        """`weeks`: ([(key table, its time column)], most weeks) to also count sessions per week of their
        first row over the same set (the report's chart: `weeks_rows`, as stats.sessions_by_week_query
        returns them), instead of grouping every key table once more. `partition_rows`: where a table's pass
        read in parts of its partitions puts its rows per partition, counted in the same read ({table:
        {(schema, partition): rows}}, as stats.count_partitions gives them): the table is in it, None, from
        the moment `run` decides so (before any work starts) until its pass ends (None still if it fails)."""
        self.conn, self.ctx, self.timer = conn, ctx, timer
        self._lock = threading.Lock()     # results and progress, when passes run on several connections

        def locked_say(message: str) -> None:
            with self._lock:
                say(message)
        self.say = locked_say
        self.timeout = ctx.config.timeout_seconds
        self.limit = ctx.config.sample_size
        self.errors: dict[str, str] = {}
        self.exact_rows: dict[str, int] = {}
        self.partition_rows: dict[str, dict | None] = partition_rows if partition_rows is not None else {}
        self.known_sessions: int | None = None
        self._set_failed: str | None = None       # why a part of the set of sessions was not built
        self.serial = False                       # on one of several connections: no parallel workers
        self._set_ended = 0.0                     # when the last part of the set of sessions ended
        self.set_memory: dict[str, str] = {}      # work_mem for the set's statement, when raised
        self.failed: set[tuple[str, str]] = set()     # (check id, table) whose values are incomplete
        self.entries = [_Entry(c, t, c.measures(ctx, t))
                        for c in checks if isinstance(c, TableCheck) for t in targets[c.id]]
        self.tables: dict[str, _Pass] = {}
        self.sessions = _Pass(None)
        self.rows_for: list[KeyTable] = []       # tables whose rows the set counts per session
        for e in self.entries:
            table = self.tables.setdefault(str(e.target.name), _Pass(e.target))
            for mname, m in e.measures.items():
                dest = self.sessions if m.over == OVER_SESSIONS else table
                dest.columns.append((e, mname, m.expression, m.joins))
            sample = e.check.sample(ctx, e.target, None) if self.limit else None
            if sample is not None and sample.over == OVER_SESSIONS:
                self.sessions.columns.append((e, SAMPLE_COLUMN, SetSample(sample, self.limit), sample.joins))
            elif sample is not None:
                # Over a table, the pass only counts the rows the sample would come from (an ordered
                # aggregate would keep the server from reading the table in parallel); the sample
                # itself is read by a second statement, restricted to those rows, when there are any.
                e.table_sample = sample
                table.columns.append((e, SAMPLE_ROWS_COLUMN, count_where(sample.predicate).expression, sample.joins))
        for owner, _, _, joins in self.sessions.columns:
            if owner is not None and USES_SESSION_ROWS in joins and owner.target not in self.rows_for:
                self.rows_for.append(owner.target)
        self.set_users = any(USES_SESSION_USERS in c[3] for c in self.sessions.columns)
        self.first_at = {str(k.name): created for k, created in weeks[0]} if weeks and weeks[0] else None
        self.weeks_rows: list[tuple] | None = None
        if self.first_at:
            self.sessions.columns.append((None, WEEKS_COLUMN, Weeks(weeks[1]), frozenset({USES_KNOWN})))

    # -- running ------------------------------------------------------------------------------------
    def _held(self) -> tuple[dict[str, int], int, int, int]:
        """What each piece of work locks, read from the catalog: (relations per table pass, per part of the
        set, for the report's rows per partition, tables a parallel worker of the set's statement opens)."""
        extras = [t for t in (self.ctx.master, self.ctx.users) if t is not None]
        tables = [k.table for k in self.ctx.key_tables]
        held = lockbudget.held(self.conn, list(dict.fromkeys(t.oid for t in tables + extras)))
        none = lockbudget.Held(0, 0)
        joined = sum((held.get(t.oid, none) for t in extras), none)
        whole = sum((held.get(t.oid, none) for t in tables), joined)
        per_table = {str(k.name): (held.get(k.table.oid, none) + joined).relations for k in self.ctx.key_tables}
        partitioned = sum(held.get(t.oid, none).relations for t in tables if t.is_partitioned)
        return per_table, whole.relations, partitioned, whole.tables

    def run(self, helpers: Sequence[psycopg.Connection] = (),
            extra: Sequence[Callable[[psycopg.Connection], None]] = (),
            budget: tuple[lockbudget.LockSettings, int] | None = None) -> None:
        """The per-table passes, the set of sessions and `extra` work (callables taking a connection:
        the scanner's report statistics). With `helpers` (more connections in the same snapshot), the set
        is built in as many parts as there are connections, one key range each (`key_ranges`), and every
        connection takes the next piece of work until none is left: the parts first, then the tables,
        largest first. Each statement then runs without parallel workers (the connections are the
        parallelism). Each part reads every key table, so two parts cost more server time than one, but
        on two free cores they end sooner.

        `budget` (the server's lock settings, and the relations the first connection may lock): the first
        connection keeps its locks until the scan ends; a helper runs each piece of work in a savepoint
        rolled back once its rows are read, which releases that piece's locks, and takes only the pieces
        whose locks fit what the lock table has spare beside the first connection (the helpers' together).
        The set is built in as many parts as fit so (one on the first connection at least), and with one
        connection its statements get only the parallel workers whose locks fit."""
        known = [p for p in self.tables.values() if USES_KNOWN in p.joins and not p.key_table.is_source]
        # the largest table first (its pass may be read in parts, below), then the others, the costliest first
        plain = sorted((p for p in self.tables.values() if p not in known),
                       key=lambda p: -int(p.key_table.table.bytes or 0))
        plain[1:] = sorted(plain[1:], key=lambda p: -pass_cost(p.key_table))
        conns = [self.conn, *helpers]
        self.serial = len(conns) > 1
        wanted = bool(known or self.sessions.columns)
        spare = None if budget is None else max(budget[0].free - budget[1], 0)
        per_table, per_part, partitioned, worker_tables = self._held() if spare is not None else ({}, 0, 0, 0)
        count = len(conns)
        if spare is not None and wanted:
            count = 1 + lockbudget.parts_that_fit(spare, per_part, len(helpers))
            if count < len(conns) and budget is not None:
                self._note(lockbudget.spare_line(budget[0], budget[1], per_part, count, len(conns)))
        if spare is not None and not self.serial:
            self._fit_workers(spare, worker_tables)
        ranges = key_ranges(self.conn, self.ctx, count) if wanted else []
        if ranges:
            work_mem = self.conn.execute("SELECT pg_size_bytes(current_setting('work_mem')) / 1024").fetchone()[0]
            self.set_memory = {"work_mem": f"{SET_WORK_MEM_KB}kB"} if work_mem < SET_WORK_MEM_KB else {}
            self.say(f"building {SESSIONS}" + (f" in {len(ranges)} key ranges" if len(ranges) > 1 else "")
                     + " (reads the key tables once more)")
        parts: dict[int, list] = {}
        serial_settings = SERIAL if self.serial else {}

        def set_part(key_range: tuple, conn: psycopg.Connection) -> None:
            self._run_set_part(key_range, ranges.index(key_range), len(ranges), conn, parts)

        def table(p: _Pass, conn: psycopg.Connection) -> None:
            self._run_plain(p, conn, serial=self.serial)

        def piece(p: _Pass, leaves: list, split: _Split, conn: psycopg.Connection) -> None:
            self._run_piece(p, leaves, split, conn)

        def more(f: Callable[[psycopg.Connection], None], conn: psycopg.Connection) -> None:
            with statement_settings(conn, serial_settings):
                f(conn)

        # each piece of work as (the locks it takes, a call on a connection): the parts of the set, the
        # tables, the extra work
        work_items: list[tuple[int, Callable[[psycopg.Connection], None]]] = []
        work_items += [(per_part, functools.partial(set_part, r)) for r in ranges]
        # The largest table's pass, when partitioned, in parts of its partitions: it is the last piece of work
        # left when the parts of the set end, and would run on one connection while the others wait.
        groups = self._leaf_groups(plain[0], len(conns)) if self.serial and plain else None
        for p in plain:
            if groups and p is plain[0]:
                split = _Split(len(groups))
                # its rows per partition are counted in the same read (`leaf_pass`), not by the report's statement
                self.partition_rows[p.name] = None
                work_items += [(per_table.get(p.name, 0), functools.partial(piece, p, g, split)) for g in groups]
            else:
                work_items.append((per_table.get(p.name, 0), functools.partial(table, p)))
        work_items += [(partitioned, functools.partial(more, f)) for f in extra]
        failures: list[BaseException] = []
        free = [spare]        # what the helpers may still lock (None: no budget)
        started = time.monotonic()      # the parts are the first pieces of work: each starts on a connection now

        def take(first: bool) -> tuple[int, Callable[[psycopg.Connection], None]] | None:
            """The next piece of work for a connection (a helper: the next whose locks fit), or None."""
            with self._lock:
                if failures:
                    return None
                for i, (locks, _item) in enumerate(work_items):
                    if first or free[0] is None or locks <= free[0]:
                        if not first and free[0] is not None:
                            free[0] -= locks
                        return work_items.pop(i)
                return None

        def work(conn, first: bool) -> None:
            try:
                while (taken := take(first)) is not None:
                    locks, item = taken
                    if first:
                        item(conn)
                        continue
                    try:
                        with conn.transaction(force_rollback=True):     # releases the piece's locks
                            item(conn)
                    finally:
                        if free[0] is not None:
                            with self._lock:
                                free[0] += locks
            except BaseException as exc:      # re-raised by the scan's thread: a lost connection is not a finding
                failures.append(exc)

        threads = [threading.Thread(target=work, args=(c, False), name=f"yumai-audit-pass-{i}", daemon=True)
                   for i, c in enumerate(helpers[:max(len(work_items) - 1, 0)])]
        for t in threads:
            t.start()
        try:
            work(self.conn, True)
        finally:
            for t in threads:
                t.join()
        if failures:
            raise failures[0]
        if ranges:
            self._finish_set(known, [parts[i] for i in range(len(ranges))] if len(parts) == len(ranges) else None,
                             max(self._set_ended - started, 0.0))

    def _note(self, line: str) -> None:
        """A line for the progress and the report's notes."""
        self.say(line)
        self.ctx.notes.append(line)

    def _fit_workers(self, spare: int, tables: int) -> None:
        """With one connection, no more parallel workers per statement than the lock table can hold beside
        it (each worker locks the tables it scans), for the rest of the scan's transaction."""
        if tables <= 0:
            return
        workers = int(one_row(self.conn.execute("SELECT current_setting('max_parallel_workers_per_gather')::int"))[0])
        fit = spare // tables
        if fit < workers:
            self.conn.execute(sql.SQL("SET LOCAL max_parallel_workers_per_gather = {}").format(sql.Literal(fit)))
            self._note(f"{fit} parallel workers per statement, not {workers}: each locks about {tables:,} tables, "
                       f"and the server's lock table has {spare:,} free beside the scan's connection")

    def _run_set_part(self, key_range, index: int, count: int, conn, parts: dict) -> None:
        """One part of the set of sessions (all of it with one range), in one statement read whole: no
        cursor, since the server runs a cursor's (a portal's) query without parallel workers. With
        several parts, each runs in its own process (no parallel workers: the parts are the parallelism)."""
        if self._set_failed:
            return
        p = self.sessions
        statement = set_statement(self.ctx, [c[2] for c in p.columns], self.rows_for, self.set_users, self.first_at,
                                  key_range if count > 1 else None)
        started = time.monotonic()
        try:
            with statement_settings(conn, {**SET_SETTINGS, **self.set_memory, **(SERIAL if self.serial else {})}):
                (values,), = execute_in_savepoint(conn, statement, self.timeout)
        except pgerrors.QueryCanceled:
            with self._lock:
                self._set_failed = f"timed out building {SESSIONS} after {self.timeout:g}s"
                self._set_ended = max(self._set_ended, time.monotonic())
            return
        with self._lock:
            parts[index] = values
            self._set_ended = max(self._set_ended, time.monotonic())
        if count > 1:
            self.say(f"built part {index + 1} of {count} of {SESSIONS} in {time.monotonic() - started:.1f}s")

    def _finish_set(self, known: list[_Pass], rows: list | None, seconds: float) -> None:
        """The parts' rows merged into the set's one row and recorded; then the tables whose measures join
        the known sessions row by row (a check of a kind the built-in ones are not: they measure over the
        set, or look keys up in the master alone), a statement each."""
        p = self.sessions
        if rows is None:
            # The set itself could not be built in time: the checks that need it are in error; what
            # the remaining tables measure without it is still measured, and so is a measure over the
            # set that has a form over its table's rows alone (`unvalidated_fk`: the table's keys
            # looked up in the master), each table in a statement of its own.
            reason = self._set_failed or f"{SESSIONS} could not be built"
            alone = self._without_set(p)
            measured = {id(e) for q in alone for e, *_ in q.columns}
            self._fail(_Pass(None, [c for c in p.columns if id(c[0]) not in measured]), reason, seconds)
            self.say(reason)
            for q in alone:
                self._run_plain(q, self.conn)
            for q in known:
                plain, needs_known = q.without_known()
                self._fail(needs_known, reason, 0.0)
                if plain.columns or q.target is not None:
                    self._run_plain(plain, self.conn)
            return
        self._record(p, merge_set_rows([c[2] for c in p.columns], rows), seconds)
        self.say(f"built {SESSIONS} in {seconds:.1f}s: {self.known_sessions:,} known sessions")
        for q in known:
            self._run_plain(q, self.conn)

    def _without_set(self, p: _Pass) -> list[_Pass]:
        """Per table, the measures over the set whose check measures them as well over the table's rows
        alone, with no set of sessions (`row_measures` over the table, no `USES_KNOWN`), as passes."""
        out: dict[str, _Pass] = {}
        entries = {id(c[0]): c[0] for c in p.columns if c[0] is not None}     # an entry is not hashable
        for e in entries.values():
            names = [key for entry, key, _, _ in p.columns if entry is e and key in e.measures]
            alone = e.check.row_measures(self.ctx, e.target) or {}
            sampled = any(entry is e for entry, key, _, _ in p.columns if key == SAMPLE_COLUMN)
            if not names or sampled or any(n not in alone or alone[n].over != OVER_TABLE
                                           or USES_KNOWN in alone[n].joins for n in names):
                continue
            q = out.setdefault(str(e.target.name), _Pass(e.target))
            q.columns += [(e, n, alone[n].expression, alone[n].joins) for n in names]
        return list(out.values())

    def _record(self, p: _Pass, values: list, seconds: float) -> None:
        with self._lock:
            self._record_values(p, values, seconds)

    def _record_values(self, p: _Pass, values: list, seconds: float) -> None:
        self.timer.add(p.owners, seconds)
        if p.target is not None:
            self.exact_rows[p.name] = int(values[0])
        else:
            self.known_sessions = int(values[0])
        values = values[1:]
        for (entry, key, _, _), value in zip(p.columns, values):
            if key == WEEKS_COLUMN:
                self.weeks_rows = [tuple(w) for w in value or []]
                continue
            if entry is None:
                raise TypeError(f"{p.name}: a column other than the weeks without its check")
            if key == SAMPLE_COLUMN:
                entry.sample = [str(v) for v in value or []]
            elif key == SAMPLE_ROWS_COLUMN:
                entry.sample_rows = int(value or 0)
            else:
                entry.values[key] = int(value or 0)

    def _fail(self, p: _Pass, reason: str, seconds: float) -> None:
        with self._lock:
            self._fail_entries(p, reason, seconds)

    def _fail_entries(self, p: _Pass, reason: str, seconds: float) -> None:
        self.timer.add(p.owners, seconds)
        for entry, *_ in p.columns:
            if entry is None:
                continue
            self.errors.setdefault(entry.check.id, reason)
            self.failed.add((entry.check.id, str(entry.target.name)))

    def _run_plain(self, p: _Pass, conn, serial: bool = False) -> None:
        """One table's pass. `serial` (on one of several connections): without parallel workers, and
        the samples taken in the same read (each an ordered aggregate of the defective rows only),
        not by a second statement that reads the table again."""
        self.say(f"scanning {p.name}")
        started = time.monotonic()
        if serial:
            p = self._sampled_in_pass(p)
        measures = self._measures(p)
        settings = self._serial_settings() if serial else {}
        try:
            with statement_settings(conn, settings):
                row = execute_in_savepoint(conn, table_pass(self.ctx, p.key_table, measures, hoist=serial),
                                           self.timeout)[0]
        except pgerrors.QueryCanceled:
            self._fail(p, f"timed out on {p.name} after {self.timeout:g}s", time.monotonic() - started)
            self.say(f"timed out on {p.name}")
            return
        self._record(p, list(row), time.monotonic() - started)
        wanted = [e for e, key, _, _ in p.checks_columns() if key == SAMPLE_ROWS_COLUMN and e.sample_rows]
        if wanted:
            self._run_samples(p.key_table, wanted, conn)
        self.say(f"scanned {p.name} in {time.monotonic() - started:.1f}s")

    def _sampled_in_pass(self, p: _Pass) -> _Pass:
        """A table's pass with its samples taken in the same read (ordered aggregates of the defective rows)."""
        return _Pass(p.target, [(e, SAMPLE_COLUMN, sample_aggregate(_table_sample(e), self.limit), joins)
                                if key == SAMPLE_ROWS_COLUMN else (e, key, expr, joins)
                                for e, key, expr, joins in p.checks_columns()])

    @staticmethod
    def _measures(p: _Pass) -> dict[str, Measure]:
        return {f"{e.check.id}.{key}": Measure(expr, joins) for e, key, expr, joins in p.checks_columns()}

    def _serial_settings(self) -> dict[str, str]:
        return {**SERIAL, **(NO_PRESORT if self.ctx.catalog.server_version_num >= PRESORTED_AGGREGATE else {})}

    def _leaf_groups(self, p: _Pass, count: int) -> list[list] | None:
        """The leaf partitions of a partitioned table's pass in up to `count` groups of about the same size on
        disk (more, of at most LEAVES_PER_STATEMENT leaves each, when there are many); None when its table is
        not partitioned into two or more, a measure does not add up over parts of the table (ADDITIVE), or a
        partition read directly would not give the rows the table gives (the role may not read it, row
        security: stats.leaves_readable_query, as the report's rows per partition)."""
        table = p.key_table.table
        leaves = table.leaf_partitions if table.is_partitioned else []
        if count < 2 or len(leaves) < 2:
            return None
        for _entry, key, expression, _joins in p.checks_columns():
            text = expression.as_string(self.conn)
            if key != SAMPLE_ROWS_COLUMN and (not text.startswith(ADDITIVE) or "DISTINCT" in text.upper()):
                return None
        # read directly, a partition must give what the table gives: the role may read each, no row security
        with self.conn.transaction():
            if not one_row(self.conn.execute(leaves_readable_query(table)))[0]:
                return None
        # at most LEAVES_PER_STATEMENT leaves a part (a part is one UNION ALL of its leaves: sqlparts.py says why),
        # so with many partitions more parts than connections, on whichever connection is free
        parts = max(min(count, len(leaves)), -(-len(leaves) // LEAVES_PER_STATEMENT))
        cap = -(-len(leaves) // parts)
        groups: list[list] = [[] for _ in range(parts)]
        sizes = [0] * len(groups)
        for leaf in sorted(leaves, key=lambda q: (-int(q.bytes or 0), str(q.name))):
            i = min((j for j in range(parts) if len(groups[j]) < cap), key=lambda j: sizes[j])
            groups[i].append(leaf)
            sizes[i] += int(leaf.bytes or 0)
        return [sorted(g, key=lambda q: str(q.name)) for g in groups]

    def _run_piece(self, p: _Pass, leaves: list, split: _Split, conn) -> None:
        """One part of a table's pass (on one of several connections): its rows over `leaves`, some of the
        table's leaf partitions, and each of those partitions' rows, counted in the same read (`leaf_pass`: the
        report's rows per partition, `partition_rows`). The part that ends last adds the parts' rows up
        (`_merge_pieces`) and records them as the pass's; a part that times out fails the pass (and its rows per
        partition stay None: timed out)."""
        if split.failed:
            return
        self.say(f"scanning {p.name}, {len(leaves)} of its {len(p.key_table.table.leaf_partitions)} partitions")
        started = time.monotonic()
        q = self._sampled_in_pass(p)
        statement = leaf_pass(self.ctx, q.key_table, [(_table_sample(e) if key == SAMPLE_COLUMN else expression, joins)
                                                      for e, key, expression, joins in q.checks_columns()],
                              self.limit, leaves)
        try:
            with statement_settings(conn, self._serial_settings()):
                *row, by_leaf = execute_in_savepoint(conn, statement, self.timeout)[0]
        except pgerrors.QueryCanceled:
            with self._lock:
                first, split.failed = not split.failed, True
            if first:
                self._fail(q, f"timed out on {p.name} after {self.timeout:g}s", time.monotonic() - started)
                self.say(f"timed out on {p.name}")
            return
        with self._lock:
            split.rows.append(list(row))
            split.leaf_rows.update({(leaves[i].name.schema, leaves[i].name.name): int(n) for i, n in by_leaf or []})
            split.seconds += time.monotonic() - started
            last = len(split.rows) == split.count and not split.failed
        if last:
            self._record(q, self._merge_pieces(q, split.rows, conn), split.seconds)
            with self._lock:
                self.partition_rows[p.name] = split.leaf_rows
            self.say(f"scanned {p.name} in {split.count} parts, {split.seconds:.1f}s in all")

    def _merge_pieces(self, q: _Pass, rows: list[list], conn) -> list:
        """The row of a table's pass from its parts' rows: counts added up, each sample the first of the parts'
        samples together, in the server's order (`merge_samples`, on `conn`)."""
        merged: list[Any] = [sum(int(r[0] or 0) for r in rows)]
        for i, (entry, key, _, _) in enumerate(q.checks_columns(), start=1):
            if key != SAMPLE_COLUMN:
                merged.append(sum(int(r[i] or 0) for r in rows))
                continue
            values = [v for r in rows for v in (r[i] or [])]
            if not values:
                merged.append(None)
                continue
            statement, params = merge_samples(values, _table_sample(entry).distinct, self.limit)
            with conn.transaction():
                merged.append(one_row(conn.execute(statement, params))[0])
        return merged

    def _run_samples(self, target: KeyTable, entries: list[_Entry], conn) -> None:
        """One statement for the samples of a table's failing checks, over the rows they come from."""
        started = time.monotonic()
        p = _Pass(target, [(e, SAMPLE_COLUMN, sql.SQL(""), _table_sample(e).joins) for e in entries])
        statement = sample_pass(self.ctx, target, [_table_sample(e) for e in entries], self.limit)
        try:
            row = execute_in_savepoint(conn, statement, self.timeout)[0]
        except pgerrors.QueryCanceled:
            self._fail(p, f"timed out on {p.name} after {self.timeout:g}s", time.monotonic() - started)
            self.say(f"timed out on {p.name}")
            return
        with self._lock:
            self.timer.add(p.owners, time.monotonic() - started)
            for e, value in zip(entries, row):
                e.sample = [str(v) for v in value or []]

    # -- judging ------------------------------------------------------------------------------------
    def findings(self) -> dict[str, list[Finding]]:
        out: dict[str, list[Finding]] = defaultdict(list)
        for e in self.entries:
            if (e.check.id, str(e.target.name)) in self.failed:
                continue
            for finding in e.check.judge(self.ctx, e.target, {m: e.values.get(m, 0) for m in e.measures}):
                self._sample(e, finding)
                out[e.check.id].append(finding)
        return out

    def _sample(self, e: _Entry, finding: Finding) -> None:
        sample = e.check.sample(self.ctx, e.target, finding)
        if sample is None or not self.limit:
            return
        finding.sample = list(e.sample)
        finding.details.setdefault("sample_of", sample.of)

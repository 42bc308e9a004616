"""Runs the checks against a database: one READ ONLY, REPEATABLE READ transaction, nothing written.

Per table, the measures of every check that applies are computed in one aggregate pass; samples are
fetched only for failing findings; database-wide checks run their own query; catalog checks read
the catalog snapshot; schema-wide checks (any table) run their probes, each once. A statement
timeout turns the checks of that query into `error`, not a crash.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql

from yumai_audit.checks import all_checks
from yumai_audit.checks.base import CatalogCheck, Check, probes_of

from .. import lockbudget
from ..config import Config
from ..connection import APPLICATION_NAME, set_local
from ..context import AuditContext, audit_context
from ..errors import ConfigError, first_line
from ..model import CheckResult, Finding, ScanResult, Status, TableInventory
from ..rows import one_row
from .passes import TablePasses, execute_in_savepoint
from .stats import MAX_WEEKS, collect_stats, count_partitions, week_tables

Progress = Callable[[str], None]


def select_checks(config: Config) -> list[Check]:
    """The checks `checks` names (all by default), less those `exclude` names."""
    checks = all_checks()
    known = {c.id for c in checks}
    for option, ids in (("check", config.checks), ("excluded check", config.exclude)):
        unknown = [c for c in ids if c not in known]
        if unknown:
            raise ConfigError(f"unknown {option} {unknown[0]!r}; known checks: {', '.join(sorted(known))}")
    if config.checks:
        checks = [c for c in checks if c.id in config.checks]
    return [c for c in checks if c.id not in config.exclude]


class _Timer:
    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    def add(self, check_ids, seconds: float) -> None:
        for cid in check_ids:
            self.seconds[cid] += seconds


# Memory for the hash tables of one scan (the known-session set is one hash entry per session, about
# 260 bytes each: 1M sessions fit without spilling to disk, also when no parallel worker is free and
# one process aggregates them all); only ever raised, never lowered; SET LOCAL, so it ends with the
# scan's transaction (allowed read-only).
SCAN_WORK_MEM_KB = 256 * 1024


def session_settings(conn: psycopg.Connection, extra: dict[str, str] | None = None) -> None:
    """The scan's settings, local to its transaction (`extra`: the caller's, e.g. no parallel workers)."""
    set_local(conn, {"application_name": APPLICATION_NAME + " scan", **(extra or {})})
    current = int(one_row(conn.execute("SELECT setting FROM pg_settings WHERE name = 'work_mem'"))[0])
    if current < SCAN_WORK_MEM_KB:
        conn.execute(sql.SQL("SET LOCAL work_mem = {}").format(sql.Literal(f"{SCAN_WORK_MEM_KB}kB")))
    # The aggregates' cost estimates are huge (row estimates of the known set are poor), which makes
    # the JIT compile for seconds what runs in less.
    conn.execute("SET LOCAL jit = off")


# Connections of a scan by default (`--jobs`), in the same snapshot: the set of sessions in two parts,
# one on each, then the per-table passes on whichever is free (scan/passes.py: TablePasses.run).
DEFAULT_JOBS = 2


def _read_only(conn: psycopg.Connection) -> None:
    conn.read_only = True
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.autocommit = False


@contextlib.contextmanager
def shared_snapshot(conn: psycopg.Connection, connect: Callable[[], psycopg.Connection] | None, helpers: int,
                    say: Progress, settings: dict[str, str] | None = None):
    """Up to `helpers` more connections, each in a READ ONLY transaction on the snapshot of `conn`'s
    (exported with pg_export_snapshot and imported with SET TRANSACTION SNAPSHOT, as pg_dump --jobs
    does; both work on a standby): every statement of the scan sees the same data. Fewer (none) when a
    connection cannot be opened or the snapshot cannot be imported: the scan then runs on fewer."""
    opened: list[psycopg.Connection] = []
    try:
        if helpers > 0 and connect is not None:
            snapshot = one_row(conn.execute("SELECT pg_export_snapshot()"))[0]
            for _ in range(helpers):
                try:
                    helper = connect()
                except Exception as exc:       # too many connections, a refused login: fewer jobs
                    reason = first_line(exc)
                    say(f"one connection fewer for the scan: {reason}")
                    break
                opened.append(helper)
                try:
                    _read_only(helper)
                    helper.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
                    session_settings(helper, settings)
                except psycopg.Error as exc:
                    say(f"one connection fewer for the scan: {exc.diag.message_primary or type(exc).__name__}")
                    opened.pop().close()
                    break
        yield opened
    finally:
        for helper in opened:
            helper.close()


def run_scan(conn: psycopg.Connection, config: Config, progress: Progress | None = None, *,
             connect: Callable[[], psycopg.Connection] | None = None, jobs: int = 1,
             settings: dict[str, str] | None = None,
             on_context: Callable[[AuditContext], None] | None = None) -> ScanResult:
    """Scan in a read-only transaction on `conn` (which must not be inside a transaction). With `jobs` > 1
    and `connect` (a new connection to the same database), the scan's work is shared with up to jobs - 1
    more connections, in the same snapshot (`shared_snapshot`; TablePasses.run says what runs where).
    `settings`: more settings for the scan's transactions, local to them (never left on a session).
    `on_context`: called with the audit context the scan read (its catalog, in the scan's snapshot), before
    the scan's statements run: a copy whose notes are the context's own (the scan adds its lines to its own
    copy), for a caller that needs the catalog too (the CLI's repair plan) without reading it again."""
    say = progress or (lambda _msg: None)
    checks = select_checks(config)
    # before the first lock: the first connection may lock every relation it reads, and keeps its locks
    # until the scan ends; the others take only the pieces of work that fit beside it (TablePasses.run)
    budget = lockbudget.check(conn, config.schemas, 1, "the scan", fewer=None)
    _read_only(conn)
    try:
        with conn.transaction():
            session_settings(conn, settings)
            ctx = audit_context(conn, config)
            if on_context is not None:
                on_context(dataclasses.replace(ctx, notes=list(ctx.notes)))
            # the report's sessions per week are counted over the scan's one set of sessions
            weeks: dict[str, Any] = {"tables": week_tables(ctx)[0], "limit": MAX_WEEKS + 1, "rows": None}
            partitions: dict = {}

            def partition_rows(on: psycopg.Connection) -> None:
                # the report's rows per partition: one more read of each partitioned key table whose pass does
                # not count them itself (a pass read in parts of its partitions does: it is in `partitions`
                # before any work starts, TablePasses.run), done on whichever connection is free first
                partitions.update(count_partitions(ctx, lambda q: execute_in_savepoint(on, q, config.timeout_seconds),
                                                   skip=set(partitions)))
            with shared_snapshot(conn, connect, jobs - 1, say, settings) as helpers:
                result = _run(conn, ctx, checks, say, weeks, helpers, extra=[partition_rows], budget=budget,
                              partitions=partitions)
            say("collecting report statistics")
            result.stats.update(collect_stats(ctx, lambda q: execute_in_savepoint(conn, q, config.timeout_seconds),
                                              weeks_rows=weeks["rows"], partition_counts=partitions))
    finally:
        conn.rollback()
    return result


def _run(conn, ctx: AuditContext, checks: list[Check], say: Progress, weeks: dict | None = None,
         helpers: Sequence[psycopg.Connection] = (),
         extra: Sequence[Callable[[psycopg.Connection], None]] = (),
         budget: tuple[lockbudget.LockSettings, int] | None = None, partitions: dict | None = None) -> ScanResult:
    timer = _Timer()
    findings: dict[str, list[Finding]] = defaultdict(list)
    errors: dict[str, str] = {}
    status_targets = {c.id: c.targets(ctx) for c in checks}

    # 1. per-table passes (the known-session set built once: see scan/passes.py)
    passes = TablePasses(conn, ctx, checks, status_targets, timer, say,
                         weeks=(weeks["tables"], weeks["limit"]) if weeks and weeks["tables"] else None,
                         partition_rows=partitions)
    passes.run(helpers, extra, budget)
    if weeks is not None:
        weeks["rows"] = passes.weeks_rows
    errors.update(passes.errors)
    for cid, found in passes.findings().items():
        findings[cid].extend(found)
    exact_rows = passes.exact_rows

    # 2. catalog checks
    for check in checks:
        if isinstance(check, CatalogCheck) and status_targets[check.id]:
            findings[check.id].extend(check.judge_catalog(ctx))

    # 3. schema-wide probes (any table); a probe declared by two checks runs once
    probes = {c.id: probes_of(c, ctx) for c in checks}
    _run_probes(conn, ctx, checks, probes, findings, errors, timer, say)

    results = []
    for check in checks:
        if check.id in errors:
            status, reason = Status.ERROR, errors[check.id]
        elif not status_targets[check.id] and not probes[check.id]:
            status, reason = Status.SKIPPED, check.skip_reason
        elif findings[check.id]:
            status, reason = Status.FAIL, None
        else:
            status, reason = Status.PASS, None
        results.append(CheckResult(check.id, status, timer.seconds[check.id], check.severity, check.description,
                                   reason))
    ordered = [f for check in checks for f in findings[check.id]]
    ordered.sort(key=lambda f: (f.severity.rank, f.check, f.table, f.column or ""))
    catalog = ctx.catalog
    return ScanResult(
        database={"name": catalog.database, "server_version": catalog.server_version},
        generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        config=ctx.config.as_dict(),
        checks=results,
        findings=ordered,
        inventory=inventory(ctx, exact_rows),
        stats={"notes": ctx.notes},
    )


def _run_probes(conn, ctx, checks, probes, findings, errors, timer, say) -> None:
    timeout = ctx.config.timeout_seconds
    done: dict[str, list[tuple]] = {}
    failed: dict[str, str] = {}
    for check in checks:
        results = {}
        for probe in probes[check.id]:
            if probe.key not in done and probe.key not in failed:
                say(f"checking {probe.label}")
                started = time.monotonic()
                try:
                    done[probe.key] = execute_in_savepoint(conn, probe.query, timeout)
                except pgerrors.QueryCanceled:
                    failed[probe.key] = f"timed out on {probe.label} after {timeout:g}s"
                except pgerrors.InsufficientPrivilege as exc:
                    failed[probe.key] = f"{probe.label}: {exc.diag.message_primary or 'permission denied'}"
                timer.add([check.id], time.monotonic() - started)
            if probe.key in done:
                results[probe.key] = done[probe.key]
            elif check.id not in errors:
                errors[check.id] = failed[probe.key]
        if probes[check.id]:
            findings[check.id].extend(check.judge_probes(ctx, results))


def inventory(ctx: AuditContext, exact_rows: dict[str, int]) -> list[TableInventory]:
    out = []
    for k in ctx.key_tables:
        fks = [fk for fk in k.table.fks_on(k.key.name) if ctx.is_master_fk(fk)]
        state = "none" if not fks else ("valid" if any(fk.validated for fk in fks) else "not valid")
        out.append(TableInventory(
            table=str(k.name), kind="partitioned" if k.table.is_partitioned else "table",
            rows=exact_rows.get(str(k.name)), bytes=k.table.bytes, partitions=len(k.table.leaf_partitions),
            default_partition=any(p.is_default for p in k.table.partitions), key_type=k.key.type,
            fk_state=state, indexed=k.table.has_leading_index(k.key.name), is_source=k.is_source))
    return out


def measure_probes(conn, probes, timeout: float | None = None,
                   settings: dict[str, str] | None = None) -> tuple[dict[str, list[tuple]], dict[str, str]]:
    """Run each probe once (by key) in one READ ONLY, REPEATABLE READ transaction on an autocommit
    connection: (rows by key, failure by label). A timeout or a refused read is a failure, not a crash.
    `settings`: local to that transaction."""
    done: dict[str, list[tuple]] = {}
    failed: dict[str, str] = {}
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        set_local(conn, settings)
        for probe in probes:
            if probe.key in done or probe.label in failed:
                continue
            try:
                done[probe.key] = execute_in_savepoint(conn, probe.query, timeout)
            except (pgerrors.QueryCanceled, pgerrors.InsufficientPrivilege) as exc:
                failed[probe.label] = exc.diag.message_primary or type(exc).__name__
    return done, failed

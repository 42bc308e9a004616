"""An incremental scan: only the rows created since a point in time, for cron or CI.

The per-row checks (orphaned, malformed, non-canonical, NULL session ids, unknown users, sessions
missing from the master) are measured with the checks' own measures and predicates, over
`WHERE created_at >= <since>` on each key table, so a partitioned table is pruned to the partitions
that can hold new rows. Lookups are per new row and by key (the master's primary key, the source
table's key index, the users' primary key), instead of the full scan's joins over every known
session: the cost grows with the new rows, not with the tables. Database-wide and catalog checks
are not incremental and are reported as skipped; `scan` runs them. Exit codes are the scan's.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timezone

import psycopg
from psycopg import sql

from yumai_audit.checks.base import USES_KNOWN, USES_MASTER, USES_USERS, Check, Measure, TableCheck
from yumai_audit.checks.predicates import Known, key_uuid

from ..config import Config
from ..connection import Target, connect, resolve_target
from ..context import AuditContext, KeyTable
from ..model import CheckResult, Finding, ScanResult, Status
from ..rows import one_row
from ..sqlparts import col, table_ref
from .scanner import audit_context, select_checks

Progress = Callable[[str], None]
NOT_INCREMENTAL = "not incremental (database-wide, catalog or whole-session check): run scan"


def _from(ctx: AuditContext, target: KeyTable, joins: frozenset[str], since: sql.Composable) -> sql.Composed:
    # The new rows first, behind an optimisation fence (OFFSET 0), so that the planner cannot run a
    # per-row lookup before the created_at filter; partitions are pruned inside.
    parts: list[sql.Composable] = [sql.SQL(
        "FROM (SELECT t0.*, t0.tableoid, t0.ctid FROM {} t0 WHERE {} >= {} OFFSET 0) t").format(
        table_ref(target.name), sql.Identifier("t0", ctx.config.created_at_column), since)]
    if USES_KNOWN in joins:
        parts.append(Known.of(ctx).join_row(key_uuid(target.key, "t")))
    elif USES_MASTER in joins:
        # the scan's lookup: on the few new rows the planner probes the master's primary key per row
        parts.append(Known.of(ctx).join_master(key_uuid(target.key)))
    if USES_USERS in joins and target.user is not None and ctx.users is not None:
        uk = ctx.config.users_key
        parts.append(sql.SQL("LEFT JOIN LATERAL (SELECT {k} FROM {users} WHERE {k} = {tu} LIMIT 1) u ON true").format(
            k=sql.Identifier(uk), users=table_ref(ctx.users.name), tu=col(target.user)))
    parts.append(sql.SQL("WHERE true"))
    return sql.SQL(" ").join(parts)


def since_pass(ctx: AuditContext, target: KeyTable, measures: dict[str, Measure],
               since: sql.Composable) -> sql.Composed:
    """`count(*)` of the new rows, then every measure, over the rows created since `since`."""
    joins = frozenset().union(*(m.joins for m in measures.values())) if measures else frozenset()
    columns = [sql.SQL("count(*)")] + [m.expression for m in measures.values()]
    return sql.SQL("SELECT {} {}").format(sql.SQL(", ").join(columns), _from(ctx, target, joins, since))


def watch_query(ctx: AuditContext, target: KeyTable, checks: list[Check], since: sql.Composable) -> sql.Composable:
    """The one query over `target`'s new rows for `checks` (table-scope), measures in the checks' order."""
    return since_pass(ctx, target, {f"{c.id}.{m}": v for c in checks
                                    for m, v in (c.row_measures(ctx, target) or {}).items()}, since)


def sample_since_query(ctx: AuditContext, target: KeyTable, sample, since: sql.Composable, limit: int) -> sql.Composed:
    """The finding's sample values among the new rows."""
    return sql.SQL("SELECT {d}({v})::text {from_} AND ({p}) ORDER BY 1 LIMIT {n}").format(
        d=sql.SQL("DISTINCT ") if sample.distinct else sql.SQL(""), v=sample.value,
        from_=_from(ctx, target, sample.joins, since), p=sample.predicate, n=sql.Literal(limit))


def since_literal(conn: psycopg.Connection, target: KeyTable, column: str, since: datetime) -> sql.Composable:
    """`since` as a constant of the column's own type, so the planner prunes partitions at plan time."""
    typname = target.table.columns[column].typname
    if typname == "timestamp":   # without time zone: the server's TimeZone decides, as for the rows
        return sql.Literal(one_row(conn.execute("SELECT %s::timestamptz::timestamp", (since,)))[0])
    if typname == "date":
        return sql.Literal(one_row(conn.execute("SELECT %s::timestamptz::date", (since,)))[0])
    return sql.SQL("{}::timestamptz").format(sql.Literal(since.isoformat()))


def watch(target: Target | str | None, config: Config | None, since: datetime,
          progress: Progress | None = None) -> ScanResult:
    """Scan only the rows created at or after `since`, read-only."""
    say = progress or (lambda _m: None)
    config = config or Config()
    if since.tzinfo is None:
        since = since.replace(tzinfo=timezone.utc)
    checks = select_checks(config)
    target = target if isinstance(target, Target) else resolve_target(target)
    with connect(target) as conn:
        conn.read_only = True
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        try:
            with conn.transaction():
                ctx = audit_context(conn, config)
                return _run(conn, ctx, checks, since, say)
        finally:
            conn.rollback()


def watch_tables(ctx: AuditContext, checks: list[Check]):
    """Per table-scope check, its targets that have the created_at column; per such table, its checks."""
    created = ctx.config.created_at_column
    targets = {c.id: [t for t in c.targets(ctx) if created in t.table.columns and c.row_measures(ctx, t) is not None]
               for c in checks if isinstance(c, TableCheck)}
    by_table: dict[str, tuple[KeyTable, list[Check]]] = {}
    for check in checks:
        for t in targets.get(check.id, []):
            by_table.setdefault(str(t.name), (t, []))[1].append(check)
    return targets, by_table


def _run(conn, ctx: AuditContext, checks: list[Check], since: datetime, say: Progress) -> ScanResult:
    created = ctx.config.created_at_column
    findings: dict[str, list[Finding]] = defaultdict(list)
    notes = list(ctx.notes)
    new_rows: dict[str, int] = {}
    targets, by_table = watch_tables(ctx, checks)
    for kt in ctx.key_tables:
        if created not in kt.table.columns:
            notes.append(f"{kt.name} has no column {created}: not watched")
    for name, (kt, owners) in by_table.items():
        since_sql = since_literal(conn, kt, created, since)
        measures = {(c.id, m): v for c in owners for m, v in c.row_measures(ctx, kt).items()}
        say(f"watching {name}")
        row = conn.execute(watch_query(ctx, kt, owners, since_sql)).fetchone()
        new_rows[name] = int(row[0])
        values = dict(zip(measures, row[1:]))
        for check in owners:
            own = {m: int(values[(check.id, m)] or 0) for (cid, m) in measures if cid == check.id}
            for finding in check.judge(ctx, kt, own):
                sample = check.row_sample(ctx, kt)
                if sample is not None and ctx.config.sample_size:
                    query = sample_since_query(ctx, kt, sample, since_sql, ctx.config.sample_size)
                    finding.sample = [r[0] for r in conn.execute(query).fetchall()]
                    finding.details.setdefault("sample_of", sample.of)
                finding.details["since"] = since.isoformat()
                findings[check.id].append(finding)
    results = []
    for check in checks:
        if not isinstance(check, TableCheck) or not any(check.row_measures(ctx, t) is not None
                                                        for t in check.targets(ctx)):
            status, reason = Status.SKIPPED, NOT_INCREMENTAL
        elif not targets[check.id]:
            status, reason = Status.SKIPPED, check.skip_reason
        else:
            status, reason = (Status.FAIL if findings[check.id] else Status.PASS), None
        results.append(CheckResult(check.id, status, 0.0, check.severity, check.description, reason))
    ordered = sorted((f for c in checks for f in findings[c.id]),
                     key=lambda f: (f.severity.rank, f.check, f.table, f.column or ""))
    cat = ctx.catalog
    return ScanResult(
        database={"name": cat.database, "server_version": cat.server_version},
        generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        config=ctx.config.as_dict(), checks=results, findings=ordered,
        stats={"notes": notes, "since": since.isoformat(), "new_rows": new_rows})

"""Aggregate numbers for the report's charts, read in the scan's read-only transaction.

- `sessions_by_week`: every distinct valid session key seen in any key table that has the
  `created_at_column`, counted once in the week (ISO, Monday start, UTC for timestamptz) of its
  first row (NULL and infinite timestamps ignored), split into registered (in the master), missing from
  the master (known from the source table only) and orphaned (in neither). Malformed and NULL keys are not sessions.
- `partitions`: per partitioned key table, each leaf partition's bound, size and exact row count.

Pure SQL building plus interpretation of rows: the caller executes (`execute(query) -> rows`), so
this module never opens a connection and can share the scan's savepoint/timeout handling. The
output is bounded: at most MAX_WEEKS weeks (the most recent) and one row per partition.
"""
from __future__ import annotations

from collections.abc import Callable

from psycopg import errors as pgerrors
from psycopg import sql

from yumai_audit.checks.predicates import JOINED, Known, key_uuid

from ..bridge_state import scan_stats
from ..context import AuditContext
from ..sqlparts import LEAVES_PER_STATEMENT, col, table_ref

Execute = Callable[[sql.Composed], list[tuple]]

MAX_WEEKS = 260
TIME_TYPES = {"timestamp", "timestamptz", "date"}


def week_tables(ctx: AuditContext) -> tuple[list, list[str]]:
    """Key tables usable for the weekly chart, and why the others are left out."""
    column = ctx.config.created_at_column
    used, skipped = [], []
    for k in ctx.key_tables:
        created = k.table.columns.get(column)
        if not k.key_checkable:
            skipped.append(f"{k.name}: key type {k.key.type} cannot hold {ctx.key_type_phrase}")
        elif created is None:
            skipped.append(f"{k.name}: no column {column}")
        elif created.typname not in TIME_TYPES:
            skipped.append(f"{k.name}: {column} is {created.type}, not a timestamp or date")
        else:
            used.append((k, created))
    return used, skipped


def sessions_by_week_query(ctx: AuditContext, tables: list) -> sql.Composed:
    firsts = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {key} AS session_id, min({created}) AS first_at FROM {table} t "
                "WHERE {key} IS NOT NULL AND isfinite({raw}) GROUP BY 1").format(
            key=key_uuid(k.key), created=_as_utc_timestamp(created), raw=col(created), table=table_ref(k.name))
        for k, created in tables)
    return sql.SQL(
        "WITH known AS ({known}), firsts AS ({firsts}), "
        "sessions AS (SELECT session_id, min(first_at) AS first_at FROM firsts GROUP BY session_id) "
        "SELECT to_char(date_trunc('week', s.first_at), 'YYYY-MM-DD') AS week, "
        "count(*) FILTER (WHERE kn.in_master) AS registered, "
        "count(*) FILTER (WHERE kn.session_id IS NOT NULL AND NOT kn.in_master) AS missing, "
        "count(*) FILTER (WHERE {orphaned}) AS orphaned "
        "FROM sessions s LEFT JOIN known kn ON kn.session_id = s.session_id "
        "GROUP BY 1 ORDER BY 1 DESC LIMIT {limit}").format(
        known=Known.of(ctx).sessions(), orphaned=JOINED.unknown(sql.SQL("s.session_id")), firsts=firsts,
        limit=sql.Literal(MAX_WEEKS + 1))


def partition_rows_query(table) -> sql.Composed:
    """Exact rows per leaf partition, named as the catalog names them (schema, table), read through the
    partitioned table (its privileges and row security, as the scan's passes read it)."""
    return sql.SQL(
        "SELECT n.nspname::text, c.relname::text, x.n FROM (SELECT t.tableoid, count(*) AS n FROM {} t GROUP BY 1) x "
        "JOIN pg_class c ON c.oid = x.tableoid JOIN pg_namespace n ON n.oid = c.relnamespace").format(
        table_ref(table.name))




def leaves_readable_query(table) -> sql.Composed:
    """One row, one boolean: every leaf partition may be read as it is, with the same rows as through
    the partitioned table: the role may SELECT from each, and no row security on it or on the table."""
    return sql.SQL(
        "SELECT coalesce(bool_and(has_table_privilege(c.oid, 'SELECT') AND NOT c.relrowsecurity), true) "
        "AND NOT (SELECT relrowsecurity FROM pg_class WHERE oid = {oid}) "
        "FROM pg_partition_tree({oid}::regclass) pt JOIN pg_class c ON c.oid = pt.relid WHERE pt.isleaf"
    ).format(oid=sql.Literal(table.oid))


def leaf_rows_queries(table) -> list[sql.Composed]:
    """The same rows as `partition_rows_query`, a plain count(*) of each leaf partition: no system column
    to fetch and no grouping, cheaper than grouping the partitioned table's rows by tableoid."""
    leaves = table.leaf_partitions
    out = []
    for i in range(0, len(leaves), LEAVES_PER_STATEMENT):
        out.append(sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {}::text, {}::text, count(*) FROM ONLY {}").format(
                sql.Literal(p.name.schema), sql.Literal(p.name.name), table_ref(p.name))
            for p in leaves[i:i + LEAVES_PER_STATEMENT]))
    return out


def _as_utc_timestamp(created) -> sql.Composed:
    if created.typname == "timestamptz":
        return sql.SQL("({} AT TIME ZONE 'UTC')").format(col(created))
    return sql.SQL("{}::timestamp").format(col(created))


def count_partitions(ctx: AuditContext, execute: Execute, skip: set[str] | frozenset[str] = frozenset()
                     ) -> dict[str, dict | None]:
    """{partitioned key table: {(schema, partition): exact rows}, or None when its count timed out}.
    Each leaf is counted as it is when it may be (`leaves_readable_query`), else through the table.
    `skip`: tables counted elsewhere (by their pass, scan/passes.py: TablePasses._run_piece)."""
    out: dict[str, dict | None] = {}
    for k in ctx.key_tables:
        if k.table.is_partitioned and str(k.name) not in skip:
            try:
                (readable,), = execute(leaves_readable_query(k.table))
                queries = leaf_rows_queries(k.table) if readable else [partition_rows_query(k.table)]
                out[str(k.name)] = {(schema, name): int(n) for q in queries for schema, name, n in execute(q)}
            except pgerrors.QueryCanceled:
                out[str(k.name)] = None
    return out


def collect_stats(ctx: AuditContext, execute: Execute, weeks_rows: list[tuple] | None = None,
                  partition_counts: dict | None = None) -> dict:
    """The report's chart data (JSON-serialisable). A query that fails with a timeout is noted, not raised.

    `weeks_rows`: the sessions per week already counted by the scan's pass over its set of sessions
    (the scanner passes them); without them the weekly query runs here. `partition_counts`: what
    `count_partitions` returned, when the scanner ran it already (on a connection of its own)."""
    out: dict = {"created_at_column": ctx.config.created_at_column}
    used, skipped = week_tables(ctx)
    out["sessions_by_week_tables"] = [str(k.name) for k, _ in used]
    out["sessions_by_week_skipped"] = skipped
    weeks: list[dict] = []
    if used:
        try:
            rows = weeks_rows if weeks_rows is not None else execute(sessions_by_week_query(ctx, used))
            out["sessions_by_week_truncated"] = len(rows) > MAX_WEEKS
            weeks = [{"week": w, "registered": int(r), "missing_from_master": int(m), "orphaned": int(o)}
                     for w, r, m, o in reversed(rows[:MAX_WEEKS])]
        except pgerrors.QueryCanceled:
            out["sessions_by_week_error"] = "timed out"
    out["sessions_by_week"] = weeks

    counted = partition_counts if partition_counts is not None else count_partitions(ctx, execute)
    partitions = []
    for k in ctx.key_tables:
        if not k.table.is_partitioned:
            continue
        counts = counted.get(str(k.name))
        if counts is None:
            out.setdefault("partition_errors", []).append(f"{k.name}: row count timed out")
        for p in k.table.leaf_partitions:
            exact = None if counts is None else counts.get((p.name.schema, p.name.name), 0)
            partitions.append({"table": str(k.name), "partition": str(p.name), "bound": p.bound,
                               "default": p.is_default, "bytes": int(p.bytes), "rows": exact})
    out["partitions"] = partitions
    try:
        out["bridge"] = scan_stats(execute, ctx.key_noun, ctx.key_label)
    except pgerrors.QueryCanceled:
        out["bridge_error"] = "timed out"
    return out


"""The per-check SQL a user would otherwise write: one query per check and table, each an anti-join or
a filter of its own (as dbt's `relationships`, `not_null` and `accepted_values` tests do).

Written independently of the scan's SQL (only the uuid patterns are shared), so that the benchmark
also cross-checks the scan's counts. Each query returns (rows, keys); either may be NULL.

Written as a competent user would (issue 16): NOT EXISTS anti-joins the planner can hash and run in
parallel, distinct keys counted over a DISTINCT subquery (hashable, parallel) rather than with
count(DISTINCT) (a sort, never parallel), conflicting users as min <> max (no count(DISTINCT) per
group), and no cast a column does not need (user ids are compared as they are when every user column
has the same type). `script(ctx)` writes the same queries as a plain psql script.
"""
from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from yumai_audit.checks.predicates import CANONICAL_PATTERN, TRIM_CHARS, UUID_INPUT_PATTERN
from yumai_audit.context import AuditContext


@dataclass(frozen=True)
class Query:
    check: str
    table: str
    column: str
    statement: sql.Composable


def _t(name) -> sql.Composable:
    return sql.Identifier(name.schema, name.name)


def _as_uuid(column, alias: str) -> sql.Composable:
    """The key as uuid (NULL when NULL or not a uuid)."""
    c = sql.Identifier(alias, column.name)
    if column.is_uuid:
        return c
    trimmed = sql.SQL("btrim({}::text, {})").format(c, sql.Literal(TRIM_CHARS))
    return sql.SQL("CASE WHEN {t} ~ {p} THEN {t}::uuid END").format(t=trimmed, p=sql.Literal(UUID_INPUT_PATTERN))


def per_check_queries(ctx: AuditContext) -> list[Query]:
    key = ctx.config.key_column
    out: list[Query] = []
    master, source, users = ctx.master, ctx.source, ctx.users

    def known_anti_join(expr: sql.Composable) -> sql.Composable:
        # One NOT EXISTS over the master's and the source's keys together: with one NOT EXISTS per table,
        # PostgreSQL estimates the first anti-join's result at one row (the inner side has more distinct
        # keys) and runs the second as a nested loop over the source table, for minutes.
        parts = []
        if master is not None:
            parts.append(sql.SQL("SELECT m.{} AS k FROM {} m").format(sql.Identifier(key), _t(master.name)))
        if source is not None:
            parts.append(sql.SQL("SELECT {} AS k FROM {} s").format(_as_uuid(source.key, "s"), _t(source.name)))
        return sql.SQL("NOT EXISTS (SELECT 1 FROM ({}) kn WHERE kn.k = {})").format(
            sql.SQL(" UNION ALL ").join(parts), expr)

    # missing master rows: distinct source sessions not in the master
    if source is not None:
        cond = sql.SQL("x.k IS NOT NULL")
        if master is not None:
            cond = sql.SQL("{} AND NOT EXISTS (SELECT 1 FROM {} m WHERE m.{} = x.k)").format(
                cond, _t(master.name), sql.Identifier(key))
        out.append(Query("missing_master_rows", str(ctx.config.master), key, sql.SQL(
            "SELECT NULL::bigint, count(*) FROM (SELECT DISTINCT x.k FROM (SELECT {} AS k FROM {} t) x WHERE {}) d").format(
                _as_uuid(source.key, "t"), _t(source.name), cond)))
    for k in ctx.key_tables:
        name, col = str(k.name), sql.Identifier("t", k.key.name)
        # orphans: valid keys in neither the master nor the source table
        if not k.is_source and (master is not None or source is not None):
            out.append(Query("orphaned_session_ids", name, k.key.name, sql.SQL(
                "SELECT sum(n)::bigint, count(*) FROM (SELECT x.k, count(*) AS n FROM (SELECT {} AS k FROM {} t) x "
                "WHERE x.k IS NOT NULL AND {} GROUP BY x.k) o"
            ).format(_as_uuid(k.key, "t"), _t(k.name), known_anti_join(sql.SQL("x.k")))))
        out.append(Query("null_session_ids", name, k.key.name, sql.SQL(
            "SELECT count(*), NULL::bigint FROM {} t WHERE {} IS NULL").format(_t(k.name), col)))
        if k.key.is_text:
            trimmed = sql.SQL("btrim({}::text, {})").format(col, sql.Literal(TRIM_CHARS))
            out.append(Query("malformed_session_ids", name, k.key.name, sql.SQL(
                "SELECT count(*), NULL::bigint FROM {} t WHERE {} IS NOT NULL AND {} !~ {}").format(
                    _t(k.name), col, trimmed, sql.Literal(UUID_INPUT_PATTERN))))
            out.append(Query("noncanonical_session_ids", name, k.key.name, sql.SQL(
                "SELECT count(*), NULL::bigint FROM {} t WHERE {} ~ {} AND {}::text !~ {}").format(
                    _t(k.name), trimmed, sql.Literal(UUID_INPUT_PATTERN), col, sql.Literal(CANONICAL_PATTERN))))
        if users is not None and k.user is not None:
            out.append(Query("orphaned_user_ids", name, k.user.name, sql.SQL(
                "SELECT count(*), NULL::bigint FROM {} t WHERE {} IS NOT NULL "
                "AND NOT EXISTS (SELECT 1 FROM {} u WHERE u.{} = {})").format(
                    _t(k.name), sql.Identifier("t", k.user.name), _t(users.name),
                    sql.Identifier(ctx.config.users_key), sql.Identifier("t", k.user.name))))
    # conflicting users: sessions whose rows carry two or more user ids
    sources = [(k.key, k.user, k.name) for k in ctx.key_tables if k.user is not None and (k.key.is_uuid or k.key.is_text)]
    if master is not None and ctx.master_user is not None and ctx.master_key is not None:
        sources.append((ctx.master_key, ctx.master_user, master.name))
    same_type = len({u.type for _, u, _ in sources}) == 1
    parts = [sql.SQL("SELECT {} AS k, {}{} AS u FROM {} t WHERE {} IS NOT NULL").format(
        _as_uuid(kc, "t"), sql.Identifier("t", uc.name), sql.SQL("") if same_type else sql.SQL("::text"), _t(name),
        sql.Identifier("t", uc.name)) for kc, uc, name in sources]
    if parts:
        table = str(source.name) if source else str(ctx.config.source)
        out.append(Query("conflicting_session_users", table, ctx.config.user_column, sql.SQL(
            "SELECT NULL::bigint, count(*) FROM (SELECT k FROM ({}) x WHERE k IS NOT NULL "
            "GROUP BY k HAVING min(u) <> max(u)) c").format(sql.SQL(" UNION ALL ").join(parts))))
    return out


def floor_queries(ctx: AuditContext) -> list[tuple[str, sql.Composable]]:
    """`count(*)` of every key table: reading each table once is the least any scan must do."""
    return [(str(k.name), sql.SQL("SELECT count(*) FROM {}").format(_t(k.name))) for k in ctx.key_tables]


def script(queries: list[Query], conn) -> str:
    """The queries as a plain psql script (one statement each, rendered for `conn`'s server)."""
    return "".join(f"-- {q.check} on {q.table}\n{q.statement.as_string(conn)};\n" for q in queries)

"""How the runner turns the checks' declarations into SQL: one aggregate pass per table, sample queries.

Pure SQL building, no execution. The aliases are `t` (the table), `kn` (known sessions: the master's
keys with in_master = true, the source table's keys with in_master = false), `u` (users' keys).
"""
from __future__ import annotations

from psycopg import sql

from yumai_audit.context import AuditContext, KeyTable

from .base import USES_KNOWN, USES_USERS, Measure, Sample
from .predicates import col, key_uuid, table_ref


def known_sessions(ctx: AuditContext) -> sql.Composable:
    parts = []
    if ctx.master is not None and ctx.master_key is not None:
        parts.append(sql.SQL("SELECT {} AS session_id, true AS in_master FROM {} m").format(
            key_uuid(ctx.master_key, "m"), table_ref(ctx.master.name)))
    if ctx.source is not None and ctx.source.key_checkable:
        parts.append(sql.SQL("SELECT {} AS session_id, false AS in_master FROM {} s").format(
            key_uuid(ctx.source.key, "s"), table_ref(ctx.source.name)))
    if not parts:
        parts.append(sql.SQL("SELECT NULL::uuid AS session_id, false AS in_master"))
    return sql.SQL(
        "SELECT session_id, bool_or(in_master) AS in_master FROM ({}) x "
        "WHERE session_id IS NOT NULL GROUP BY session_id"
    ).format(sql.SQL(" UNION ALL ").join(parts))


def _with(ctx: AuditContext, joins: frozenset[str]) -> sql.Composable:
    if USES_KNOWN in joins:
        return sql.SQL("WITH known AS ({}) ").format(known_sessions(ctx))
    return sql.SQL("")


def _from(ctx: AuditContext, target: KeyTable, joins: frozenset[str]) -> sql.Composable:
    parts = [sql.SQL("FROM {} t").format(table_ref(target.name))]
    if USES_KNOWN in joins:
        parts.append(sql.SQL("LEFT JOIN known kn ON kn.session_id = {}").format(key_uuid(target.key)))
    if USES_USERS in joins and target.user is not None and ctx.users is not None:
        users_key = ctx.config.users_key
        parts.append(sql.SQL("LEFT JOIN (SELECT DISTINCT {k} FROM {users}) u ON {uk} = {tu}").format(
            k=sql.Identifier(users_key), users=table_ref(ctx.users.name),
            uk=sql.Identifier("u", users_key), tu=col(target.user)))
    return sql.SQL(" ").join(parts)


def table_pass(ctx: AuditContext, target: KeyTable, measures: dict[str, Measure]) -> sql.Composable:
    """One SELECT computing every measure over one table: `count(*)` first, then the measures in order."""
    joins = frozenset().union(*(m.joins for m in measures.values())) if measures else frozenset()
    columns = [sql.SQL("count(*)")] + [m.expression for m in measures.values()]
    return sql.SQL("{with_}SELECT {cols} {from_}").format(
        with_=_with(ctx, joins), cols=sql.SQL(", ").join(columns), from_=_from(ctx, target, joins))


def sample_query(ctx: AuditContext, target: KeyTable, sample: Sample, limit: int) -> sql.Composable:
    return sql.SQL("{with_}SELECT {distinct}({value})::text AS v {from_} WHERE {pred} ORDER BY 1 LIMIT {n}").format(
        with_=_with(ctx, sample.joins), distinct=sql.SQL("DISTINCT ") if sample.distinct else sql.SQL(""),
        value=sample.value, from_=_from(ctx, target, sample.joins), pred=sample.predicate, n=sql.Literal(limit))

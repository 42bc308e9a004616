"""How the scan turns the checks' declarations into SQL: one aggregate pass per table, one set of
sessions per scan, samples inside the same aggregates.

Pure SQL building, no execution. The aliases are `t` (the table), `kn` (known sessions: one row per
session id of the master or the source table, with `in_master` and `in_source`; in measures over the
set itself, one row per session of any key table, see `session_set`; with `USES_MASTER` only, the
row's key looked up in the master), `u` (users' keys).

At scale the sessions are the expensive part (grouping every row of every key table), so they are
grouped once per scan: `set_statement` is one statement that groups them (the server aggregates in
parallel: each branch filters its valid keys itself, so nothing stands between the tables and the
parallel aggregate) and reads the grouped set once, as it streams out, for every measure over the set,
the samples' candidates and the weeks, in its one row. The
source table never joins the set: each of its valid keys is known by definition, so only its
membership in the master is looked up.
"""
from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from yumai_audit.checks.base import USES_KNOWN, USES_MASTER, USES_USERS, Measure, Sample
from yumai_audit.checks.predicates import (
    Known,
    Shared,
    col,
    key_uuid,
    key_valid,
    null_key,
    table_ref,
    user_sources,
    valid_key_uuid,
)
from yumai_audit.context import AuditContext, KeyTable


def known_sessions(ctx: AuditContext) -> sql.Composable:
    """The known set (predicates.Known.sessions): one row per key of the master or the source table."""
    return Known.of(ctx).sessions()


def _with(ctx: AuditContext, joins: frozenset[str], target: KeyTable | None = None) -> sql.Composable:
    if USES_KNOWN in joins and not (target is not None and target.is_source):
        return sql.SQL("WITH known AS ({}) ").format(known_sessions(ctx))
    return sql.SQL("")


def _source_known(ctx: AuditContext, target: KeyTable) -> sql.Composable:
    """`kn` for a row of the source table, without reading the known set (predicates.Known.join_own_source)."""
    return Known.of(ctx).join_own_source(key_uuid(target.key))


def master_join(ctx: AuditContext, target: KeyTable) -> sql.Composable:
    """`kn` (USES_MASTER) for a row of `target` (alias `t`): its key looked up in the master alone
    (predicates.Known.join_master). The scan's table passes and watch use it."""
    return Known.of(ctx).join_master(key_uuid(target.key))


def _from_parts(ctx: AuditContext, target: KeyTable, joins: frozenset[str],
                relation: sql.Composable | None = None) -> list[sql.Composable]:
    """`FROM <table> t` (`relation` in its place: `leaves_relation`), then the joins `joins` ask for."""
    parts: list[sql.Composable] = [sql.SQL("FROM {} t").format(relation or table_ref(target.name))]
    if USES_KNOWN in joins and target.is_source:
        parts.append(_source_known(ctx, target))
    elif USES_KNOWN in joins:
        parts.append(sql.SQL("LEFT JOIN known kn ON kn.session_id = {}").format(key_uuid(target.key)))
    elif USES_MASTER in joins:
        parts.append(master_join(ctx, target))
    if USES_USERS in joins and target.user is not None and ctx.users is not None:
        users_key = ctx.config.users_key
        parts.append(sql.SQL("LEFT JOIN (SELECT DISTINCT {k} FROM {users}) u ON {uk} = {tu}").format(
            k=sql.Identifier(users_key), users=table_ref(ctx.users.name),
            uk=sql.Identifier("u", users_key), tu=col(target.user)))
    return parts


def _shared_in(node: sql.Composable, found: list) -> None:
    """Every `Shared` sub-expression of `node`, outermost first, in order (with repeats)."""
    if isinstance(node, Shared):
        found.append(node)
    elif isinstance(node, sql.Composed):
        for part in node:
            _shared_in(part, found)


def _replace(node: sql.Composable, names: list[tuple[sql.Composable, sql.Composable]]) -> sql.Composable:
    if isinstance(node, Shared):
        for shared, name in names:
            if node == shared:
                return name
    if isinstance(node, sql.Composed):
        return sql.Composed([_replace(part, names) for part in node])
    return node


def hoist_shared(parts: list[sql.Composable]) -> tuple[list[sql.Composable], sql.Composable]:
    """`parts` (a pass's columns and its FROM clause) with every `Shared` expression that occurs more
    than once over them replaced by a column of a lateral subquery `h` computed once per row, and that
    subquery's join (put right after the pass's table `t`, whose row alone it reads; empty when nothing
    repeats). OFFSET 0 keeps the server from folding it back into each use. What it saves: a text key's
    canonical test, used six times by the malformed and non-canonical counts and their samples (each also
    inside `key_valid`), runs once per row instead of six times."""
    found: list = []
    for p in parts:
        _shared_in(p, found)
    repeated = []
    for node in found:           # Composed compares by content, and is not hashable
        if node not in repeated and sum(1 for other in found if other == node) > 1:
            repeated.append(node)
    if not repeated:
        return parts, sql.SQL("")
    names: list[tuple[sql.Composable, sql.Composable]] = [(node, sql.Identifier("h", f"s{i}"))
                                                          for i, node in enumerate(repeated)]
    lateral = sql.SQL(" CROSS JOIN LATERAL (SELECT {} OFFSET 0) h").format(sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(node, sql.Identifier(f"s{i}")) for i, node in enumerate(repeated)))
    return [_replace(p, names) for p in parts], lateral


def _distinct(columns: list[sql.Composable]) -> tuple[list[sql.Composable], list[int]]:
    """`columns` without repeats, and each column's place among them (a measure declared twice is computed
    once: the server does not share equal expressions)."""
    unique: list[sql.Composable] = []
    for c in columns:           # Composed compares by content, and is not hashable
        if c not in unique:
            unique.append(c)
    return unique, [unique.index(c) for c in columns]


def table_pass(ctx: AuditContext, target: KeyTable, measures: dict[str, Measure], hoist: bool = False
               ) -> sql.Composed:
    """One SELECT computing every measure over one table: `count(*)` first, then the measures in order.
    With `hoist` (a pass run without parallel workers), repeated `Shared` expressions are computed once
    per row (`hoist_shared`); not otherwise: PostgreSQL plans the lateral subquery above its Gather (in
    the leader, row by row), so the pass would no longer aggregate in parallel. (A pass read in parts of a
    table's partitions: `leaf_pass`.)"""
    joins = frozenset().union(*(m.joins for m in measures.values())) if measures else frozenset()
    columns = [sql.SQL("count(*)")] + [m.expression for m in measures.values()]
    unique, places = _distinct(columns)
    select = sql.SQL("{with_}SELECT {cols} {from_}")
    with_ = _with(ctx, joins, target)
    if hoist:
        cols, from_ = _hoisted(unique, _from_parts(ctx, target, joins))
    else:
        cols, from_ = unique, sql.SQL(" ").join(_from_parts(ctx, target, joins))
    if len(unique) == len(columns):
        return select.format(with_=with_, cols=sql.SQL(", ").join(cols), from_=from_)
    # A measure declared twice (a check's count and another's, or a sample's row count: the same predicate)
    # is computed once: the server does not share equal expressions, and a text key's tests cost.
    inner = select.format(with_=with_, from_=from_, cols=sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(c, sql.Identifier(f"m{i}")) for i, c in enumerate(cols)))
    names = [sql.Identifier(f"m{i}") for i in places]
    return sql.SQL("SELECT {} FROM ({}) p").format(sql.SQL(", ").join(names), inner)


def _hoisted(columns: list[sql.Composable], from_parts: list[sql.Composable]) -> tuple[list, sql.Composable]:
    """The columns and the FROM clause of a pass, with its repeated `Shared` expressions computed once
    per row (`hoist_shared`: their subquery joined right after the table)."""
    parts, lateral = hoist_shared([*columns, *from_parts])
    cols, (table, *rest) = parts[:len(columns)], parts[len(columns):]
    return cols, sql.SQL(" ").join([table + lateral, *rest])


def leaves_relation(target: KeyTable, leaves: Sequence[Any], leaf: str | None = None) -> sql.Composed:
    """Some leaf partitions of `target` (catalog.Partition) as one relation with the table's columns, by name
    (a partition's columns may lie in another order): a part of the table's pass (scan/passes.py). With `leaf`
    (a column name the table does not have, `leaf_column`), one more column of that name: each row's leaf, its
    place in `leaves`. A table without a primary key also gives each row's `tableoid` and `ctid`, by those names:
    what identifies its rows in samples (`sqlparts.row_id`)."""
    names = list(target.table.columns) + ([] if target.table.primary_key else ["tableoid", "ctid"])
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in names)
    extra = [sql.SQL(", {}::int AS {}").format(sql.Literal(i), sql.Identifier(leaf)) if leaf is not None
             else sql.SQL("") for i in range(len(leaves))]
    return sql.SQL("({})").format(sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {}{} FROM ONLY {}").format(columns, e, table_ref(p.name)) for p, e in zip(leaves, extra)))


def leaf_column(target: KeyTable) -> str:
    """A column name `target` does not have, for the leaf of each row of `leaves_relation`."""
    name = "leaf"
    while name in target.table.columns:
        name = "_" + name
    return name


def leaf_pass(ctx: AuditContext, target: KeyTable, columns: Sequence[tuple[sql.Composable | Sample, frozenset]],
              limit: int, leaves: Sequence[Any]) -> sql.Composed:
    """A part of a table's pass over some of its leaf partitions (`leaves`), also counting each leaf's rows,
    in the same read: one row, `count(*)`, then each of `columns` (an additive measure, a count or a sum: the
    same value as in `table_pass`; or a `Sample`: its first `limit` values, as `sample_aggregate` gives them),
    then a jsonb array of [leaf (its place in `leaves`), rows] for each leaf with rows.

    The rows are grouped by leaf (a hash of a few hundred groups at most); the measures of the groups add up,
    and a sample's candidates are collected unordered per group (an ordered aggregate would keep the server
    from hashing the groups: it would sort every row by its leaf), then the first `limit` of them are taken
    (top-N), in the order `sample_aggregate` sorts them. Without parallel workers (`hoist_shared`)."""
    leaf = leaf_column(target)
    joins = frozenset().union(*(j for _, j in columns)) if columns else frozenset()
    exprs: list[sql.Composable] = [sql.SQL("count(*)")]
    for c, _ in columns:
        exprs.append(sql.SQL("array_agg(({})::text) FILTER (WHERE {})").format(c.value, c.predicate)
                     if isinstance(c, Sample) else c)
    unique, places = _distinct(exprs)
    cols, from_ = _hoisted(unique, _from_parts(ctx, target, joins, leaves_relation(target, leaves, leaf)))
    inner = sql.SQL("{with_}SELECT {leaf} AS leaf, {cols} {from_} GROUP BY 1").format(
        with_=_with(ctx, joins, target), leaf=sql.Identifier("t", leaf), from_=from_,
        cols=sql.SQL(", ").join(sql.SQL("{} AS {}").format(c, sql.Identifier(f"m{i}")) for i, c in enumerate(cols)))
    outer: list[sql.Composable] = []
    for (c, _), place in zip([(None, None), *columns], places):
        name = sql.Identifier("g", f"m{place}")
        if isinstance(c, Sample):
            outer.append(sql.SQL(
                "(SELECT to_jsonb(array_agg(s.v ORDER BY s.v)) FROM (SELECT {distinct}v FROM g, unnest({c}) v "
                "ORDER BY v LIMIT {n}) s)").format(
                    distinct=sql.SQL("DISTINCT ") if c.distinct else sql.SQL(""), c=name, n=sql.Literal(limit)))
        else:
            outer.append(sql.SQL("(SELECT coalesce(sum({}), 0) FROM g)").format(name))
    outer.append(sql.SQL("(SELECT jsonb_agg(jsonb_build_array(g.leaf, g.m0)) FROM g)"))
    return sql.SQL("WITH g AS MATERIALIZED ({}) SELECT {}").format(inner, sql.SQL(", ").join(outer))


def merge_samples(values: list, distinct: bool, limit: int) -> tuple[sql.Composed, list]:
    """The statement (and its parameters) that takes the first `limit` of the values of several parts'
    samples (`sample_aggregate`: each part's own first `limit`, as text) in the order the server sorts
    them (its collation), as `sample_aggregate` gives them over the whole table."""
    return sql.SQL("SELECT to_jsonb((array_agg({}v ORDER BY v))[1:{}]) FROM unnest(%s::text[]) v").format(
        sql.SQL("DISTINCT ") if distinct else sql.SQL(""), sql.Literal(limit)), [values]


def sample_aggregate(sample: Sample, limit: int) -> sql.Composed:
    """The sample as an aggregate inside a pass (jsonb array of the first `limit` values, or null):
    no second read of the table. Its cost grows with the failing rows only (none: nothing), and only
    `limit` values leave the server."""
    value = sql.SQL("({})::text").format(sample.value)
    return sql.SQL("to_jsonb((array_agg({distinct}{v} ORDER BY {v}) FILTER (WHERE {pred}))[1:{n}])").format(
        distinct=sql.SQL("DISTINCT ") if sample.distinct else sql.SQL(""), v=value, pred=sample.predicate,
        n=sql.Literal(limit))


def sample_pass(ctx: AuditContext, target: KeyTable, samples: list[Sample], limit: int) -> sql.Composed:
    """The samples of one table's failing checks in one statement, restricted to the rows they come from
    (the server filters the table in parallel; only those rows are sorted): one column per sample."""
    joins = frozenset().union(*(s.joins for s in samples))
    return sql.SQL("{with_}SELECT {cols} {from_} WHERE {any}").format(
        with_=_with(ctx, joins, target), cols=sql.SQL(", ").join(sample_aggregate(s, limit) for s in samples),
        from_=sql.SQL(" ").join(_from_parts(ctx, target, joins)),
        any=sql.SQL(" OR ").join(sql.SQL("({})").format(s.predicate) for s in samples))


_INTEGERS = {"int2", "int4", "int8"}


_INTEGER_NULLS = {"int2": sql.SQL("NULL::smallint"), "int4": sql.SQL("NULL::integer"), "int8": sql.SQL("NULL::bigint")}


def _user_value(ctx: AuditContext, column, alias: str) -> sql.Composable:
    """A user id comparable across tables: as it is when every user column has the same integer type
    (no cast per row), bigint when they are integers of different sizes, else text compared byte-wise
    (so that equal means identical)."""
    types = {c.typname for _, _, c in user_sources(ctx)}
    if len(types) == 1 and types <= set(_INTEGER_NULLS):
        return col(column, alias) if column is not None else _INTEGER_NULLS[next(iter(types))]
    if types <= set(_INTEGER_NULLS):
        return sql.SQL("{}::bigint").format(col(column, alias)) if column is not None else sql.SQL("NULL::bigint")
    if column is None:
        return sql.SQL("NULL::text")
    return sql.SQL('({}::text COLLATE "C")').format(col(column, alias))


def first_at_value(created, alias: str) -> sql.Composed:
    """A row's time as a UTC timestamp, NULL where it is NULL or infinite (as the report's weeks count it)."""
    raw = col(created, alias)
    utc = sql.SQL("({} AT TIME ZONE 'UTC')").format(raw) if created.typname == "timestamptz" else \
        sql.SQL("{}::timestamp").format(raw)
    return sql.SQL("CASE WHEN isfinite({}) THEN {} END").format(raw, utc)


def _finite(created, alias: str) -> sql.Composed:
    """A timestamptz as it is, NULL where it is NULL or infinite."""
    return sql.SQL("CASE WHEN isfinite({c}) THEN {c} END").format(c=col(created, alias))


def _in_range(value: sql.Composable, key_range: tuple | None, key_type: str = "uuid") -> sql.Composable:
    """`value` (of the key type, `key_type` as SQL names it) lies in `key_range` ((low, high): keys as text,
    None for no bound; low included, high not)."""
    low, high = key_range or (None, None)
    kt = sql.SQL(key_type)
    parts = [sql.SQL("{} >= {}::{}").format(value, sql.Literal(low), kt) if low is not None else None,
             sql.SQL("{} < {}::{}").format(value, sql.Literal(high), kt) if high is not None else None]
    parts = [p for p in parts if p is not None]
    return sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")


#: Two tables' rows per session share one sum: the first table's rows count 1, the second's PACK each
#: (sum(int) keeps an int8 state: the second field holds up to 2^33 rows). Exact while a session has
#: fewer than PACK rows in the first table, which a table smaller than PACK * MIN_ROW_BYTES bytes cannot
#: hold (a heap row takes at least a 24-byte header and a 4-byte line pointer); a larger table keeps a
#: count of its own.
PACK = 1 << 30
MIN_ROW_BYTES = 28


def _row_slots(rows_for: list[KeyTable]) -> list[list[KeyTable]]:
    """The tables whose rows the set counts per session, in sums of one or two tables each."""
    small = [k for k in rows_for if int(k.table.bytes or 0) < PACK * MIN_ROW_BYTES]
    slots = [small[i:i + 2] for i in range(0, len(small), 2)]
    return slots + [[k] for k in rows_for if k not in small]


def session_set(ctx: AuditContext, rows_for: list[KeyTable], users: bool,
                first_at: dict | None = None, key_range: tuple | None = None) -> sql.Composed:
    """One row per valid session id of the master, the source table and the tables in `rows_for`
    (and, with `users`, of every table with a user column; with `first_at`, a {table name: time
    column} map, of those tables): in_master, in_source, rows_<i> (rows of key table i, for each of
    `rows_for`), min_user / max_user (non-NULL user ids over all its rows), first_at (its earliest
    finite time in the `first_at` tables, UTC). With `key_range` ((low, high), see `_in_range`),
    only the sessions whose id lies in it: the set is then built in parts, one per key range.

    Grouping a million sessions is mostly the work per row and aggregate, so each branch carries
    constants the aggregates add up: a membership flag (1 master, 2 source, one `bit_or` for both) and
    its rows' weight in each sum of `_row_slots` (two tables per sum): six aggregates per session
    instead of nine."""
    user_of = {str(t.name): u for t, _, u in user_sources(ctx)} if users else {}
    first_at = first_at or {}
    # When every time column is a timestamptz (the usual case), the earliest time is taken as it is and
    # converted to UTC once per session, not once per row (the conversion is monotonic: same minimum).
    raw_tz = bool(first_at) and all(c.typname == "timestamptz" for c in first_at.values())
    slots = _row_slots(list(rows_for))
    parts = []

    def part(table, key, flag, alias, rows_of=None):
        weights = [sql.SQL(", {}::int AS {}").format(
            sql.Literal(0 if rows_of not in slot else (1 if slot[0] is rows_of else PACK)), sql.Identifier(f"w{j}"))
            for j, slot in enumerate(slots)]
        extra = [sql.SQL(", {} AS uid").format(_user_value(ctx, user_of.get(str(table.name)), alias))] if users else []
        if first_at:
            created = first_at.get(str(table.name))
            if created is None:
                value = sql.SQL("NULL::timestamptz") if raw_tz else sql.SQL("NULL::timestamp")
            else:
                value = _finite(created, alias) if raw_tz else first_at_value(created, alias)
            extra.append(sql.SQL(", {} AS first_at").format(value))
        # Only the rows with a valid key, filtered in the branch itself: the key is converted to uuid
        # once per row (after the filter), and the server aggregates the branches in parallel.
        where = key_valid(key, alias)
        if key_range is not None and not key.is_text:
            where = sql.SQL("{} AND {}").format(where, _in_range(col(key, alias), key_range, ctx.key_type.name))
        branch = sql.SQL("SELECT {} AS session_id, {}::int AS fl{}{} FROM {} {} WHERE {}").format(
            valid_key_uuid(key, alias), sql.Literal(flag), sql.SQL("").join(weights), sql.SQL("").join(extra),
            table_ref(table.name), sql.Identifier(alias), where)
        if key_range is not None and key.is_text:
            # A text key is tested and converted once: the range compares the converted keys of the
            # valid rows (OFFSET 0 keeps the server from moving the range into the branch, where it
            # would have to test and convert each key again).
            branch = sql.SQL("SELECT * FROM ({} OFFSET 0) {} WHERE {}").format(
                branch, sql.Identifier(f"{alias}_valid"),
                _in_range(sql.Identifier(f"{alias}_valid", "session_id"), key_range, ctx.key_type.name))
        parts.append(branch)

    if ctx.master is not None and ctx.master_key is not None:
        part(ctx.master, ctx.master_key, 1, "m")
    if ctx.source is not None and ctx.source.key_checkable:
        part(ctx.source.table, ctx.source.key, 2, "s")
    wanted = {str(k.name) for k in rows_for} | set(user_of) | set(first_at)
    for k in ctx.key_tables:
        if str(k.name) in wanted and not k.is_source and k.key_checkable:
            part(k.table, k.key, 0, "t", k if k in rows_for else None)
    if not parts:
        parts.append(sql.SQL("SELECT {} AS session_id, 0 AS fl{}{}{} WHERE false").format(
            null_key(ctx.key_type),
            sql.SQL("").join(sql.SQL(", 0 AS {}").format(sql.Identifier(f"w{j}")) for j in range(len(slots))),
            sql.SQL(", NULL::bigint AS uid") if users else sql.SQL(""),
            (sql.SQL(", NULL::timestamptz AS first_at") if raw_tz else sql.SQL(", NULL::timestamp AS first_at"))
            if first_at else sql.SQL("")))
    columns: list[sql.Composable] = [sql.SQL("(bit_or(fl) & 1) <> 0 AS in_master"),
                                     sql.SQL("(bit_or(fl) & 2) <> 0 AS in_source")]
    for j, slot in enumerate(slots):
        total = sql.SQL("sum({})").format(sql.Identifier(f"w{j}"))
        for place, k in enumerate(slot):
            value = total if len(slot) == 1 else (
                sql.SQL("({} & {})").format(total, sql.Literal(PACK - 1)) if place == 0 else
                sql.SQL("({} >> {})").format(total, sql.Literal(PACK.bit_length() - 1)))
            # never NULL: every row of a session adds its branch's weights, 0 or not
            columns.append(sql.SQL("{} AS {}").format(value, sql.Identifier(f"rows_{ctx.key_tables.index(k)}")))
    if users:
        columns += [sql.SQL("min(uid) AS min_user"), sql.SQL("max(uid) AS max_user")]
    if first_at:
        columns.append(sql.SQL("(min(first_at) AT TIME ZONE 'UTC') AS first_at") if raw_tz else
                       sql.SQL("min(first_at) AS first_at"))
    return sql.SQL("SELECT session_id, {} FROM ({}) x GROUP BY session_id").format(
        sql.SQL(", ").join(columns), sql.SQL(" UNION ALL ").join(parts))


@dataclass(frozen=True)
class Weeks:
    """A column of the set's statement: sessions per week of their first row (built with `first_at`),
    most recent first, at most `limit` weeks: [week, registered, missing from the master, orphaned]."""

    limit: int


@dataclass(frozen=True)
class SetSample:
    """A column of the set's statement: the first `limit` values of a sample over the set."""

    sample: Sample
    limit: int


def set_statement(ctx: AuditContext, columns: list, rows_for: Sequence[KeyTable] = (), users: bool = False,
                  first_at: dict | None = None, key_range: tuple | None = None) -> sql.Composed:
    """One statement, one row: a jsonb array of the number of known sessions (those of the master or the
    source table) and `columns`, each over the set of sessions (`session_set`, alias `kn`). A column is
    an additive aggregate over the set (a count or a sum: a measure), a `Sample` over the set (its first
    `limit` values) or `Weeks`.

    The set is read once, as it streams out of its grouping (built in parallel by the server), by one
    aggregate grouped by the week of each session's first row (a few hundred groups at most; one group
    without `first_at`): each measure per week, each sample's candidates per week (an unordered
    `array_agg` of the rows with the defect, hashable). The few week rows are then summed, and each
    sample is the first values of its candidates (top-N). Not a materialized set read again per sample
    and for the weeks: writing and rereading a set of millions of sessions costs as much as grouping it."""
    week = sql.SQL("date_trunc('week', kn.first_at)") if first_at else sql.SQL("NULL::timestamp")
    inner: list[sql.Composable] = [sql.SQL("{} AS wk").format(week),
                                   sql.SQL("count(*) FILTER (WHERE kn.in_master OR kn.in_source) AS c0")]
    outer: list[sql.Composable] = [sql.SQL("(SELECT coalesce(sum(w.c0), 0) FROM w)")]
    for i, c in enumerate(columns, start=1):
        name = sql.Identifier(f"c{i}")
        if isinstance(c, Weeks):
            inner += [sql.SQL("count(*) FILTER (WHERE kn.in_master) AS {}").format(sql.Identifier(f"c{i}_r")),
                      sql.SQL("count(*) FILTER (WHERE kn.in_source AND NOT kn.in_master) AS {}").format(
                          sql.Identifier(f"c{i}_m")),
                      sql.SQL("count(*) FILTER (WHERE NOT kn.in_source AND NOT kn.in_master) AS {}").format(
                          sql.Identifier(f"c{i}_o"))]
            outer.append(sql.SQL(
                "(SELECT jsonb_agg(jsonb_build_array(x.week, x.registered, x.missing, x.orphaned) "
                "ORDER BY x.week DESC) "
                "FROM (SELECT to_char(w.wk, 'YYYY-MM-DD') AS week, sum(w.{r})::bigint AS registered, "
                "sum(w.{m})::bigint AS missing, sum(w.{o})::bigint AS orphaned FROM w WHERE w.wk IS NOT NULL "
                "GROUP BY 1 ORDER BY 1 DESC LIMIT {n}) x)").format(
                    r=sql.Identifier(f"c{i}_r"), m=sql.Identifier(f"c{i}_m"), o=sql.Identifier(f"c{i}_o"),
                    n=sql.Literal(c.limit)))
        elif isinstance(c, SetSample):
            sample, limit = c.sample, c.limit
            value = sql.SQL("({})::text").format(sample.value) if sample.distinct else sample.value
            inner.append(sql.SQL("array_agg({}) FILTER (WHERE {}) AS {}").format(value, sample.predicate, name))
            outer.append(sql.SQL(
                "(SELECT to_jsonb(array_agg(s.v::text ORDER BY s.v)) FROM (SELECT {distinct}v FROM w, unnest(w.{c}) v "
                "ORDER BY v LIMIT {n}) s)").format(
                    distinct=sql.SQL("DISTINCT ") if sample.distinct else sql.SQL(""), c=name, n=sql.Literal(limit)))
        else:
            inner.append(sql.SQL("{} AS {}").format(c, name))
            outer.append(sql.SQL("(SELECT coalesce(sum(w.{}), 0) FROM w)").format(name))
    return sql.SQL("WITH w AS MATERIALIZED (SELECT {inner} FROM ({set}) kn GROUP BY 1) "
                   "SELECT jsonb_build_array({outer})").format(inner=sql.SQL(", ").join(inner),
                            set=session_set(ctx, list(rows_for), users, first_at, key_range),
                            outer=sql.SQL(", ").join(outer))


def _sample_order(values: list) -> list:
    """Values of a sample over the set in the order the statement gives them: as uuids (the byte order
    PostgreSQL sorts uuids in) when every value is one, as numbers when every value is an integer, else as
    text."""
    if values and all(re.fullmatch(r"-?[0-9]+", str(v)) for v in values):
        return sorted(values, key=lambda v: int(str(v)))
    try:
        return sorted(values, key=lambda v: uuid.UUID(str(v)))
    except ValueError:
        return sorted(values, key=str)


def merge_set_rows(columns: list, rows: list[list]) -> list:
    """The row of `set_statement` over the whole set, from its rows over disjoint key ranges (one
    per part, each the same jsonb array): counts and sums add up, a sample is the first `limit` of the
    parts' samples together (each part's holds its own first `limit`), the weeks add up per week and
    keep the most recent `limit`. One part: its row as it is."""
    if len(rows) == 1:
        return rows[0]
    merged: list[Any] = [sum(int(r[0] or 0) for r in rows)]
    for i, c in enumerate(columns, start=1):
        values = [r[i] for r in rows]
        if isinstance(c, Weeks):
            weeks: dict[str, list[int]] = {}
            for part in values:
                for week, *counts in part or []:
                    total = weeks.setdefault(week, [0] * len(counts))
                    weeks[week] = [a + int(b) for a, b in zip(total, counts)]
            recent = sorted(weeks, reverse=True)[:c.limit]
            merged.append([[w, *weeks[w]] for w in recent] or None)
        elif isinstance(c, SetSample):
            found = [v for part in values for v in part or []]
            if c.sample.distinct:
                found = list(dict.fromkeys(found))
            merged.append(_sample_order(found)[:c.limit] or None)
        else:
            merged.append(sum(int(v or 0) for v in values))
    return merged

"""Key ranges that split the set of sessions into parts of about the same size, one per connection.

The set of sessions is one grouping of every key row by its session id. PostgreSQL's parallel
aggregate does not help it: each worker's partial grouping holds nearly as many sessions as rows
(a session's rows are spread over the workers), and the partial groups are then sorted, merged and
grouped again in one process. Split by key range instead, each part is a grouping of its own on its
own connection (in the scan's one snapshot), with nothing to merge but a few sums: the parts' work adds
up to less than the whole grouping in one process, and they run at the same time.

The boundaries come from the planner's statistics (`pg_stats.histogram_bounds` of the key columns of
the source table, its partitions and the master): equal-frequency buckets of the keys, so that
time-ordered ids (uuid v7, whose leading bits are a timestamp) split as evenly as random ones. Without
statistics the uuid space is cut into equal parts (even for random ids). The boundaries only balance
the work: any split gives the same counts, since each session falls in exactly one range.
"""
from __future__ import annotations

import uuid

import psycopg
from psycopg import sql

from ..context import AuditContext

KeyRange = tuple[str | None, str | None]     # (low, high): low included, high not; None: unbounded

_SPACE = 1 << 128
_MIN_BOUNDS_PER_PART = 4      # fewer histogram bounds than this per part: the statistics cannot balance it


def even_split(parts: int) -> list[str]:
    """parts - 1 boundaries cutting the uuid space into equal ranges."""
    return [str(uuid.UUID(int=_SPACE * i // parts)) for i in range(1, parts)]


def _parse(value: str, integer: bool) -> uuid.UUID | int:
    return int(value.strip()) if integer else uuid.UUID(value.strip())


def _bounds(conn: psycopg.Connection, ctx: AuditContext) -> list:
    """The histogram bounds of the session key of the source table (and its partitions) and the master,
    in order. A uuid column's bounds are already canonical text, whose order is the uuids' order: they are
    sorted as they are (at 365 daily partitions, 37k bounds: parsing each took 0.2 s of the scan's start)."""
    tables: list[tuple[str, str, str, bool]] = []
    if ctx.source is not None and ctx.source.key_checkable:
        leaves = ctx.source.table.leaf_partitions if ctx.source.table.is_partitioned else []
        names = [ctx.source.table.name, *(p.name for p in leaves)]
        tables += [(str(n.schema), str(n.name), ctx.source.key.name, ctx.source.key.is_uuid) for n in names]
    master_key = ctx.master_key
    if ctx.master is not None and master_key is not None:
        tables.append((str(ctx.master.name.schema), str(ctx.master.name.name), master_key.name, master_key.is_uuid))
    if not tables:
        return []
    rows = conn.execute(sql.SQL(
        "SELECT w.canonical, s.histogram_bounds::text::text[] FROM pg_stats s "
        "JOIN unnest({schemas}::text[], {names}::text[], {columns}::text[], {canonical}::bool[]) "
        "AS w(sch, tab, col, canonical) "
        "ON s.schemaname = w.sch AND s.tablename = w.tab AND s.attname = w.col "
        "WHERE s.histogram_bounds IS NOT NULL").format(
            schemas=sql.Literal([t[0] for t in tables]), names=sql.Literal([t[1] for t in tables]),
            columns=sql.Literal([t[2] for t in tables]), canonical=sql.Literal([t[3] for t in tables]))).fetchall()
    integer = ctx.key_type.is_integer
    out: list = []
    for canonical, bounds in rows:
        if canonical and not integer:
            out += bounds or []
            continue
        for value in bounds or []:
            try:
                parsed = _parse(value, integer)
            except (ValueError, AttributeError):     # a text key's histogram holds malformed keys too
                continue
            out.append(parsed if integer else str(parsed))
    return sorted(out)


def key_ranges(conn: psycopg.Connection, ctx: AuditContext, parts: int) -> list[KeyRange]:
    """`parts` key ranges covering every key, in order (one range, unbounded, for one part). An integer key
    without statistics is one range: the integers' space says nothing of where its keys lie."""
    if parts <= 1:
        return [(None, None)]
    integer = ctx.key_type.is_integer
    bounds = _bounds(conn, ctx)
    if len(bounds) >= parts * _MIN_BOUNDS_PER_PART:
        cuts = [str(bounds[len(bounds) * i // parts]) for i in range(1, parts)]
        cuts = sorted(set(cuts), key=lambda v: _parse(v, integer))
    elif integer:
        return [(None, None)]
    else:
        cuts = even_split(parts)
    edges: list[str | None] = [None, *cuts, None]
    return list(zip(edges[:-1], edges[1:]))

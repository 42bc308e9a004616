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
    """The histogram bounds of the session key of the source table (and its partitions) and the master."""
    tables: list[tuple[str, str, str]] = []
    if ctx.source is not None and ctx.source.key_checkable:
        leaves = ctx.source.table.leaf_partitions if ctx.source.table.is_partitioned else []
        names = [ctx.source.table.name, *(p.name for p in leaves)]
        tables += [(str(n.schema), str(n.name), ctx.source.key.name) for n in names]
    master_key = ctx.master_key
    if ctx.master is not None and master_key is not None:
        tables.append((str(ctx.master.name.schema), str(ctx.master.name.name), master_key.name))
    if not tables:
        return []
    rows = conn.execute(sql.SQL(
        "SELECT s.histogram_bounds::text::text[] FROM pg_stats s "
        "JOIN unnest({schemas}::text[], {names}::text[], {columns}::text[]) AS w(sch, tab, col) "
        "ON s.schemaname = w.sch AND s.tablename = w.tab AND s.attname = w.col "
        "WHERE s.histogram_bounds IS NOT NULL").format(
            schemas=sql.Literal([t[0] for t in tables]), names=sql.Literal([t[1] for t in tables]),
            columns=sql.Literal([t[2] for t in tables]))).fetchall()
    out = []
    for (bounds,) in rows:
        for value in bounds or []:
            try:
                out.append(_parse(value, ctx.key_type.is_integer))
            except (ValueError, AttributeError):     # a text key's histogram holds malformed keys too
                continue
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

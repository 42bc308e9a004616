"""Small partitions together: one step for several, where a step each would cost more than their work.

A table with many partitions (pg_partman's daily ones: hundreds) made a step per partition for its index
(CONCURRENTLY, then ATTACH), its foreign key (NOT VALID, then VALIDATE) and its backfill: each step's
fixed cost (its guard, its journal rows, its transaction, CONCURRENTLY's waits for older transactions)
outweighed the work on a partition of a few hundred rows. Partitions small by both their estimated rows and
their size on disk (a stale estimate cannot make a big one small) go in groups of a bounded total, each
group one transaction: its statements' locks are held for the group's few milliseconds of work. A table with
few partitions keeps a step each (their fixed cost is small; CONCURRENTLY blocks no writer at all).
"""
from __future__ import annotations

from ..catalog import Partition, Table

MANY = 16                    # leaf partitions above which the index and FK steps of small ones are grouped
SMALL_ROWS = 20_000          # a group's estimated rows at most (an index build or FK scan of milliseconds)
SMALL_BYTES = 8 * 2**20      # a group's size on disk at most (pg_total_relation_size)
# a group's partitions at most, so that what its locks hold up waits well under 0.1 s on a quiet server: an
# index group holds SHARE on its partitions (today's, if small, among them) until it commits, some 5-10 ms of
# build and attach apiece; each ADD CONSTRAINT of an FK group holds SHARE ROW EXCLUSIVE on the referenced table
# (the master: new sessions wait), some 10-20 ms of catalog work and checking apiece
INDEX_PARTITIONS = 8
FK_PARTITIONS = 4


def groups(parts: list[Partition], rows: int, size: int = SMALL_BYTES, count: int = 0) -> list[list[Partition]]:
    """`parts` in catalog order, as walks: one of more than `rows` estimated rows or `size` bytes alone; smaller
    ones together, as many as fit in both bounds (and, given, `count` partitions)."""
    out: list[list[Partition]] = []
    group: list[Partition] = []
    total_rows = total_bytes = 0
    for p in parts:
        if p.estimated_rows > rows or p.bytes > size:
            out.append([p])
            continue
        if group and (total_rows + p.estimated_rows > rows or total_bytes + p.bytes > size
                      or (count and len(group) >= count)):
            out.append(group)
            group, total_rows, total_bytes = [], 0, 0
        group.append(p)
        total_rows += p.estimated_rows
        total_bytes += p.bytes
    if group:
        out.append(group)
    return out


def ddl_groups(table: Table, count: int = 0) -> list[list[Partition]]:
    """The leaf partitions of `table` as its index or FK steps take them (`count`: INDEX_PARTITIONS or
    FK_PARTITIONS): a step each when the table has at most MANY, else small ones grouped."""
    leaves = table.leaf_partitions
    if len(leaves) <= MANY:
        return [[p] for p in leaves]
    return groups(leaves, SMALL_ROWS, count=count)


def all_small(table: Table) -> bool:
    """A partitioned table of more than MANY leaf partitions, each small (within a group's bounds alone)."""
    leaves = table.leaf_partitions if table.is_partitioned else []
    return len(leaves) > MANY and all(p.estimated_rows <= SMALL_ROWS and p.bytes <= SMALL_BYTES for p in leaves)


def group_id(prefix: str, group: list[Partition], suffix: str = "") -> str:
    """A group's step id: the first partition's name and how many follow it (`index:s.t_p0001+59`)."""
    return f"{prefix}:{group[0].name}" + (f"+{len(group) - 1}" if len(group) > 1 else "") + suffix

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


def is_small(p: Partition) -> bool:
    """Within a group's bounds alone."""
    return p.estimated_rows <= SMALL_ROWS and p.bytes <= SMALL_BYTES


def all_small(table: Table) -> bool:
    """A partitioned table of more than MANY leaf partitions, each small (within a group's bounds alone)."""
    leaves = table.leaf_partitions if table.is_partitioned else []
    return len(leaves) > MANY and all(is_small(p) for p in leaves)


# Before PostgreSQL 18 a partitioned table's key is added per partition (NOT VALID is refused on the parent), then on
# the parent, which attaches the partitions' keys: each attachment drops the partition key's two triggers on the
# referenced table, and each drop rebuilds that table's list of triggers (two per partition key still there), all
# under ACCESS EXCLUSIVE on it: quadratic in the keys attached (measured on 15: 1.4-1.5 s at 1,500 partitions, 0.07 s
# at 365). The parent's key can instead check the small partitions' rows itself, in the same statement, under SHARE
# ROW EXCLUSIVE on the table and the referenced one (writers wait, readers do not): linear in their rows and their
# number (measured on 15, a loaded machine: 0.46 s for 1,500 partitions of 20,000 rows, 0.25-0.31 s for 365 of
# 120,000). The plan takes whichever holds its lock for less (`parent_checks_small`).
ATTACH_SECONDS_PER_PAIR = 0.64e-6       # x (keys attached)^2
CHECK_SECONDS_PER_ROW = 1.5e-6          # the parent's statement checking a small partition's rows (PROBE)
CHECK_SECONDS_PER_PARTITION = 0.3e-3


def attach_seconds(keys: int) -> float:
    """About how long the parent's key holds ACCESS EXCLUSIVE on the referenced table to attach `keys` keys."""
    return ATTACH_SECONDS_PER_PAIR * keys * keys


def check_seconds(parts: list[Partition]) -> float:
    """About how long the parent's key takes to check the rows of `parts` (no key of their own) itself."""
    return sum(CHECK_SECONDS_PER_ROW * p.estimated_rows + CHECK_SECONDS_PER_PARTITION for p in parts)


def parent_checks_small(table: Table) -> list[Partition]:
    """Before 18: the small partitions whose rows the parent's key checks itself (no key steps of theirs), rather
    than attaching their keys added a group a step (none: the latter): when that holds a lock for less time
    (`check_seconds` of theirs plus attaching the big ones' keys, against attaching every key). A table of at most
    MANY partitions keeps a step each."""
    leaves = table.leaf_partitions
    small = [p for p in leaves if is_small(p)]
    if len(leaves) <= MANY or not small:
        return []
    big = len(leaves) - len(small)
    return small if check_seconds(small) + attach_seconds(big) < attach_seconds(len(leaves)) else []


def group_id(prefix: str, group: list[Partition], suffix: str = "") -> str:
    """A group's step id: the first partition's name and how many follow it (`index:s.t_p0001+59`)."""
    return f"{prefix}:{group[0].name}" + (f"+{len(group) - 1}" if len(group) > 1 else "") + suffix

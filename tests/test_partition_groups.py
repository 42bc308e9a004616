"""Small partitions together (auditor/fix/partition_groups.py): which partitions share a step."""
from __future__ import annotations

from yumai_audit.catalog import Partition, QualifiedName, Table
from yumai_audit.fix import partition_groups as pg


def part(n: int, rows: int, size: int = 8192) -> Partition:
    return Partition(QualifiedName("s", f"t_{n}"), "x", True, 1, size, rows)


def names(groups) -> list[list[str]]:
    return [[p.name.name for p in g] for g in groups]


def test_small_partitions_go_together_within_the_bounds_and_a_big_one_alone():
    parts = [part(1, 40), part(2, 50), part(3, 500), part(4, 30), part(5, 80), part(6, 10)]
    # a big one walks alone at once; the small ones around it fill their group on
    assert names(pg.groups(parts, 100)) == [["t_3"], ["t_1", "t_2"], ["t_4"], ["t_5", "t_6"]]
    # a stale estimate does not make a big partition small: its size on disk counts too
    assert names(pg.groups([part(1, 0, 10 * 2**20), part(2, 0)], 100)) == [["t_1"], ["t_2"]]
    assert names(pg.groups([part(n, 1) for n in range(5)], 100, count=2)) == [["t_0", "t_1"], ["t_2", "t_3"], ["t_4"]]


def test_a_table_with_few_partitions_keeps_a_step_each():
    few = Table(oid=1, name=QualifiedName("s", "t"), kind="p", columns={}, primary_key=(), estimated_rows=0, bytes=0,
                partitions=[part(n, 1) for n in range(pg.MANY)])
    assert [len(g) for g in pg.ddl_groups(few, pg.INDEX_PARTITIONS)] == [1] * pg.MANY
    many = Table(oid=1, name=QualifiedName("s", "t"), kind="p", columns={}, primary_key=(), estimated_rows=0, bytes=0,
                 partitions=[part(n, 1) for n in range(40)])
    assert [len(g) for g in pg.ddl_groups(many, 16)] == [16, 16, 8]
    assert [len(g) for g in pg.ddl_groups(many, 8)] == [8] * 5
    assert pg.group_id("index", pg.ddl_groups(many, 16)[1]) == "index:s.t_16+15"


def table_of(parts) -> Table:
    return Table(oid=1, name=QualifiedName("s", "t"), kind="p", columns={}, primary_key=(), estimated_rows=0, bytes=0,
                 partitions=parts)


def test_before_18_the_parent_key_checks_small_partitions_where_attaching_their_keys_would_hold_longer():
    # 1,500 daily partitions of 80 rows: attaching 1,500 keys rebuilds the master's triggers 1,500 times (about
    # 1.4 s under ACCESS EXCLUSIVE); checking their 120,000 rows in the parent's statement: about 0.6 s
    daily = table_of([part(n, 80) for n in range(1500)])
    assert pg.check_seconds(daily.leaf_partitions) < pg.attach_seconds(1500)
    assert pg.parent_checks_small(daily) == daily.leaf_partitions
    # 365 of 330 rows: attaching (about 0.09 s) beats checking (about 0.29 s): the groups' keys, as before
    assert pg.parent_checks_small(table_of([part(n, 330) for n in range(365)])) == []
    # few partitions: a step each; a big one is never checked by the parent (its key: NOT VALID, then VALIDATE)
    assert pg.parent_checks_small(table_of([part(n, 1) for n in range(pg.MANY)])) == []
    mixed = table_of([part(n, 80) for n in range(1500)] + [part(9999, 5_000_000, 2**30)])
    assert pg.parent_checks_small(mixed) == mixed.leaf_partitions[:1500]

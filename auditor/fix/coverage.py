"""What `verify` checks on a partitioned key table, partition by partition, as the database is at its end.

The plan knows the partitions that existed when it was made; one created meanwhile (`CREATE TABLE ...
PARTITION OF`, pg_partman's job) before the parent's index was built is left without an index, and the
parent's index INVALID. These queries read the partitions at verify time (pg_inherits), so such a
partition is found whenever it was created: every index on the table leading with the key is valid, every
leaf partition has a valid index leading with the key attached to the parent's, and holds a validated
foreign key to the master. A partition's problem line carries UNCOVERED: the apply re-plans and runs again
when it sees one (auditor/api.py), the new plan covering the new partition (an invalid index alone is not
something a new plan repairs: the preflight refuses it).
"""
from __future__ import annotations

from psycopg import sql

from ..catalog import QualifiedName
from .ddl import relid

UNCOVERED = "not covered by the migration"


def leaves(parent: QualifiedName) -> sql.Composed:
    """SELECT the leaf partitions of `parent` (alias `leaf`: its oid as `relid`), however deep, as they are now."""
    return sql.SQL("SELECT t.relid FROM pg_partition_tree({}) t WHERE t.isleaf AND t.relid <> {}").format(
        relid(parent), relid(parent))


def _leading(rel: sql.Composable, column: str) -> sql.Composed:
    """`i` (pg_index) is an index of `rel` whose first column is `column`."""
    return sql.SQL("i.indrelid = {rel} AND i.indkey[0] = (SELECT a.attnum FROM pg_attribute a "
                   "WHERE a.attrelid = {rel} AND a.attname = {col})").format(rel=rel, col=sql.Literal(column))


def partition_problems(parent: QualifiedName, column: str, master: QualifiedName) -> sql.Composed:
    """SELECT one text per problem of partitioned `parent`'s key `column`: an invalid index leading with it (on
    the parent or a partition), a leaf partition without a valid index leading with it that is attached to a
    parent's index, a leaf partition without a validated foreign key on it to `master`."""
    col = sql.Literal(column)
    invalid = sql.SQL(
        "SELECT format('%s: index %s is INVALID', {name}, i.indexrelid::regclass) "
        "FROM pg_index i WHERE NOT i.indisvalid AND ({parent_leading} OR i.indrelid IN ({leaves}) AND {leaf_leading})"
    ).format(name=sql.Literal(str(parent)),
             parent_leading=_leading(relid(parent), column), leaves=leaves(parent),
             leaf_leading=_leading(sql.SQL("i.indrelid"), column))
    unindexed = sql.SQL(
        "SELECT format('%s: partition %s has no valid index on %s attached to the parent''s ({uncovered})', "
        "{name}, leaf.relid::regclass, {col}) FROM ({leaves}) leaf WHERE NOT EXISTS (SELECT 1 FROM pg_index i "
        "JOIN pg_inherits h ON h.inhrelid = i.indexrelid JOIN pg_index pi ON pi.indexrelid = h.inhparent "
        "WHERE i.indisvalid AND {leading} AND pi.indrelid IN (SELECT p.relid FROM pg_partition_ancestors(leaf.relid) p "
        "WHERE p.relid <> leaf.relid))").format(
        uncovered=sql.SQL(UNCOVERED), name=sql.Literal(str(parent)), col=col, leaves=leaves(parent),
        leading=_leading(sql.SQL("leaf.relid"), column))
    unconstrained = sql.SQL(
        "SELECT format('%s: partition %s has no validated foreign key on %s to %s ({uncovered})', {name}, "
        "leaf.relid::regclass, {col}, {master_name}) FROM ({leaves}) leaf WHERE NOT EXISTS (SELECT 1 FROM "
        "pg_constraint k WHERE k.contype = 'f' AND k.conrelid = leaf.relid AND k.confrelid = {master} "
        "AND k.convalidated AND k.conkey = ARRAY[(SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = leaf.relid "
        "AND a.attname = {col})]::int2[])").format(
        uncovered=sql.SQL(UNCOVERED), name=sql.Literal(str(parent)), col=col, master_name=sql.Literal(str(master)),
        leaves=leaves(parent), master=relid(master))
    return sql.SQL(" UNION ALL ").join([invalid, unindexed, unconstrained])


def uncovered(problems: list[str]) -> bool:
    """Whether some of `verify`'s problems are a partition the plan did not know (made during the apply)."""
    return any(UNCOVERED in p for p in problems)

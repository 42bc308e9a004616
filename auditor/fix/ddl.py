"""What the operations' builders share: names that fit PostgreSQL's limit, catalog lookups for their
guards, and `Built` (what a builder made). The builders themselves are fix/ops/, one per operation.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from psycopg import sql

from ..catalog import QualifiedName
from ..engine.steps import Step

# `x(oid)`: the table `c` and every partition below it. A LATERAL call, once per named table: as a join condition
# (`x.oid = c.oid OR x.oid IN (SELECT ... pg_partition_tree(c.oid))`) PostgreSQL calls the function once per
# pg_class row per named table, 0.53 s of a 0.6 s preflight at 365 partitions (tests/test_preflight_cost.py).
TREE = sql.SQL("SELECT c.oid UNION SELECT relid FROM pg_partition_tree(c.oid)")


def short_name(*parts: str, suffix: str) -> str:
    """An identifier from parts, at most 63 bytes (PostgreSQL's limit), unique through a hash when cut."""
    name = "_".join(parts + (suffix,))
    if len(name.encode()) <= 63:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    head = "_".join(parts)
    while len(f"{head}_{digest}_{suffix}".encode()) > 63:
        head = head[:-1]
    return f"{head}_{digest}_{suffix}"


def relid(name: QualifiedName) -> sql.Composed:
    """The relation's oid, NULL when it (or its schema) does not exist: a lookup in the catalog's cache. As a
    subquery joining pg_class and pg_namespace by name, each use cost its planning: a group of 4 partitions' FK
    guard planned in 0.86 ms and ran in 0.35, now 0.20 and 0.05 (guards run twice per step and run)."""
    return sql.SQL("to_regclass(format('%I.%I', {}, {}))::oid").format(sql.Literal(name.schema), sql.Literal(name.name))


def attnum(name: QualifiedName, column: str) -> sql.Composed:
    return sql.SQL("(SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = {} AND a.attname = {})").format(
        relid(name), sql.Literal(column))


def column_has_type(table: QualifiedName, column: str, type_name: str = "uuid") -> sql.Composed:
    """The column has type `type_name` (as SQL spells it: uuid, bigint)."""
    return sql.SQL("(SELECT a.atttypid = {}::regtype FROM pg_attribute a WHERE a.attrelid = {} AND a.attname = {})"
                   ).format(sql.Literal(type_name), relid(table), sql.Literal(column))


@dataclass
class Built:
    """What a builder made: its steps, in order, and the ids after which its result is in place."""

    steps: list[Step] = field(default_factory=list)
    last: list[str] = field(default_factory=list)

    def add(self, step: Step) -> Step:
        self.steps.append(step)
        return step

    def extend(self, other: Built) -> Built:
        self.steps += other.steps
        return other



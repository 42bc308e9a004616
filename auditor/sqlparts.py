"""Generic SQL pieces, built with `psycopg.sql`: a column of an alias, a table's reference, a row's
identity. The checks, the migration, the maintenance commands and the bridge's state share them."""
from __future__ import annotations

from typing import Protocol

from psycopg import sql

from .catalog import Column

T = "t"   # the alias a table goes by in the checks' and the steps' queries

#: Partitions in one statement's UNION ALL at most (each read with ONLY): PostgreSQL plans such a statement in time
#: growing with the square of its branches (on 15, 1,500 partitions of a few rows each: 41 ms for 180 branches,
#: 368 ms for 750, 1.8 s for 1,500), where the partitioned table's own Append of them all plans in 33-110 ms.
LEAVES_PER_STATEMENT = 100


class Named(Protocol):
    @property
    def schema(self) -> str: ...

    @property
    def name(self) -> str: ...


class Keyed(Protocol):
    @property
    def primary_key(self) -> tuple[str, ...] | list[str]: ...


def col(column: str | Column, alias: str = T) -> sql.Identifier:
    """`alias.column` (or the bare column with no alias)."""
    name = column.name if isinstance(column, Column) else column
    return sql.Identifier(alias, name) if alias else sql.Identifier(name)


def table_ref(name: Named) -> sql.Identifier:
    """`schema.table`, each part quoted."""
    return sql.Identifier(name.schema, name.name)


def row_id(table: Keyed) -> sql.Composable:
    """A row's identity for samples: its primary key as text, or (with no primary key) its ctid."""
    if len(table.primary_key) == 1:
        return sql.SQL("{}::text").format(col(table.primary_key[0]))
    if table.primary_key:
        return sql.SQL("ROW({})::text").format(sql.SQL(", ").join(col(c) for c in table.primary_key))
    return sql.SQL("(t.tableoid::regclass::text || ':' || t.ctid::text)")

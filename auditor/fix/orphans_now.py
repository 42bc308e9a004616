"""The orphans of every key table as the database is when the plan is made, found in one pass for the counts.

The plan counts what its removals take (`shares.measure`, `cascade.measure`), and the executor's preflight
counts it again right before the first change (`shares.refusal`). The orphans of a key table are its rows
whose valid key is neither in the master nor in the source table (`checks.predicates.orphaned`, over
`Exists`); written per table, each count's anti-join hashes the whole source table again, once per key table
(PostgreSQL 15, scale 20: 1.2M rows, 0.3-0.5 s each). Here every key table's rows with a valid key are read
into one anti-join (their keys as the key type's stored type, so that keys of different types meet), the
source hashed once, and the (table, tableoid, ctid) of the orphans kept in one MATERIALIZED CTE; each
removal's predicate then becomes "the row is in that set". The same rows as the per-row predicate, in one
snapshot: a row is in the set exactly when its key is valid (`key_valid`) and unknown (`Lookup.unknown` of
the same key, `valid_key_uuid` being `key_uuid` where the key is valid).
"""
from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from yumai_audit.checks.predicates import Exists, Known, key_valid, orphaned, valid_key_uuid

from ..catalog import Column, QualifiedName
from ..sqlparts import table_ref

CTE = "yumai_orphans_now"   # the set's name in the count's statement (no CTE of the counts is named so)


@dataclass(frozen=True)
class OrphansNow:
    """The orphans of `table` (its key column `key`) as the database is when the plan is made: unknown to
    `known` (the master if it exists, the source table)."""

    table: QualifiedName
    key: Column
    known: Known

    @property
    def predicate(self) -> sql.Composed:
        """The rows (alias t) one at a time: what the plan's notes and refusals read where no set is shared."""
        return orphaned(self.key, lookup=Exists(self.known))


class Shared:
    """The set of every given key table's orphans (`with_`: None when there is none) and, per key table,
    the predicate over it (alias t)."""

    def __init__(self, orphans):
        self.index: dict[OrphansNow, int] = {}
        for o in orphans:
            if o is not None:
                self.index.setdefault(o, len(self.index))

    def predicate(self, o: OrphansNow | None, otherwise: sql.Composable) -> sql.Composable:
        """`o`'s rows as members of the set (`otherwise`, the removal's own predicate, when `o` is None)."""
        if o is None or o not in self.index:
            return otherwise
        return sql.SQL("(t.tableoid, t.ctid) IN (SELECT o.relid, o.tid FROM {} o WHERE o.i = {})").format(
            sql.Identifier(CTE), sql.Literal(self.index[o]))

    def cte(self) -> sql.Composable | None:
        """`name AS MATERIALIZED (...)`: per key table (i), the tableoid and ctid of its orphans; one anti-join
        for the key tables that share a `Known` and a stored key type (in one plan: all of them)."""
        if not self.index:
            return None
        groups: dict[tuple[Known, str], list[sql.Composable]] = {}
        for o, i in self.index.items():
            groups.setdefault((o.known, o.key.key_type.stored), []).append(sql.SQL(
                "SELECT {i} AS i, t.tableoid AS relid, t.ctid AS tid, ({k})::{stored} AS k FROM {t} t WHERE {valid}"
            ).format(i=sql.Literal(i), k=valid_key_uuid(o.key), stored=sql.SQL(o.key.key_type.stored),
                     t=table_ref(o.table), valid=key_valid(o.key)))
        parts = [sql.SQL("SELECT u.i, u.relid, u.tid FROM ({}) u WHERE {}").format(
            sql.SQL(" UNION ALL ").join(rows), Exists(known).unknown(sql.SQL("u.k")))
            for (known, _), rows in groups.items()]
        return sql.SQL("{} AS MATERIALIZED ({})").format(sql.Identifier(CTE), sql.SQL(" UNION ALL ").join(parts))

    def with_(self, query: sql.Composed) -> sql.Composed:
        """`query`'s rows with the set defined before it (`query` as it is when no removal shares it; a
        subquery, so that `query` may have a WITH of its own)."""
        cte = self.cte()
        return query if cte is None else sql.SQL("WITH {} SELECT * FROM ({}) q").format(cte, query)

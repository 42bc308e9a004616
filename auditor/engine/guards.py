"""Guards that stay cheap at scale, whatever indexes exist yet.

`SELECT NOT EXISTS (SELECT 1 FROM t WHERE ... NOT EXISTS master ... NOT EXISTS source)` makes the
planner optimise for the first row: it expects an early hit and picks nested-loop anti-joins over
materialized rows, which is what a resumed run meets when no row matches (the guard of a done step)
and an index is still missing (a run cut off during the per-partition CREATE INDEX CONCURRENTLY):
rows x rows comparisons (minutes on a large table). Counting the matches instead is planned
for the whole result: the anti-joins become index lookups when the indexes exist, one hashed pass
over each table when they do not.
"""
from __future__ import annotations

from psycopg import sql


def no_rows(relation: sql.Composable, predicate: sql.Composable, alias: str = "t") -> sql.Composed:
    """`SELECT` one boolean: true when no row of `relation` (as `alias`) matches `predicate`."""
    return sql.SQL("SELECT count(*) = 0 FROM (SELECT 1 FROM {} {} WHERE {}) AS g").format(
        relation, sql.Identifier(alias), predicate)

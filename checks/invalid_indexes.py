from __future__ import annotations

from yumai_audit.model import Severity

from .base import CatalogCheck


class InvalidIndexes(CatalogCheck):
    """Indexes marked invalid (`pg_index.indisvalid = false`), on any table or partition in scope.

    What is wrong: a `CREATE INDEX CONCURRENTLY` or `REINDEX CONCURRENTLY` failed or was cancelled
    and left its index behind, or an index created `ON ONLY` a partitioned table still misses
    some partitions' indexes. (An index being built concurrently at this moment is also invalid
    until the build ends.)
    Why it matters: the planner never uses an invalid index, yet every write still maintains it; a
    unique one may still reject rows. Whatever it was meant to speed up (an FK lookup, a cascade) is
    still slow.
    What the fix does: nothing automatically: drop it (`DROP INDEX CONCURRENTLY`) and build it again
    concurrently, or attach the missing partition indexes (`ALTER INDEX ... ATTACH PARTITION`).
    """

    id = "invalid_indexes"
    severity = Severity.WARNING
    description = "Indexes left invalid (indisvalid = false) by a failed concurrent build or a partial ON ONLY index"
    skip_reason = "no table in scope"

    def targets(self, ctx):
        return list(ctx.catalog.tables.values())

    def judge_catalog(self, ctx):
        return [
            self.finding(None, table=str(ix.table), column=",".join(c or "(expression)" for c in ix.columns),
                         details={"index": ix.name, "unique": ix.unique},
                         message=f"index {ix.name} on {ix.table} is invalid: never used, still maintained")
            for ix in sorted(ctx.catalog.invalid_indexes, key=lambda ix: (str(ix.table), ix.name))
        ]

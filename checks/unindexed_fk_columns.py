from __future__ import annotations

from yumai_audit.model import Severity

from .base import CatalogCheck


class UnindexedFkColumns(CatalogCheck):
    """A session key column with no index that starts with it.

    What is wrong: no valid index has the key as its leading column (on a partitioned table, no
    index on the parent covering every partition).
    Why it matters: `ON DELETE CASCADE` from the master scans the whole table for every deleted
    session, and session lookups do the same.
    What the fix does: `CREATE INDEX CONCURRENTLY` (per partition, then attached to an index created
    `ON ONLY` the parent), so writers are never blocked.
    """

    id = "unindexed_fk_columns"
    severity = Severity.WARNING
    description = "Key columns with no index whose leading column is the key"

    def judge_catalog(self, ctx):
        return [
            self.finding(k, references=ctx.config.master_reference,
                         message=f"{k.name}.{k.key.name} has no index starting with it")
            for k in ctx.key_tables if not k.table.has_leading_index(k.key.name)
        ]

from __future__ import annotations

from yumai_audit.model import Severity

from .base import CatalogCheck


def _covered(table, columns: tuple[str, ...]) -> bool:
    """A valid index whose leading columns are exactly the FK's columns, in any order."""
    n = len(columns)
    return any(ix.valid and len(ix.columns) >= n and set(ix.columns[:n]) == set(columns) for ix in table.indexes)


class UnindexedForeignKeys(CatalogCheck):
    """Declared foreign keys whose referencing columns no index leads with, on any table.

    What is wrong: `orders.customer_id REFERENCES customers(id)` with no index starting with
    `customer_id` (for a composite FK: an index whose leading columns are the FK's columns, in any
    order). On a partitioned table only an index on the parent counts.
    Why it matters: every delete or key update in the referenced table scans the referencing table
    in full (once per deleted row) to enforce the constraint or cascade, holding its locks meanwhile;
    joins along the FK are slow too.
    What the fix does: nothing automatically; `CREATE INDEX CONCURRENTLY` on the columns (on a
    partitioned table: per partition, then attached to an index created `ON ONLY` the parent).
    Session key columns are reported by `unindexed_fk_columns` instead.
    """

    id = "unindexed_foreign_keys"
    severity = Severity.WARNING
    description = "Declared FKs (any table) whose referencing columns have no index leading with them"
    skip_reason = "no foreign key in scope"

    def targets(self, ctx):
        return [t for t in ctx.catalog.tables.values() if any(not fk.inherited for fk in t.foreign_keys)]

    def judge_catalog(self, ctx):
        session_keys = {k.name for k in ctx.key_tables}
        findings = []
        for table in self.targets(ctx):
            seen = set()
            for fk in table.foreign_keys:
                if fk.inherited or fk.columns in seen or _covered(table, fk.columns):
                    continue
                if table.name in session_keys and fk.columns == (ctx.key,):
                    continue
                seen.add(fk.columns)
                column = ",".join(fk.columns)
                findings.append(self.finding(
                    None, table=str(table.name), column=column, references=fk.references,
                    details={"constraint": fk.name},
                    message=f"foreign key {fk.name} on {table.name} ({column}) has no index leading with its columns"))
        return findings

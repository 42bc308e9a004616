from __future__ import annotations

from yumai_audit.model import Severity

from .base import CatalogCheck
from .declared import signature


class DuplicateForeignKeys(CatalogCheck):
    """Two or more foreign key constraints that enforce the same thing on one table.

    What is wrong: the same columns reference the same columns of the same table more than once
    (a migration that ran twice, or an FK re-added under a new name without dropping the old one).
    On a partition, a constraint declared there that repeats one inherited from the parent counts
    too (reported on the parent, with the partition in the details).
    Why it matters: every insert and update checks the reference twice, and with different
    `ON DELETE` actions the outcome of a delete depends on which trigger fires first.
    What the fix does: nothing automatically; keep one (the validated one, with the wanted
    `ON DELETE`) and drop the others.
    """

    id = "duplicate_foreign_keys"
    severity = Severity.WARNING
    description = "Foreign key constraints that duplicate another on the same columns and referenced key"
    skip_reason = "no foreign key in scope"

    def targets(self, ctx):
        return [t for t in ctx.catalog.tables.values() if t.foreign_keys or t.partition_foreign_keys]

    def judge_catalog(self, ctx):
        findings = []
        for table in self.targets(ctx):
            groups: dict[tuple, list] = {}
            for fk in table.foreign_keys:
                if not fk.inherited:
                    groups.setdefault((None, signature(fk)), []).append(fk)
            for fk in table.partition_foreign_keys:
                groups.setdefault((str(fk.table), signature(fk)), []).append(fk)
            for (partition, sig), fks in sorted(groups.items(), key=lambda g: (g[0][0] or "", g[0][1])):
                if len(fks) < 2 or (partition and all(fk.inherited for fk in fks)):
                    continue    # the parent's duplicates, cloned to each partition: reported once, on the parent
                names = sorted(fk.name for fk in fks)
                details = {"constraints": names}
                where = ""
                if partition:
                    details["partition"] = partition
                    where = f" (partition {partition})"
                findings.append(self.finding(
                    None, table=str(table.name), column=sig.column, references=sig.references, details=details,
                    message=f"{len(fks)} foreign keys on {table.name}{where} ({sig.column}) -> {sig.references}: "
                            f"{', '.join(names)}"))
        return findings

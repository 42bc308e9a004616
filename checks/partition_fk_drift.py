from __future__ import annotations

from yumai_audit.model import Severity

from .base import CatalogCheck
from .declared import Signature, signature


class PartitionFkDrift(CatalogCheck):
    """Partitions of one partitioned table whose foreign keys differ.

    What is wrong: a foreign key exists on some partitions but not on the partitioned parent. The
    partitions that lack it (typically the newest one, created after the FKs were added partition by
    partition, or the default partition) accept any value; and since the parent does not declare it,
    every partition created from now on will lack it too.
    Why it matters: integrity holds for old rows and silently stops for new ones; cascades from the
    referenced table skip the partitions without the FK.
    What the fix does: one finding (error) per leaf partition lacking the FK, named after that
    partition; one finding (warning) on the parent that does not declare it. The repair adds the FK
    to the lacking partitions (NOT VALID, then VALIDATE) and then to the parent, which adopts the
    partitions' identical constraints instead of checking the rows again.
    """

    id = "partition_fk_drift"
    severity = Severity.ERROR
    description = "Partitioned tables whose partitions do not all carry the same foreign keys"
    skip_reason = "no partitioned table in scope"

    def targets(self, ctx):
        return [t for t in ctx.catalog.tables.values() if t.is_partitioned]

    def judge_catalog(self, ctx):
        findings = []
        for table in self.targets(ctx):
            leaves = [str(p.name) for p in table.leaf_partitions]
            on_parent = {signature(fk) for fk in table.foreign_keys}
            by_sig: dict[Signature, dict[str, list[str]]] = {}
            for fk in table.partition_foreign_keys:
                sig = signature(fk)
                if sig not in on_parent and str(fk.table) in leaves:
                    by_sig.setdefault(sig, {}).setdefault(str(fk.table), []).append(fk.name)
            for sig, holders in sorted(by_sig.items()):
                having = sorted(holders)
                constraints = sorted({n for names in holders.values() for n in names})
                base = {"parent": str(table.name), "columns": list(sig.columns), "ref_columns": list(sig.ref_columns),
                        "constraints": constraints, "partitions_with": having}
                for leaf in leaves:
                    if leaf in holders:
                        continue
                    findings.append(self.finding(
                        None, table=leaf, column=sig.column, references=sig.references, details=dict(base),
                        message=f"partition {leaf} of {table.name} lacks the foreign key ({sig.column}) -> "
                                f"{sig.references} that {len(having)} of its {len(leaves)} partitions have"))
                findings.append(self.finding(
                    None, table=str(table.name), column=sig.column, references=sig.references,
                    severity=Severity.WARNING, details=dict(base),
                    message=f"{table.name} does not declare the foreign key ({sig.column}) -> {sig.references} "
                            f"that {len(having)} of its {len(leaves)} partitions have: new partitions will not get it"))
        return findings

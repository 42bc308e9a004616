from __future__ import annotations

from yumai_audit.model import Severity

from .base import Probe, ProbeCheck, plural, verb
from .declared import declared_fks, violation_query


class OrphanedFkRows(ProbeCheck):
    """Rows that violate a declared foreign key: their key names no row of the referenced table.

    What is wrong: a constraint exists, but rows slipped past it. A NOT VALID foreign key only
    checks new rows, so every row older than the constraint is unchecked; a valid one can be
    violated too when data was loaded with triggers disabled (`session_replication_role = replica`,
    `DISABLE TRIGGER ALL`, some restore tools). Every FK in scope is examined, on any table,
    composite keys included, with MATCH SIMPLE semantics: a row with a NULL in any key column is
    not checked. An FK declared on some partitions only is counted over those partitions and
    reported on the partitioned parent.
    Why it matters: `VALIDATE CONSTRAINT` fails while one such row is left, joins silently drop the
    rows, and `ON DELETE CASCADE` never reaches them.
    What the fix does: nothing on its own: the finding gives the rows, the distinct missing keys and
    a sample of them; the repair (delete, quarantine or re-create the parent rows) is a decision
    about the data. Valid FKs are counted only with `--verify-declared` (config
    `verify_declared = true`): it reads every referencing table in full. NOT VALID FKs to the session
    master or the users table are left to `unvalidated_fk`.
    """

    id = "orphaned_fk_rows"
    severity = Severity.ERROR
    description = "Rows violating a declared FK (NOT VALID ones always, valid ones with --verify-declared)"
    skip_reason = "no NOT VALID foreign key in scope (valid ones are counted with --verify-declared)"

    def targets(self, ctx):
        return []

    def probes(self, ctx):
        return [Probe(fk.key, f"{fk.table.name} {'/'.join(fk.constraints)}",
                      violation_query(ctx, fk, ctx.config.sample_size))
                for fk in declared_fks(ctx, ctx.config.verify_declared)]

    def judge_probes(self, ctx, results):
        findings = []
        for fk in declared_fks(ctx, ctx.config.verify_declared):
            if fk.key not in results:
                continue
            rows, keys, sample = results[fk.key][0]
            if not rows:
                continue
            sig = fk.signature
            state = "valid" if fk.validated else "NOT VALID"
            where = f" (declared on {', '.join(fk.partitions)})" if fk.partitions else ""
            details = {"constraints": list(fk.constraints), "validated": fk.validated, "sample_of": "key",
                       "columns": list(sig.columns), "ref_columns": list(sig.ref_columns)}
            if fk.partitions:
                details["partitions"] = list(fk.partitions)
            findings.append(self.finding(
                None, table=str(fk.table.name), column=sig.column, rows=rows, keys=keys, references=sig.references,
                sample=list(sample or []), details=details,
                message=f"{plural(rows, 'row')} of {fk.table.name} ({sig.column}) {verb(rows, 'name', 'names')} "
                        f"{plural(keys, 'key')} missing from "
                        f"{sig.references}: {state} foreign key {', '.join(fk.constraints)}{where}"))
        return findings

from __future__ import annotations

from yumai_audit.model import Severity

from . import implied
from .base import CatalogCheck, ProbeCheck
from .catalog_targets import matching_fks, wanted_references


class UnconstrainedFk(CatalogCheck, ProbeCheck):
    """A session or user column that no foreign key constrains.

    What is wrong: `session_id` has no FOREIGN KEY to `session_master`, or `user_id` none to
    `users(id)`, so `INSERT ... VALUES ('fake-uuid')` succeeds.
    Why it matters: this is the defect the migration exists to cure; every other finding is damage
    that it let in.
    What the fix does: adds the FK (`ON DELETE CASCADE` for sessions) as NOT VALID, then validates
    it in a separate transaction (per partition where the server requires it).

    Schema-wide, the check also reports implied foreign keys on any table (warning severity):
    a column named like a reference (`customer_id` -> `customers.id`; `<anything>_<pk>` -> the one
    table whose single-column primary key is `<pk>`; `manager_id`, `reports_to` -> its own table;
    `customer` -> `customers`, whatever its key is called), of a comparable type, with no constraint,
    whose distinct non-NULL values are at least 99% present in that one parent (`details.share`),
    and that is not its table's own primary key; or any other column whose every value is in
    exactly one single-column key where that is unlikely by chance (`details.chance`: 20 badge
    numbers 1001..1039 that skip the deleted ones, never 1..12 inside ids 1..40), or in one key its
    name points at (`ship_via` -> `shippers`), or in the one key whose rows it points at, and not the
    others, have a word of its name in a text column (`support_rep_id` 3..5 -> the employees whose
    title is 'Sales Support Agent', where media types 1..5 hold the values as well).
    Everything weaker is `fk_candidate` (info).
    Columns listed in the configuration's `ignore` are never reported.
    """

    id = "unconstrained_fk"
    severity = Severity.ERROR
    description = "Key columns with no FK to the master, user columns with no FK to the users table"

    def judge_catalog(self, ctx):
        findings = []
        for ref in wanted_references(ctx):
            if not matching_fks(ctx, ref):
                findings.append(self.finding(ref.target, column=ref.column, references=ref.references,
                                             message=f"{ref.target.name}.{ref.column} has no foreign key to "
                                                     f"{ref.references}"))
        return findings

    # implied foreign keys on any table, confirmed by data
    def probes(self, ctx):
        return implied.probes(ctx)

    def judge_probes(self, ctx, results):
        findings = []
        for v in implied.verdicts(ctx, results):
            if not v.is_unconstrained_fk:
                continue
            best, c = v.best, v.best.candidate
            if isinstance(v, implied.NamedReference):
                others = f"; other candidates: {v.describe()}" if len(v.measured) > 1 else ""
                found = f"{best.share:.1%} of {best.values} distinct values found there"
            else:
                others = f"; also holding them: {v.describe()}" if len(v.contained) > 1 else ""
                found = f"every one of its {best.values} distinct values found there, {v.evidence()}"
            findings.append(self.finding(
                None, table=str(c.table.name), column=c.column.name, references=c.references,
                severity=Severity.WARNING, sample=list(best.sample), details=v.details(),
                message=f"{c.table.name}.{c.column.name} looks like a reference to {c.references} "
                        f"({found}) but has no foreign key{others}"))
        return findings

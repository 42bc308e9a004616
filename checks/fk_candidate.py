from __future__ import annotations

from yumai_audit.model import Severity

from . import implied
from .base import ProbeCheck


class FkCandidate(ProbeCheck):
    """A column that looks like a reference but is not confirmed by the data (information only).

    What is wrong: nothing yet, perhaps. The column is named like a reference (`<x>_id` to a table
    `<x>` or its plural with primary key `id`; `<pk>` or `<anything>_<pk>` to the one table whose
    single-column primary key is `<pk>`), has a comparable type and no foreign key, but fewer than
    99% of its distinct non-NULL values exist in the candidate parent, or several parents qualify
    (the alternatives are listed, each with its share), or the column is its own table's primary key
    (a one-to-one extension table, or two serial ids that merely overlap), or the column has no
    non-NULL value or its table no row (`details.reason`: nothing in the data can confirm it).
    Also a column named by no rule whose every value is in two or more keys that are each unlikely to
    hold them by chance (the alternatives and their evidence in `details`), and a `<role>_id` column
    whose values some keys hold but could hold by chance (small serial ids), where no name and no
    parent's rows tell which (two tables whose rows pointed at both say its role: both listed).
    Why it matters: either a real relationship with many dangling values (worth a look before
    adding a constraint) or a false match of names; the scan does not decide for you.
    What the fix does: nothing. Declare the FK yourself if it is real, or list the column in the
    configuration's `ignore = ["schema.table.column"]` to silence it.
    """

    id = "fk_candidate"
    severity = Severity.INFO
    description = "Columns named like references, with no FK, not confirmed by the data"
    skip_reason = "no unconstrained column could reference a key of a table in scope"

    def targets(self, ctx):
        return []

    def probes(self, ctx):
        return implied.probes(ctx)

    def judge_probes(self, ctx, results):
        findings = []
        for v in implied.verdicts(ctx, results):
            if v.is_unconstrained_fk:
                continue
            c = v.best.candidate
            lead = ("is named like a reference but" if isinstance(v, implied.NamedReference)
                    else "has no foreign key and")
            findings.append(self.finding(
                None, table=str(c.table.name), column=c.column.name, references=c.references,
                sample=list(v.best.sample), details=v.details(),
                message=f"{c.table.name}.{c.column.name} {lead} {v.why_not()}"))
        return findings

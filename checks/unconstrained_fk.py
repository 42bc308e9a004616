from __future__ import annotations

from yumai_audit.model import Severity

from .base import Check
from .catalog_targets import matching_fks, wanted_references


class UnconstrainedFk(Check):
    """A session or user column that no foreign key constrains.

    What is wrong: `session_id` has no FOREIGN KEY to `session_master`, or `user_id` none to
    `users(id)`, so `INSERT ... VALUES ('fake-uuid')` succeeds.
    Why it matters: this is the defect the migration exists to cure; every other finding is damage
    that it let in.
    What the fix does: adds the FK (`ON DELETE CASCADE` for sessions) as NOT VALID, then validates
    it in a separate transaction (per partition where the server requires it).
    """

    id = "unconstrained_fk"
    severity = Severity.ERROR
    description = "Key columns with no FK to the master, user columns with no FK to the users table"
    scope = "catalog"

    def judge_catalog(self, ctx):
        findings = []
        for ref in wanted_references(ctx):
            if not matching_fks(ctx, ref):
                findings.append(self.finding(ref.target, column=ref.column, references=ref.references,
                                             message=f"{ref.target.name}.{ref.column} has no foreign key to {ref.references}"))
        return findings

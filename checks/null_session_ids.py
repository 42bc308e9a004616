from __future__ import annotations

from yumai_audit.model import Severity

from .base import Sample, TableCheck, count_where, plural, verb
from .predicates import key_null, row_id


class NullSessionIds(TableCheck):
    """Rows with no session id at all.

    What is wrong: the key column is NULL, so the row belongs to no session.
    Why it matters: a foreign key accepts NULL, so the migration keeps these rows, but no cascade will
    ever delete them and no session report counts them.
    What the fix does: nothing: they stay where they are and are reported (add NOT NULL yourself
    once the application stops writing them).
    """

    id = "null_session_ids"
    severity = Severity.WARNING
    description = "Rows whose session id is NULL"

    def measures(self, ctx, target):
        return {"rows": count_where(key_null(target.key))}

    def judge(self, ctx, target, values):
        if not values["rows"]:
            return []
        return [self.finding(target, rows=values["rows"],
                             message=f"{plural(values['rows'], 'row')} in {target.name} "
                                     f"{verb(values['rows'], 'have', 'has')} no {ctx.key_label}")]

    def sample(self, ctx, target, finding):
        return Sample(row_id(target.table), key_null(target.key), distinct=False, of="primary key")

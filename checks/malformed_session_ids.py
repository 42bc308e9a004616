from __future__ import annotations

from yumai_audit.model import Severity

from .base import Sample, TableCheck, count_where, plural, verb
from .predicates import col, key_malformed


class MalformedSessionIds(TableCheck):
    """Text session ids that are not uuids at all, even after trimming white space.

    What is wrong: a text key column holds values such as `''`, `fake-uuid` or a truncated id. Every
    form PostgreSQL's uuid type accepts (upper case, braces, no hyphens) counts as valid.
    Why it matters: the column cannot be converted to uuid, nor reference the master, while one
    such value is left.
    What the fix does: moves the rows to `yumai_quarantine` before the column is converted.
    """

    id = "malformed_session_ids"
    severity = Severity.ERROR
    description = "Non-NULL text session ids that do not parse as a uuid"
    skip_reason = "no key column of a text type"

    def targets(self, ctx):
        return [k for k in ctx.key_tables if k.key.is_text]

    def measures(self, ctx, target):
        return {"rows": count_where(key_malformed(target.key))}

    def judge(self, ctx, target, values):
        if not values["rows"]:
            return []
        return [self.finding(target, rows=values["rows"],
                             message=f"{plural(values['rows'], 'row')} in {target.name} "
                                     f"{verb(values['rows'], 'have', 'has')} a {ctx.key_label} that is not "
                                     f"{ctx.key_type_phrase}")]

    def sample(self, ctx, target, finding):
        return Sample(col(target.key), key_malformed(target.key), of=ctx.key_label)

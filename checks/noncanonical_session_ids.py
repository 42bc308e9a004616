from __future__ import annotations

from yumai_audit.model import Severity

from .base import Sample, TableCheck, count_where, plural, verb
from .predicates import col, key_noncanonical


class NoncanonicalSessionIds(TableCheck):
    """Text session ids that parse as uuids but are not written in the canonical lower-case form.

    What is wrong: `' ABC…'`, `'{abc…}'` or upper-case ids: the same session spelled differently, so
    text comparisons and joins miss each other.
    Why it matters: harmless once the column is uuid, but until then every text join is wrong.
    What the fix does: the conversion to uuid (`USING btrim(...)::uuid`) canonicalises them.
    """

    id = "noncanonical_session_ids"
    severity = Severity.WARNING
    description = "Text session ids that parse but are not lower-case and unpadded"
    skip_reason = "no key column of a text type"

    def targets(self, ctx):
        return [k for k in ctx.key_tables if k.key.is_text]

    def measures(self, ctx, target):
        return {"rows": count_where(key_noncanonical(target.key))}

    def judge(self, ctx, target, values):
        if not values["rows"]:
            return []
        return [self.finding(target, rows=values["rows"],
                             message=f"{plural(values['rows'], 'row')} in {target.name} "
                                     f"{verb(values['rows'], 'spell', 'spells')} a uuid in a non-canonical form")]

    def sample(self, ctx, target, finding):
        return Sample(col(target.key), key_noncanonical(target.key), of=ctx.key_label)

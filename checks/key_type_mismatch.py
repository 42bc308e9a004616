from __future__ import annotations

from yumai_audit.model import Severity

from .base import CatalogCheck


class KeyTypeMismatch(CatalogCheck):
    """A session key column whose type differs from the master's key type (uuid for yumai; the source's key
    type elsewhere; integer columns of another width than an integer key are not counted).

    What is wrong: e.g. `recommendations_log.session_id varchar(64)`: any text is accepted, and the
    column cannot reference a uuid primary key.
    Why it matters: no foreign key can be declared until the types agree.
    What the fix does: after quarantining malformed values, converts the column with
    `ALTER COLUMN ... TYPE uuid USING btrim(...)::uuid`: a table rewrite under ACCESS EXCLUSIVE lock,
    shown in the plan with the table's size.
    """

    id = "key_type_mismatch"
    severity = Severity.ERROR
    description = "Key columns whose type differs from the master's key type (uuid, or the source's key type)"

    def judge_catalog(self, ctx):
        # the key type (the master's, else the source's); an integer column of another width is referenced
        # as it is (no finding: a foreign key between integer widths needs no conversion)
        wanted = ctx.master_key.type if ctx.master_key is not None else ctx.key_type.name
        return [
            self.finding(k, references=ctx.config.master_reference, details={"type": k.key.type, "expected": wanted},
                         message=f"{k.name}.{k.key.name} is {k.key.type}, the master's key is {wanted}")
            for k in ctx.key_tables if not k.key.is_native_key
        ]

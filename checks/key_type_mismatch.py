from __future__ import annotations

from yumai_audit.model import Severity

from .base import CatalogCheck


class KeyTypeMismatch(CatalogCheck):
    """A session key column whose type differs from the master's key type (uuid).

    What is wrong: e.g. `recommendations_log.session_id varchar(64)`: any text is accepted, and the
    column cannot reference a uuid primary key.
    Why it matters: no foreign key can be declared until the types agree.
    What the fix does: after quarantining malformed values, converts the column with
    `ALTER COLUMN ... TYPE uuid USING btrim(...)::uuid`: a table rewrite under ACCESS EXCLUSIVE lock,
    shown in the plan with the table's size.
    """

    id = "key_type_mismatch"
    severity = Severity.ERROR
    description = "Key columns whose type differs from the master's key type (uuid)"

    def judge_catalog(self, ctx):
        wanted = ctx.master_key.type if ctx.master_key is not None else "uuid"
        return [
            self.finding(k, references=ctx.config.master_reference, details={"type": k.key.type, "expected": wanted},
                         message=f"{k.name}.{k.key.name} is {k.key.type}, the master's key is {wanted}")
            for k in ctx.key_tables if k.key.type != wanted
        ]

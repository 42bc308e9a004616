from __future__ import annotations

from yumai_audit.model import Severity

from .base import USES_MASTER, USES_SESSION_ROWS, USES_USERS, TableCheck, count_where, plural, sum_sessions_where
from .catalog_targets import matching_fks, wanted_references
from .predicates import not_in_master, session_rows, session_unregistered, user_orphaned


class UnvalidatedFk(TableCheck):
    """A foreign key that exists but is NOT VALID, with the rows that block its validation.

    What is wrong: the constraint checks new rows only; old rows were never checked (typical of a
    migration that stopped half way).
    Why it matters: the planner cannot trust the column, and `VALIDATE CONSTRAINT` fails while one
    blocking row is left.
    What the fix does: removes the blocking rows as for orphans, then `VALIDATE CONSTRAINT` (the FK is
    validated, never duplicated).
    """

    id = "unvalidated_fk"
    severity = Severity.ERROR
    description = "FKs to the master or the users table that are NOT VALID, with the rows blocking validation"
    skip_reason = "no NOT VALID foreign key on a key or user column"

    def _refs(self, ctx):
        return [(ref, fk) for ref in wanted_references(ctx) for fk in matching_fks(ctx, ref) if not fk.validated]

    def targets(self, ctx):
        seen = []
        for ref, _ in self._refs(ctx):
            if ref.target not in seen:
                seen.append(ref.target)
        return seen

    def measures(self, ctx, target):
        return self._measures(ctx, target, over_set=not target.is_source and target.key_checkable)

    def row_measures(self, ctx, target):
        # watch: each new row's key looked up in the master
        return self._measures(ctx, target, over_set=False)

    def _measures(self, ctx, target, over_set: bool):
        """An FK to the master: the rows of sessions the master lacks. Over the scan's set of sessions
        (which counts the table's rows per session for `orphaned_session_ids` anyway) instead of a hash
        join of the table with the master's keys: the same number without reading the master once more
        (that join was most of the table's pass). The source table is not counted per
        session in the set: its rows are looked up in the master as they are."""
        out = {}
        for ref, fk in self._refs(ctx):
            if ref.target != target:
                continue
            if ref.to_master and over_set:
                rows = session_rows(ctx, target)
                out[fk.name] = sum_sessions_where(rows, session_unregistered(rows), USES_SESSION_ROWS)
            elif ref.to_master:
                out[fk.name] = count_where(not_in_master(target.key), USES_MASTER)
            else:
                out[fk.name] = count_where(user_orphaned(target.user, ctx.config.users_key), USES_USERS)
        return out

    def judge(self, ctx, target, values):
        findings = []
        for ref, fk in self._refs(ctx):
            if ref.target != target:
                continue
            rows = values[fk.name]
            findings.append(self.finding(target, column=ref.column, rows=rows, references=ref.references,
                                         details={"constraint": fk.name},
                                         message=f"foreign key {fk.name} on {target.name}.{ref.column} is NOT VALID; "
                                                 f"{plural(rows, 'row')} block its validation"))
        return findings

from __future__ import annotations

from psycopg import sql

from yumai_audit.model import Severity

from .base import (
    OVER_SESSIONS,
    USES_KNOWN,
    USES_SESSION_ROWS,
    Sample,
    TableCheck,
    count_distinct_where,
    count_sessions_where,
    count_where,
    plural,
    sum_sessions_where,
    verb,
)
from .predicates import key_uuid, orphaned, session_orphaned, session_rows


class OrphanedSessionIds(TableCheck):
    """Rows whose session id is a valid uuid that exists neither in the master nor in the source table.

    What is wrong: `user_interactions` (or another key table) refers to a session that never had a
    conversation and was never registered, e.g. `INSERT ... VALUES ('fake-uuid')`.
    Why it matters: the foreign key to `session_master` can only be validated once these rows are
    gone or their sessions registered.
    What the fix does: by default moves the rows to `yumai_quarantine` (same transaction as the
    delete, nothing is lost); `--orphans register` adds their sessions to the master instead.
    """

    id = "orphaned_session_ids"
    severity = Severity.ERROR
    description = "Rows whose session id is in neither the master nor the source table"
    skip_reason = "no key table besides the source table, or no master and no source table to compare with"

    def targets(self, ctx):
        if not ctx.has_known_sessions:
            return []
        return [k for k in ctx.others if k.key_checkable]

    def measures(self, ctx, target):
        # Over the set of sessions, which also counts the target's rows per session: the set is built
        # once per scan for every table, instead of one anti-join of the source table per table.
        rows = session_rows(ctx, target)
        return {"rows": sum_sessions_where(rows, session_orphaned(rows), USES_SESSION_ROWS),
                "keys": count_sessions_where(session_orphaned(rows), USES_SESSION_ROWS)}

    def judge(self, ctx, target, values):
        if not values["rows"]:
            return []
        return [self.finding(target, rows=values["rows"], keys=values["keys"], references=ctx.config.master_reference,
                             message=f"{plural(values['rows'], 'row')} in {target.name} "
                                     f"{verb(values['rows'], 'refer', 'refers')} to "
                                     f"{plural(values['keys'], 'unknown ' + ctx.key_noun)}")]

    def sample(self, ctx, target, finding):
        return Sample(sql.SQL("kn.session_id"), session_orphaned(session_rows(ctx, target)),
                      frozenset({USES_KNOWN, USES_SESSION_ROWS}), distinct=False, over=OVER_SESSIONS, of=ctx.key_label)

    def row_measures(self, ctx, target):
        # per row, `kn` is the row's own session looked up in the master and the source table
        return {"rows": count_where(orphaned(target.key), USES_KNOWN),
                "keys": count_distinct_where(key_uuid(target.key), orphaned(target.key), USES_KNOWN)}

    def row_sample(self, ctx, target):
        return Sample(key_uuid(target.key), orphaned(target.key), frozenset({USES_KNOWN}), of=ctx.key_label)

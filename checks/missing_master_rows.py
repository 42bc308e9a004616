from __future__ import annotations

from psycopg import sql

from yumai_audit.model import Severity

from .base import OVER_SESSIONS, USES_KNOWN, Sample, TableCheck, count_distinct_where, count_sessions_where, plural
from .predicates import key_uuid, not_in_master, session_not_in_master


class MissingMasterRows(TableCheck):
    """Sessions of the source table that have no row in the session master.

    What is wrong: a conversation carries a session id that `session_master` does not know (every
    session, while the master does not exist yet).
    Why it matters: the foreign key from the source table to the master cannot be validated, and the
    migration would lose or reject these conversations.
    What the fix does: the backfill inserts one master row per missing session (earliest and latest
    activity, the session's first user), never overwriting an existing master row.
    """

    id = "missing_master_rows"
    severity = Severity.ERROR
    description = "Distinct session ids in the source table with no row in the session master"
    skip_reason = "the source table does not exist or its key column is neither of a key type nor text"

    def targets(self, ctx):
        return [ctx.source] if ctx.source is not None and ctx.source.key_checkable else []

    def measures(self, ctx, target):
        # Counted over the known set (grouped by session already), not as count(DISTINCT) over the
        # source's rows: the same number without sorting every message.
        return {"keys": count_sessions_where(session_not_in_master())}

    def judge(self, ctx, target, values):
        keys = values["keys"]
        if not keys:
            return []
        where = "" if ctx.master is not None else " (the master table does not exist yet)"
        return [self.finding(target, table=str(ctx.config.master), column=ctx.key, keys=keys,
                             references=str(target.name),
                             message=f"{plural(keys, ctx.key_noun)} of {target.name} missing from "
                                     f"{ctx.config.master}{where}")]

    def sample(self, ctx, target, finding):
        return Sample(sql.SQL("kn.session_id"), session_not_in_master(), frozenset({USES_KNOWN}),
                      distinct=False, over=OVER_SESSIONS, of=ctx.key_label)

    def row_measures(self, ctx, target):
        # per row, `kn` is the row's own session looked up in the master
        return {"keys": count_distinct_where(key_uuid(target.key), not_in_master(target.key), USES_KNOWN)}

    def row_sample(self, ctx, target):
        return Sample(key_uuid(target.key), not_in_master(target.key), frozenset({USES_KNOWN}), of=ctx.key_label)

from __future__ import annotations

from psycopg import sql

from yumai_audit.model import Severity

from .base import Check, plural
from .predicates import col, key_uuid, key_valid, table_ref


class ConflictingSessionUsers(Check):
    """Sessions whose rows name more than one user.

    What is wrong: over every key table with a `user_id` column and the master, the rows of one
    session carry two or more distinct non-NULL user ids.
    Why it matters: the master keeps one user per session; whichever one it keeps, the other rows
    are attributed to the wrong person, and a cascade deletes them with the wrong account.
    What the fix does: the backfill takes the user of the session's earliest row and lists these
    sessions in the report for a person to decide; no row is changed.
    """

    id = "conflicting_session_users"
    severity = Severity.ERROR
    description = "Sessions whose rows carry more than one distinct user_id"
    scope = "database"
    skip_reason = "no key table has a user_id column"

    def sources(self, ctx):
        user = ctx.config.user_column
        parts = [(k.table, k.key) for k in ctx.key_tables if k.user is not None and k.key_checkable]
        if ctx.master is not None and ctx.master_user is not None and ctx.master_key is not None:
            parts.append((ctx.master, ctx.master_key))
        return [(table, key, user) for table, key in parts]

    def targets(self, ctx):
        return ctx.key_tables if self.sources(ctx) else []

    def query(self, ctx):
        # More than one distinct non-NULL user <=> min <> max: a hash aggregate, no sort per session
        # (byte-wise "C" comparison, so equal means identical).
        selects = [
            sql.SQL("SELECT {} AS sid, {}::text COLLATE \"C\" AS uid FROM {} t WHERE {} IS NOT NULL AND {}").format(
                key_uuid(key), col(user), table_ref(table.name), col(user), key_valid(key))
            for table, key, user in self.sources(ctx)
        ]
        return sql.SQL(
            "SELECT count(*), (array_agg(sid::text ORDER BY sid))[1:{n}] FROM "
            "(SELECT sid FROM ({parts}) x GROUP BY sid HAVING min(uid) <> max(uid)) c"
        ).format(n=sql.Literal(ctx.config.sample_size), parts=sql.SQL(" UNION ALL ").join(selects))

    def judge_rows(self, ctx, rows):
        count, sample = rows[0]
        if not count:
            return []
        table = str(ctx.source.name) if ctx.source else str(ctx.config.source)
        return [self.finding(None, table=table, column=ctx.config.user_column, keys=count, sample=list(sample or []),
                             message=f"{plural(count, 'session')} carry more than one user_id across the key tables",
                             details={"sample_of": "session id"})]

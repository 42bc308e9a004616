from __future__ import annotations

from psycopg import sql

from yumai_audit.model import Severity

from .base import OVER_SESSIONS, USES_KNOWN, USES_SESSION_USERS, Sample, TableCheck, count_sessions_where, plural, verb
from .predicates import session_conflicting, user_sources


class ConflictingSessionUsers(TableCheck):
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
    skip_reason = "no key table has a user_id column"

    def sources(self, ctx):
        return user_sources(ctx)

    def targets(self, ctx):
        # Measured over the set of sessions (which carries each session's smallest and largest user
        # id over every table with a user column); the finding is reported on the source table.
        if not self.sources(ctx) or not ctx.key_tables:
            return []
        if ctx.source is not None:
            return [ctx.source]
        return [next((k for k in ctx.key_tables if k.user is not None), ctx.key_tables[0])]

    def measures(self, ctx, target):
        return {"keys": count_sessions_where(session_conflicting(), USES_SESSION_USERS)}

    def judge(self, ctx, target, values):
        count = values["keys"]
        if not count:
            return []
        table = str(ctx.source.name) if ctx.source else str(ctx.config.source)
        return [self.finding(None, table=table, column=ctx.config.user_column, keys=count,
                             message=f"{plural(count, ctx.key_noun)} {verb(count, 'carry', 'carries')} more than one "
                                     f"{ctx.config.user_column} across the key tables")]

    def sample(self, ctx, target, finding):
        return Sample(sql.SQL("kn.session_id"), session_conflicting(), frozenset({USES_KNOWN, USES_SESSION_USERS}),
                      distinct=False, over=OVER_SESSIONS, of=ctx.key_label)

from __future__ import annotations

from psycopg import sql

from yumai_audit.context import KeyTable
from yumai_audit.model import Severity

from .base import USES_USERS, Sample, TableCheck, count_where, plural, verb
from .predicates import col, user_orphaned


class OrphanedUserIds(TableCheck):
    """Rows whose user_id names no row of the users table.

    What is wrong: `user_id` is set but `chatbot.users` has no such id (a deleted or made-up user).
    Why it matters: the master's `user_id REFERENCES users(id)` would reject such a session, and the
    rows belong to nobody.
    What the fix does: the backfill registers such sessions with a NULL user and the report lists
    them; the rows themselves are kept.
    """

    id = "orphaned_user_ids"
    severity = Severity.ERROR
    description = "Rows whose user_id is not NULL and not in the users table"
    skip_reason = "the users table does not exist, or no table has a user_id column"

    def targets(self, ctx):
        if ctx.users is None:
            return []
        targets = [k for k in ctx.key_tables if k.user is not None]
        if ctx.master is not None and ctx.master_user is not None and ctx.master_key is not None:
            targets.append(KeyTable(ctx.master, ctx.master_key, ctx.master_user, is_source=False))
        return targets

    def measures(self, ctx, target):
        return {"rows": count_where(user_orphaned(target.user, ctx.config.users_key), USES_USERS)}

    def judge(self, ctx, target, values):
        if not values["rows"]:
            return []
        return [self.finding(target, column=target.user.name, rows=values["rows"],
                             references=ctx.config.users_reference,
                             message=f"{plural(values['rows'], 'row')} in {target.name} "
                                     f"{verb(values['rows'], 'name', 'names')} a user that does not exist")]

    def sample(self, ctx, target, finding):
        return Sample(sql.SQL("{}::text").format(col(target.user)), user_orphaned(target.user, ctx.config.users_key),
                      frozenset({USES_USERS}), of="user id")


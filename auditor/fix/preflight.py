"""The preflight: one query whose rows are the reasons not to start, built once, last, from the draft.

Besides what any plan needs, it reads what the draft's steps declare (fix/ops/__init__.py, `Needs`):
the index names they claim, the tables they alter and reference, the rows they take out or set NULL;
each operation's refusal for them is in its module under fix/ops/.

It runs before the first change (and before the backup): what can be known before changing anything
is checked here, so that a run does not stop halfway on something it could have seen.
"""
from __future__ import annotations

from psycopg import sql

from ..catalog import TOOL_SCHEMAS, QualifiedName
from ..engine.steps import Kind, LockMode, Step
from ..operations import Operation
from . import replication
from .draft import Draft
from .ops import foreign_key, gathered, index, key_type, master, quarantine
from .preflight_checks import (
    database_create,
    delete_triggers,
    refusals,
    replica_identity,
    schema_usage,
    tool_schema_privileges,
)

PREFLIGHT = "preflight"   # its step's id: every plan starts with it, the others run after it

# the steps that delete or update rows of the tables they change (the others insert, or alter definitions)
ROW_CHANGES = (Operation.QUARANTINE_MALFORMED, Operation.ORPHANS, Operation.CATCHUP, Operation.MISSING_USERS)


def preflight(d: Draft) -> Step:
    """A query whose rows are the reasons not to start (none: go), from everything the draft holds."""
    needs = gathered(d.steps)
    tables = d.migrated
    names = [k.name for k in tables] + ([d.ctx.users.name] if d.ctx.users is not None and tables else [])
    if d.ctx.master is not None and tables:
        names.append(d.master)
    names += [n for n in needs.altered if n not in names]
    pairs = sql.SQL(", ").join(sql.SQL("({}, {})").format(sql.Literal(n.schema), sql.Literal(n.name))
                               for n in names or [QualifiedName("", "")])   # no table: matches nothing
    parts: list[sql.Composable] = [master.GEN_RANDOM_UUID] if tables else []   # neither needed without a migration
    parts += [
        sql.SQL("SELECT 'the server is a read-only standby' WHERE pg_is_in_recovery()"),
        sql.SQL("SELECT format('%s is owned by %s: connect as its owner or a superuser', "
                "quote_ident(n.nspname) || '.' || quote_ident(c.relname), pg_get_userbyid(c.relowner)) "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE (n.nspname, c.relname) IN ({}) AND NOT pg_has_role(current_user, c.relowner, 'MEMBER')"
                ).format(pairs),
        # a partitioned index is invalid while a partition has no index attached to it (CREATE INDEX ... ON ONLY,
        # then each partition's, as pg_partman and this tool do): REINDEX cannot help, the missing ones can
        sql.SQL("SELECT CASE WHEN ic.relkind = 'I' AND m.n > 0 THEN format('invalid index %s on %s: %s of its "
                "partitions have no index attached to it (%s%s); create one on each and attach it (ALTER INDEX %s "
                "ATTACH PARTITION ...), or drop the index, then run again', ic.relname, i.indrelid::regclass, m.n, "
                "array_to_string(m.names[1:5], ', '), CASE WHEN m.n > 5 THEN ', ...' ELSE '' END, ic.oid::regclass) "
                "ELSE format('invalid index %s on %s (left by an earlier attempt?): drop it or rebuild it first', "
                "ic.relname, i.indrelid::regclass) END "
                "FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
                "JOIN pg_namespace n ON n.oid = ic.relnamespace "
                "LEFT JOIN LATERAL (SELECT count(*) AS n, array_agg(p.inhrelid::regclass::text ORDER BY "
                "p.inhrelid::regclass::text) AS names FROM pg_inherits p WHERE p.inhparent = i.indrelid "
                "AND NOT EXISTS (SELECT 1 FROM pg_inherits h JOIN pg_index pi ON pi.indexrelid = h.inhrelid "
                "WHERE h.inhparent = ic.oid AND pi.indrelid = p.inhrelid)) m ON ic.relkind = 'I' "
                "WHERE NOT i.indisvalid AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
                "AND ic.relname <> ALL({})").format(sql.Literal([c.index for c in needs.claims])),
    ]
    parts += [sql.SQL("SELECT {}").format(sql.Literal(reason)) for reason in d.refusals]   # the planners'
    if tables:
        parts += master.refusals(d)                                     # fix/ops/master.py
    parts += refusals(d.ctx, d.options, tables, list(needs.altered))    # auditor/fix/preflight_checks.py
    parts += key_type.refusals(list(needs.retyped), d.ctx.key_type.name)   # fix/ops/key_type.py
    parts += delete_triggers(d.options, tables)
    parts += index.refusals(needs.claims)                               # fix/ops/index.py
    if not d.options.subscribers_ready:   # publications and slots that would carry the new tables' changes
        parts.append(replication.refusal(replication.touched(d.steps), d.version))
    parts += quarantine.refusals(needs.removals, needs.nulled, d.options.max_removed_share)   # fix/ops/quarantine.py
    # privileges and publications: every run creates the tool's schemas (its journal at least), reads and
    # changes tables in their schemas, and deletes or updates rows of the tables its DML steps change
    parts += database_create(TOOL_SCHEMAS) + tool_schema_privileges(TOOL_SCHEMAS)
    parts += schema_usage(names)
    by_name = {str(n): n for n in d.ctx.catalog.tables}
    changed = [by_name[t] for s in d.steps if s.operation in ROW_CHANGES for t in s.changes
               if t in by_name and by_name[t] != d.master]
    parts += replica_identity(list(dict.fromkeys(changed)))
    parts += foreign_key.refusals(list(needs.referenced))               # fix/ops/foreign_key.py
    return Step(id=PREFLIGHT, operation=Operation.PREFLIGHT,
                description="Server version, privileges, no invalid index left behind",
                statements=(sql.SQL(" UNION ALL ").join(parts),), lock=LockMode.ACCESS_SHARE, tables=(),
                kind=Kind.CHECK, precondition=True)

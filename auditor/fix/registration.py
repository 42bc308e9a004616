"""How the migration tells what the master lacks and registers sessions in it, on the plan's `Draft`.

The predicates are the scan's (`checks/predicates.py`) over the tables as the plan leaves them (the
master of the key type, a text key converted), so that the rows the scan counts as orphaned are exactly
the rows the fix moves; the operations of fix/ops/ (the backfill, the orphans, the catch-up, the bridge,
the gate) build their statements from these.
"""
from __future__ import annotations

from psycopg import sql

from yumai_audit.checks import predicates
from yumai_audit.checks.predicates import Exists, Known, key_uuid

from ..catalog import Column, ForeignKey, QualifiedName
from ..context import KeyTable
from ..engine.guards import no_rows
from ..sqlparts import table_ref
from .draft import Draft
from .plan import PlanError


def converted(name: str, key: Column) -> Column:
    """A stand-in: column `name` once converted to `key`'s key type."""
    kt = key.key_type
    return Column(name, kt.name, kt.typname, False, kt)


def key_after(k: KeyTable) -> Column:
    """The key column as the later steps see it: of the key type once a text key is converted."""
    return converted(k.key.name, k.key) if k.key.is_text else k.key


def lookup(d: Draft, master_only: bool = False) -> Exists:
    """The planner's session lookup (predicates.Exists): the master as it will be (the key type), the source
    table with its key after conversion (not with `master_only`). Its `orphaned`/`not_in_master` are the
    scan's predicates."""
    src = d.ctx.source if not master_only else None
    kt = d.ctx.key_type
    known = Known(d.master, Column(d.key, kt.name, kt.typname, False, kt),
                  src.name if src is not None and src.key_checkable else None,
                  key_after(src) if src is not None and src.key_checkable else None, key_type=kt)
    return Exists(known)


def after_source_fk(d: Draft, k: KeyTable) -> bool:
    """Whether `k`'s steps run after the source table's validated foreign key to the master: the source is
    migrated by this plan (first, and every other table's steps depend on its FK steps). From then on every
    session of the source is in the master, so a key the master lacks is known to neither: looking it up in
    the master alone gives the same rows, without probing each of the source's partitions per row."""
    src = d.ctx.source
    return (src is not None and not k.is_source and src.key_checkable
            and any(t.name == src.name for t in d.migrated))


def orphaned(d: Draft, key: Column, master_only: bool = False) -> sql.Composable:
    """The scan's `orphaned`: a valid key known neither to the master nor to the source table (`master_only`:
    looked up in the master alone, once the source's FK holds: `after_source_fk`)."""
    return predicates.orphaned(key, lookup=lookup(d, master_only))


def not_in_master(d: Draft, key: Column, alias: str = "t") -> sql.Composable:
    """The scan's `not_in_master`: a valid key the master lacks."""
    return predicates.not_in_master(key, alias, lookup(d))


def master_columns(d: Draft) -> set[str]:
    if d.ctx.master is not None:
        return set(d.ctx.master.columns)
    return {d.key, "user_id", "session_start", "session_end", "is_active"}


def master_values(d: Draft, origin: KeyTable, first_at: str, last_at: str, uid: str, user_checked: bool = True
                  ) -> tuple[list[sql.Composable], list[sql.Composable]]:
    """The master's columns a registration writes, and their values from a session's first and last
    created_at and its first row's user (SQL expressions; a user that does not exist: NULL). `user_checked`
    False: the user as the source names it, unchecked (the backfill's merge, when the master's user_id FK
    is added after it: its validation step sets NULL every user that does not exist, the same end state)."""
    cfg = d.ctx.config
    created = d.ctx.created_at(origin.table)
    have = master_columns(d)
    cols: list[sql.Composable] = [sql.Identifier(d.key)]
    values: list[sql.Composable] = [sql.SQL("b.sid")]
    if created is not None and {"session_start", "session_end"} & have:
        for name, expr in (("session_start", first_at), ("session_end", last_at)):
            if name in have:
                cols.append(sql.Identifier(name))
                values.append(sql.SQL(expr))
        if "is_active" in have:
            cols.append(sql.Identifier("is_active"))
            values.append(sql.SQL("coalesce({} >= now() - {} * interval '1 minute', false)").format(
                sql.SQL(last_at), sql.Literal(d.options.active_window_minutes)))
    if origin.user is not None and "user_id" in have:
        cols.append(sql.Identifier("user_id"))
        if d.ctx.users is not None and user_checked:
            values.append(sql.SQL("(SELECT u.{uk} FROM {users} u WHERE u.{uk} = {uid} LIMIT 1)").format(
                uk=sql.Identifier(cfg.users_key), users=table_ref(d.ctx.users.name), uid=sql.SQL(uid)))
        else:
            values.append(sql.SQL(uid))
    return cols, values


def register_sessions(d: Draft, origin: KeyTable, pick: sql.Composable) -> sql.Composed:
    """INSERT into the master the sessions picked by `pick` (a SELECT of `sid`), described from `origin`.

    session_start/end: the earliest/latest created_at of the session's rows in `origin`; user: the
    user of its earliest row (ties: lowest primary key), NULL when that user does not exist.
    """
    key = key_after(origin)
    table = origin.table
    created = d.ctx.created_at(table)
    cols, values = master_values(d, origin, "a.first_at", "a.last_at", "f.uid")
    joins: list[sql.Composable] = []
    if created is not None and {"session_start", "session_end"} & master_columns(d):
        joins.append(sql.SQL("CROSS JOIN LATERAL (SELECT min(o.{c}) AS first_at, max(o.{c}) AS last_at "
                             "FROM {t} o WHERE {k} = b.sid) a").format(
            c=sql.Identifier(created.name), t=table_ref(origin.name), k=key_uuid(key, "o")))
    if origin.user is not None and "user_id" in master_columns(d):
        order = [sql.Identifier("o", created.name)] if created is not None else []
        order += [sql.Identifier("o", c) for c in table.primary_key] or [sql.Identifier("o", origin.user.name)]
        joins.append(sql.SQL("LEFT JOIN LATERAL (SELECT o.{u} AS uid FROM {t} o WHERE {k} = b.sid "
                             "ORDER BY {order} LIMIT 1) f ON true").format(
            u=sql.Identifier(origin.user.name), t=table_ref(origin.name), k=key_uuid(key, "o"),
            order=sql.SQL(", ").join(order)))
    return sql.SQL("INSERT INTO {master} ({cols}) SELECT {values} FROM ({pick}) b {joins} "
                   "ON CONFLICT DO NOTHING").format(
        master=table_ref(d.master), cols=sql.SQL(", ").join(cols), values=sql.SQL(", ").join(values),
        pick=pick, joins=sql.SQL(" ").join(joins))


def missing_from_master(d: Draft, relation: sql.Composable, key: Column) -> sql.Composed:
    """SELECT DISTINCT sid: the valid keys of `relation` (a table, or a subquery in parentheses) with no
    master row."""
    return sql.SQL("SELECT DISTINCT {k} AS sid FROM {t} t WHERE {missing}").format(
        k=key_uuid(key), t=relation, missing=not_in_master(d, key))


def source(d: Draft) -> KeyTable:
    """The source table (the backfill registers its sessions; planned only when it exists)."""
    if d.ctx.source is None:
        raise PlanError(f"{d.ctx.config.source} does not exist: nothing to register sessions from")
    return d.ctx.source


def backfill_all(d: Draft) -> sql.Composed:
    src = source(d)
    return register_sessions(d, src, missing_from_master(d, table_ref(src.name), key_after(src)))


def existing_fk(d: Draft, fks: list[ForeignKey], table: QualifiedName) -> ForeignKey | None:
    for fk in fks:
        if fk.table == table and fk.columns == (d.key,) and d.ctx.is_master_fk(fk):
            return fk
    return None


def backfill_guard(d: Draft, relation: QualifiedName, key: Column) -> sql.Composed:
    """No row of `relation` names a session the master lacks."""
    return no_rows(table_ref(relation), not_in_master(d, key))

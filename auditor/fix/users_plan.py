"""`fix --include users`: a foreign key from each key table's user column to the users table, online.

For every key table with the user column (the `user_column` setting) and no validated foreign key to
`users(users_key)`, the plan adds, after the session migration and with the operations of fix/ops/:
an index leading with the column when none exists (CONCURRENTLY; ON ONLY the parent, CONCURRENTLY per
partition and ATTACH on a partitioned table), the foreign key NOT VALID (new rows are checked, a brief
lock) and VALIDATE in a transaction of its own (PostgreSQL 18 on the parent; 12-17 per partition,
then the parent, which attaches them). The key is `ON DELETE NO ACTION`: deleting a user must not
silently delete conversations, nor orphan them with SET NULL; it fails while rows still name the user.

Rows naming a user the users table lacks would make VALIDATE fail. What happens to them is
`--missing-users` (measured when the plan is made, read-only, by `probes`):

- `keep` (default): no foreign key for that column; the plan notes how many rows, and
  `orphaned_user_ids` stays a finding to decide on (accept it, or choose one of the others).
- `null`: in one transaction, every original (table, primary key as JSON, column, old user id) is
  inserted into `yumai_audit.nulled_user_ids`, then those rows' user column is set to NULL. Undo:
  drop the foreign key, then `UPDATE t SET user_id = r.old_user_id::int FROM yumai_audit.nulled_user_ids r
  WHERE r.table_schema = ... AND r.table_name = ... AND r.primary_key = jsonb_build_object('id', t.id)`.
  A table without a primary key gets no step (its rows could not be found again): a note.
- `quarantine`: the rows move to `yumai_quarantine.<schema>__<table>` in the same transaction as the
  delete, exactly as orphaned session rows do (fix/ops/quarantine.py, `move_rows`), reason `missing user`.

Every step declares its `target` (the key table), `column` (the user column) and `repairs`, so the
verdict tells these findings from the session ones of the same table. The repair runs once before the
NOT VALID foreign key and once more between it and VALIDATE (rows written in between). A second run
plans nothing: the foreign keys exist and are validated.
"""
from __future__ import annotations

from collections.abc import Callable

from psycopg import sql

from yumai_audit.checks.base import Probe
from yumai_audit.checks.orphaned_user_ids import OrphanedUserIds

from ..catalog import Column, Table
from ..context import AuditContext, KeyTable
from ..engine.steps import LockMode, Query
from ..operations import Operation
from ..sqlparts import col, table_ref
from .ddl import Built, short_name
from .draft import Draft
from .ops import Declared, Needs, declared, foreign_key
from .ops.foreign_key import FkSpec, fk_sequence, verify_fks
from .ops.index import leading_index_steps
from .ops.quarantine import move_rows, quarantine_name
from .shares import NullOut

AUDIT_SCHEMA = "yumai_audit"
NULLED_TABLE = "nulled_user_ids"
REPAIRS = (OrphanedUserIds.id,)   # check ids, named through the check classes


def _user(k: KeyTable) -> Column:
    """The user column of a candidate table (`candidates` keeps only tables with one)."""
    if k.user is None:
        raise ValueError(f"{k.name} has no user column")
    return k.user


def _users(ctx: AuditContext) -> Table:
    """The users table (`candidates` is empty without one)."""
    if ctx.users is None:
        raise ValueError(f"{ctx.config.users} does not exist")
    return ctx.users


def _key(k: KeyTable) -> str:
    return f"users-fix:missing:{k.name.schema}.{k.name.name}"


def missing_user(ctx: AuditContext, k: KeyTable) -> sql.Composed:
    """Rows of `k` (alias t) whose user column is set and names no row of the users table (what
    `orphaned_user_ids` counts: NULL is not missing)."""
    return sql.SQL("({c} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {u} u WHERE {uk} = {c}))").format(
        c=col(_user(k)), u=table_ref(_users(ctx).name), uk=sql.Identifier("u", ctx.config.users_key))


def candidates(ctx: AuditContext) -> list[KeyTable]:
    """Key tables with the user column and without a validated FK from it to the users table."""
    if ctx.users is None:
        return []
    out = []
    for k in ctx.key_tables:
        if k.user is None:
            continue
        fk = _existing(ctx, k.table.foreign_keys, k)
        if fk is not None and fk.validated:
            continue
        out.append(k)
    return out


def _existing(ctx: AuditContext, fks, k: KeyTable, table=None):
    table = table or k.name
    return next((fk for fk in fks if fk.table == table and fk.columns == (_user(k).name,) and ctx.is_user_fk(fk)),
                None)


def probes(ctx: AuditContext) -> list[Probe]:
    """The rows naming a missing user, per candidate table (one count each)."""
    return [Probe(_key(k), f"{k.name}.{_user(k).name}: rows naming a missing user",
                  sql.SQL("SELECT count(*) FROM {} t WHERE {}").format(table_ref(k.name), missing_user(ctx, k)))
            for k in candidates(ctx)]


def nulled_table() -> sql.Composable:
    return sql.Identifier(AUDIT_SCHEMA, NULLED_TABLE)


def null_statements(ctx: AuditContext, k: KeyTable) -> tuple[Query, ...]:
    """Record every original (table, primary key, old user id), then set the user column NULL: one
    transaction, the same rows (locked FOR UPDATE by the first statement's CTE)."""
    pk = k.table.primary_key
    pk_json = sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(
        sql.SQL("{}, {}").format(sql.Literal(c), sql.Identifier("old", c)) for c in pk))
    return (
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(AUDIT_SCHEMA)),
        sql.SQL("CREATE TABLE IF NOT EXISTS {} (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "
                "table_schema text NOT NULL, "
                "table_name text NOT NULL, primary_key jsonb NOT NULL, user_column text NOT NULL, "
                "old_user_id text NOT NULL, nulled_at timestamptz NOT NULL DEFAULT now())").format(nulled_table()),
        sql.SQL("WITH old AS (SELECT {pkcols}, {c} AS yumai_old_user FROM {t} t WHERE {pred} FOR UPDATE), "
                "recorded AS (INSERT INTO {undo} (table_schema, table_name, primary_key, user_column, old_user_id) "
                "SELECT {schema}, {name}, {pk_json}, {column}, old.yumai_old_user::text FROM old) "
                "UPDATE {t} AS t SET {user} = NULL FROM old WHERE ({tpk}) = ({oldpk})").format(
            pkcols=sql.SQL(", ").join(col(c) for c in pk), c=col(_user(k)), t=table_ref(k.name),
            pred=missing_user(ctx, k), undo=nulled_table(), schema=sql.Literal(k.name.schema),
            name=sql.Literal(k.name.name), pk_json=pk_json, column=sql.Literal(_user(k).name),
            user=sql.Identifier(_user(k).name), tpk=sql.SQL(", ").join(col(c) for c in pk),
            oldpk=sql.SQL(", ").join(sql.Identifier("old", c) for c in pk)),
    )


def repairing(draft: Draft, k: KeyTable, mode: str) -> Callable[[str, list[str]], Built]:
    """The repair of `k`'s rows naming a missing user (`--missing-users null` or `quarantine`), as a builder
    of one step by id and dependencies: it runs before the NOT VALID key and again before VALIDATE."""
    name, column = str(k.name), _user(k).name
    pred = missing_user(draft.ctx, k)
    if mode == "null":
        statements = null_statements(draft.ctx, k)
        needs = Needs(nulled=(NullOut(k.name, pred, f"{column} set NULL where it names a missing user"),))
        description = (f"Set {name}.{column} to NULL where the user does not exist, each original "
                       f"recorded first in {AUDIT_SCHEMA}.{NULLED_TABLE} (same transaction)")
    else:
        moved = move_rows(draft, k, pred, "missing user")
        statements, needs = moved.statements, moved.needs
        description = (f"Move rows of {name} naming a missing user to {quarantine_name(k)} "
                       "(same transaction as the delete)")
    guard = sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {} t WHERE {})").format(table_ref(k.name), pred)

    def repair_step(step_id: str, deps: list[str]) -> Built:
        out = Built()
        out.last = [out.add(Declared(
            id=step_id, operation=Operation.MISSING_USERS, description=description, statements=statements,
            lock=LockMode.ROW_EXCLUSIVE, tables=(name,), depends_on=tuple(deps), guard=guard,
            changes=(name,), target=name, column=column, repairs=REPAIRS, needs=needs)).id]
        return out

    return repair_step


def plan_users(draft: Draft, evidence: dict[str, list[tuple]], after: list[str]) -> None:
    """Add the user-FK steps to the draft, after the steps `after`. `evidence`: the rows of `probes(ctx)`
    by probe key; a table not measured gets no step (a note)."""
    ctx = draft.ctx
    if ctx.users is None:
        draft.notes.append(f"--include users: {ctx.config.users} does not exist (or has no column "
                           f"{ctx.config.users_key}): no user foreign key planned")
        return
    planned: list[tuple[str, sql.Composable]] = []
    last: list[str] = []
    for k in candidates(ctx):
        missing = measured(draft, k, evidence)
        if missing is None:
            continue
        last += user_fk(draft, k, missing, after)
        planned.append((_what(ctx, k), _spec(ctx, k).exists(k.name, validated=True)))
    if planned:
        draft.add(verify_fks("verify-users", "Every user foreign key planned is there and validated", planned, last))


def _what(ctx: AuditContext, k: KeyTable) -> str:
    return f"{k.name}.{_user(k).name} -> {ctx.config.users_reference}"


def _spec(ctx: AuditContext, k: KeyTable) -> FkSpec:
    return FkSpec((_user(k).name,), _users(ctx).name, (ctx.config.users_key,))   # ON DELETE NO ACTION


def measured(draft: Draft, k: KeyTable, evidence: dict[str, list[tuple]]) -> int | None:
    """The rows of `k` naming a missing user, when its foreign key can be planned; else None, and a note why."""
    ctx, name, mode = draft.ctx, str(k.name), draft.options.missing_users
    what = _what(ctx, k)
    users_key = _users(ctx).columns[ctx.config.users_key]
    if _user(k).type != users_key.type:
        draft.notes.append(f"user foreign key {what}: {_user(k).type} does not match {users_key.type}: not planned")
        return None
    if k.table.is_partitioned and any(p.level > 1 for p in k.table.partitions):
        draft.notes.append(f"user foreign key {what}: {name} has sub-partitions: not planned")
        return None
    if _key(k) not in evidence:
        draft.notes.append(f"user foreign key {what}: rows naming missing users not measured: not planned")
        return None
    missing = int(evidence[_key(k)][0][0] or 0)
    if missing and mode == "keep":
        draft.notes.append(
            f"user foreign key {what}: {missing} rows name a user missing from {ctx.config.users}: "
            "no foreign key planned (--missing-users keep); --missing-users null or quarantine repairs them")
        return None
    if missing and mode == "null" and not k.table.primary_key:
        draft.notes.append(f"user foreign key {what}: {missing} rows name a missing user and {name} has no "
                           "primary key to record them by: not planned (--missing-users quarantine can)")
        return None
    return missing


def user_fk(draft: Draft, k: KeyTable, missing: int, after: list[str]) -> list[str]:
    """`k`'s user foreign key: an index leading with the column, the repair of the `missing` rows (before
    the key and again before VALIDATE), the key; returns the ids after which it is in place."""
    ctx, name, column = draft.ctx, str(k.name), _user(k).name
    repair = repairing(draft, k, draft.options.missing_users) if missing else None
    suffix = f".{column}"
    pre = [*after, *draft.take(leading_index_steps(k.table, column, after, suffix))]
    if repair is not None:
        pre = draft.take(repair(f"missing-users:{name}", pre))
    existing = _existing(ctx, k.table.foreign_keys, k)
    constraint = existing.name if existing is not None else short_name(k.name.name, column, suffix="fkey")

    def partition_constraint(p):
        found = _existing(ctx, k.table.partition_foreign_keys, k, p.name)
        return found.name if found is not None else constraint

    settle = (lambda deps: repair(f"settle-users:{name}", deps)) if repair is not None else None
    return draft.take(declared(fk_sequence(draft.version, k.table, _spec(ctx, k), constraint, pre, suffix=suffix,
                                           whole=existing is not None, settle=settle,
                                           partition_constraint=partition_constraint, repairs=foreign_key.REPAIRS),
                               foreign_key.needs_checked(k.name, _users(ctx).name)))

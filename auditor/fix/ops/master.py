"""Operation: the session master table, created when it does not exist (the guide's schema).

CREATE TABLE IF NOT EXISTS with the key of the key type (a uuid key with its default), user_id
referencing the users table (its index at once: the table is empty), and the backfill's bookkeeping
tables (its walks' guards can then tell "begun" without reading rows). Guard: the table exists. The
plan needs CREATE in the master's schema and, on 12, gen_random_uuid() (`refusals`).

With --master-user-delete set-null (the default) the user_id FK comes after the backfill, as a one-shot
migration adds it after filling the table: each session the backfill registers would otherwise pay the
FK's trigger (a lookup in users per row, about a third of the backfill's merge). The table is created
without it and marked (its comment, `PENDING_USER_FK`); after the backfill the FK is added NOT VALID (a
brief SHARE ROW EXCLUSIVE on the master and users, as the REFERENCES of CREATE TABLE took on users), then
a step sets NULL the user_id of the rows naming a user that does not exist, validates the FK and drops
the mark, in one transaction (`user_fk_steps`). What that repairs is what the FK's ON DELETE SET NULL
would have done: every registration writes a user only when it exists (`registration.master_values`, the
bridge), so a row names a missing user only when that user was deleted before the FK existed (or when
the application itself wrote one, with --bridge none: it is kept, its user NULL). Once the FK exists no
new such row can appear, so the pass needs no lock that blocks writers and VALIDATE cannot fail. A
master that exists is left as it is unless it carries the mark (a run cut off before the VALIDATE).
"""
from __future__ import annotations

import re

from psycopg import sql

from yumai_audit.checks.missing_master_rows import MissingMasterRows

from ...catalog import QualifiedName
from ...context import PENDING_USER_FK
from ...engine.steps import LockMode, Query, Step
from ...operations import Operation
from ...sqlparts import table_ref
from ..ddl import relid, short_name
from ..draft import Draft
from . import Declared, Deliberate, IndexClaim, Needs, backfill, declaring
from .foreign_key import FkSpec, add_fk

REPAIRS = (MissingMasterRows.id,)   # sessions the master lacks: registered by the backfill and the catch-ups

LINT = (
    Deliberate(("prefer-bigint-over-int",), Operation.CREATE_MASTER,
               re.compile(r"^CREATE TABLE .*\buser_id int\b", re.S),
               "user_id takes the users table's key type (int), so its foreign key matches"),
)


def user_fk_name(d: Draft) -> str:
    """The name PostgreSQL gives the REFERENCES of CREATE TABLE (`<table>_user_id_fkey`, when it fits)."""
    return f"{d.master.name}_user_id_fkey"


def user_fk_later(d: Draft) -> bool:
    """The master's user_id FK is added after the backfill (`user_fk_steps`): the master is created by this
    plan with --master-user-delete set-null and the FK's name fits as PostgreSQL would spell it, or it
    carries the mark of a run that did so and was cut off before the VALIDATE."""
    if d.ctx.users is None:
        return False
    if d.ctx.master is not None:
        return d.ctx.master_user_fk_pending and "user_id" in d.ctx.master.columns
    return d.options.master_user_delete == "set-null" and len(user_fk_name(d).encode()) <= 63


def user_id_typname(d: Draft) -> str:
    """The master's user_id type: the existing column's, else what `create_master` gives it."""
    if d.ctx.master is not None and "user_id" in d.ctx.master.columns:
        return d.ctx.master.columns["user_id"].typname
    users_key = d.ctx.users.columns.get(d.ctx.config.users_key) if d.ctx.users is not None else None
    return "int8" if users_key is not None and users_key.typname == "int8" else "int4"


def merge_writes_users_unchecked(d: Draft) -> bool:
    """The backfill's merge may write each session's user as the source names it, without a probe of users:
    the master's user_id FK comes after it (`user_fk_later`, whose validation step sets NULL every user that
    does not exist: the probe's end state), and every value of the source's user type fits user_id (a bigint
    user that no user has would fail an int user_id instead of becoming NULL)."""
    src = d.ctx.source
    if not user_fk_later(d) or src is None or src.user is None:
        return False
    return src.user.typname in ("int2", "int4") or src.user.typname == user_id_typname(d)


def create_master(d: Draft, after: str) -> Step:
    cfg = d.ctx.config
    src = d.ctx.source
    created = src.table.columns.get(cfg.created_at_column) if src is not None else None
    ts = sql.SQL(created.type if created is not None and created.typname in ("timestamptz", "timestamp")
                 else "timestamptz")
    user_ref: sql.Composable = sql.SQL("")
    tables: tuple[str, ...] = ()
    later = user_fk_later(d)
    if d.ctx.users is not None and not later:
        # ON DELETE SET NULL (default): the application's deletes of users keep working after the cutover
        on_delete = " ON DELETE SET NULL" if d.options.master_user_delete == "set-null" else ""
        user_ref = sql.SQL(" REFERENCES {} ({})" + on_delete).format(
            table_ref(d.ctx.users.name), sql.Identifier(cfg.users_key))
        tables = (str(d.ctx.users.name),)
    # the key type; a uuid key gets its default (an integer key's values come from the application)
    key = sql.SQL("uuid PRIMARY KEY DEFAULT gen_random_uuid()" if d.ctx.key_type.is_uuid
                  else f"{d.ctx.key_type.name} PRIMARY KEY")
    # user_id as the users' key: bigint for a bigint key, else yumai's int
    user_type = sql.SQL("bigint" if user_id_typname(d) == "int8" else "int")

    def table(reference: sql.Composable) -> sql.Composed:
        return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({} {key}, "
                       "user_id {ut}{}, session_start {ts} DEFAULT CURRENT_TIMESTAMP, session_end {ts}, "
                       "is_active boolean DEFAULT true)").format(
            table_ref(d.master), sql.Identifier(d.key), reference, ts=ts, key=key, ut=user_type)

    statements: tuple[Query, ...] = (table(user_ref),)
    claims: tuple[IndexClaim, ...] = ()
    if d.ctx.users is not None:
        # the new table's user_id FK gets its index at once (the table is empty: no cost); its name must be free
        # (the preflight): IF NOT EXISTS would skip it silently where an old master's index, renamed with its
        # table, holds it, and each delete of a user would then read the master whole
        idx = short_name(d.master.name, "user_id", suffix="idx")
        statements += (sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (user_id)").format(
            sql.Identifier(idx), table_ref(d.master)),)
        if d.ctx.master is None:
            claims = (IndexClaim(d.master.schema, idx, d.master.name, "user_id"),)
    what = ""
    if later:
        statements += (sql.SQL("COMMENT ON TABLE {} IS {}").format(table_ref(d.master), sql.Literal(PENDING_USER_FK)),)
        what = ", its user_id foreign key after the backfill (meanwhile its comment says so)"
    if src is not None and src.key_checkable:
        # the backfill's bookkeeping with it: its walks' guards can then tell "begun" without reading rows
        statements += backfill.tables(backfill.candidate(d))
        what += f", and the backfill's {backfill.PROGRESS} and {backfill.STAGING}"
    return Declared(id="master", operation=Operation.CREATE_MASTER,
                    description=f"Create {d.master} (the guide's schema) if it does not exist{what}",
                    statements=statements, lock=LockMode.SHARE_ROW_EXCLUSIVE if tables else LockMode.NONE,
                    tables=tables, depends_on=(after,),
                    guard=sql.SQL("SELECT {} IS NOT NULL").format(relid(d.master)), changes=(str(d.master),),
                    target=str(d.master), repairs=REPAIRS,
                    # a subscriber gets the table and its key (the replica identity), not the publisher's FK
                    replica_ddl=(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(d.master.schema)),
                                 table(sql.SQL(""))), needs=Needs(claims=claims))


def user_fk_spec(d: Draft) -> FkSpec:
    assert d.ctx.users is not None
    return FkSpec(("user_id",), d.ctx.users.name, (d.ctx.config.users_key,),
                  on_delete="n" if d.options.master_user_delete == "set-null" else "a")


def user_fk_steps(d: Draft, after: list[str]) -> list[Step]:
    """The master's user_id FK after the backfill (`user_fk_later`): added NOT VALID, then the rows naming a
    user that does not exist set NULL, the FK validated and the mark dropped, in one transaction."""
    assert d.ctx.users is not None
    m, users, name, spec = str(d.master), d.ctx.users.name, user_fk_name(d), user_fk_spec(d)
    uk = sql.Identifier(d.ctx.config.users_key)
    # REFERENCES on users checked by the preflight, before the first change (not after the backfill)
    add = declaring(add_fk(f"user-fk-add:{m}", d.master, spec, name, after, target=m), Needs(referenced=(users,)))
    validate = Step(
        id=f"user-fk-validate:{m}", operation=Operation.FK_VALIDATE,
        description=f"Set NULL the user_id of {m}'s rows naming a user not in {users} (deleted before the foreign "
        f"key existed: what its ON DELETE would have done), then VALIDATE CONSTRAINT {name} (reads every row; writers "
        "keep going) and drop the comment that marked the key pending, in one transaction",
        statements=(sql.SQL("UPDATE {m} t SET user_id = NULL WHERE t.user_id IS NOT NULL AND NOT EXISTS "
                            "(SELECT 1 FROM {users} u WHERE u.{uk} = t.user_id)").format(
                        m=table_ref(d.master), users=table_ref(users), uk=uk),
                    sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(table_ref(d.master), sql.Identifier(name)),
                    sql.SQL("COMMENT ON TABLE {} IS NULL").format(table_ref(d.master))),
        lock=LockMode.SHARE_UPDATE_EXCLUSIVE, tables=(m,), depends_on=(add.id,),
        guard=spec.exists(d.master, validated=True), changes=(m,), target=m, column="user_id")
    return [add, validate]


def user_fk_problem(d: Draft) -> sql.Composed:
    """verify's row when the master's user_id FK planned by `user_fk_steps` is not there, validated."""
    assert d.ctx.users is not None
    return sql.SQL("SELECT {} WHERE NOT ({})").format(
        sql.Literal(f"{d.master}.user_id has no validated foreign key to {d.ctx.users.name}"),
        user_fk_spec(d).exists(d.master, validated=True))


def user_delete_note(d: Draft, users: QualifiedName) -> str:
    """What deleting a user does once the new master's user_id references `users`."""
    return (f"{d.master}.user_id will reference {users}: deleting a user "
            + ("sets the master's user_id of that user's sessions NULL and keeps every row (--master-user-delete "
               "set-null)" if d.options.master_user_delete == "set-null" else
               "who has sessions fails from then on (--master-user-delete no-action, the guide's schema): the "
               "application's deletes of users must go first")
            + ".")


# the server must have gen_random_uuid() for a uuid master's default (core since 13)
GEN_RANDOM_UUID = sql.SQL(
    "SELECT 'PostgreSQL ' || current_setting('server_version') || ' has no gen_random_uuid() "
    "(core since 13; on 12 install pgcrypto)' WHERE to_regprocedure('gen_random_uuid()') IS NULL")


def refusals(d: Draft) -> list[sql.Composed]:
    """The master cannot be created: no CREATE in its schema (when it does not exist yet), or its name is held
    by a relation that is not a table (a view, a sequence, a foreign table...): CREATE TABLE IF NOT EXISTS
    would skip it silently, and the steps after it fail on it midway."""
    return [sql.SQL("SELECT format('cannot create %s: no privilege to create in schema %s', {}, {}) "
                    "WHERE {} IS NULL AND NOT has_schema_privilege({}, 'CREATE')").format(
        sql.Literal(str(d.master)), sql.Literal(d.master.schema), relid(d.master), sql.Literal(d.master.schema)),
        sql.SQL("SELECT format('%s is a %s, not a table, and the migration creates its master %s there: rename it, "
                "or name another master with --master, then run again', {m}, CASE c.relkind WHEN 'v' THEN 'view' "
                "WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence' WHEN 'f' THEN 'foreign table' "
                "WHEN 'c' THEN 'composite type' WHEN 'i' THEN 'index' WHEN 'I' THEN 'partitioned index' "
                "ELSE 'relation' END, {m}) FROM pg_class c WHERE c.oid = {} AND c.relkind NOT IN ('r', 'p')").format(
            relid(d.master), m=sql.Literal(str(d.master)))]

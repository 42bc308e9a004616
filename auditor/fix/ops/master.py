"""Operation: the session master table, created when it does not exist (the guide's schema).

CREATE TABLE IF NOT EXISTS with the key of the key type (a uuid key with its default), user_id
referencing the users table (its index at once: the table is empty), and the backfill's bookkeeping
tables (its walks' guards can then tell "begun" without reading rows). Guard: the table exists. The
plan needs CREATE in the master's schema and, on 12, gen_random_uuid() (`refusals`).
"""
from __future__ import annotations

import re

from psycopg import sql

from yumai_audit.checks.missing_master_rows import MissingMasterRows

from ...catalog import QualifiedName
from ...engine.steps import LockMode, Query, Step
from ...operations import Operation
from ...sqlparts import table_ref
from ..ddl import relid, short_name
from ..draft import Draft
from . import Deliberate, backfill

REPAIRS = (MissingMasterRows.id,)   # sessions the master lacks: registered by the backfill and the catch-ups

LINT = (
    Deliberate(("prefer-bigint-over-int",), Operation.CREATE_MASTER,
               re.compile(r"^CREATE TABLE .*\buser_id int\b", re.S),
               "user_id takes the users table's key type (int), so its foreign key matches"),
)


def create_master(d: Draft, after: str) -> Step:
    cfg = d.ctx.config
    src = d.ctx.source
    created = src.table.columns.get(cfg.created_at_column) if src is not None else None
    ts = sql.SQL(created.type if created is not None and created.typname in ("timestamptz", "timestamp")
                 else "timestamptz")
    user_ref: sql.Composable = sql.SQL("")
    tables: tuple[str, ...] = ()
    if d.ctx.users is not None:
        # ON DELETE SET NULL (default): the application's deletes of users keep working after the cutover
        on_delete = " ON DELETE SET NULL" if d.options.master_user_delete == "set-null" else ""
        user_ref = sql.SQL(" REFERENCES {} ({})" + on_delete).format(
            table_ref(d.ctx.users.name), sql.Identifier(cfg.users_key))
        tables = (str(d.ctx.users.name),)
    # the key type; a uuid key gets its default (an integer key's values come from the application)
    key = sql.SQL("uuid PRIMARY KEY DEFAULT gen_random_uuid()" if d.ctx.key_type.is_uuid
                  else f"{d.ctx.key_type.name} PRIMARY KEY")
    users_key = d.ctx.users.columns.get(cfg.users_key) if d.ctx.users is not None else None
    # user_id as the users' key: bigint for a bigint key, else yumai's int
    user_type = sql.SQL("bigint" if users_key is not None and users_key.typname == "int8" else "int")

    def table(reference: sql.Composable) -> sql.Composed:
        return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({} {key}, "
                       "user_id {ut}{}, session_start {ts} DEFAULT CURRENT_TIMESTAMP, session_end {ts}, "
                       "is_active boolean DEFAULT true)").format(
            table_ref(d.master), sql.Identifier(d.key), reference, ts=ts, key=key, ut=user_type)

    statements: tuple[Query, ...] = (table(user_ref),)
    if d.ctx.users is not None:
        # the new table's user_id FK gets its index at once (the table is empty: no cost)
        statements += (sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (user_id)").format(
            sql.Identifier(short_name(d.master.name, "user_id", suffix="idx")), table_ref(d.master)),)
    what = ""
    if src is not None and src.key_checkable:
        # the backfill's bookkeeping with it: its walks' guards can then tell "begun" without reading rows
        statements += backfill.tables(backfill.candidate(d))
        what = f", and the backfill's {backfill.PROGRESS} and {backfill.STAGING}"
    return Step(id="master", operation=Operation.CREATE_MASTER,
                description=f"Create {d.master} (the guide's schema) if it does not exist{what}",
                statements=statements, lock=LockMode.SHARE_ROW_EXCLUSIVE if tables else LockMode.NONE,
                tables=tables, depends_on=(after,),
                guard=sql.SQL("SELECT {} IS NOT NULL").format(relid(d.master)), changes=(str(d.master),),
                target=str(d.master), repairs=REPAIRS,
                # a subscriber gets the table and its key (the replica identity), not the publisher's FK
                replica_ddl=(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(d.master.schema)),
                             table(sql.SQL(""))))


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
    """The master cannot be created: no CREATE in its schema (when it does not exist yet)."""
    return [sql.SQL("SELECT format('cannot create %s: no privilege to create in schema %s', {}, {}) "
                    "WHERE {} IS NULL AND NOT has_schema_privilege({}, 'CREATE')").format(
        sql.Literal(str(d.master)), sql.Literal(d.master.schema), relid(d.master), sql.Literal(d.master.schema))]

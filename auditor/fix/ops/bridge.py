"""The cutover bridge: a row trigger that registers a row's session in the master when it is missing.

The application in production may still start sessions the old way (a fresh uuid, the first message,
no master row). Once the source table's foreign key exists such a write would fail. Before the first
FK, `fix --apply` installs a BEFORE INSERT OR UPDATE OF <key> row trigger (by default, `--bridge auto`,
on the source table and on every key table whose data shows the application writing it before a
session's first message: `probes`, `early_writes`; `--bridge source`: the source table only; `--bridge
all`: every key table) whose function inserts the missing session into the master (`ON CONFLICT DO
NOTHING`; user id and start taken from the row, as the backfill does; a user missing from the users
table gives user id NULL) and logs each session it actually inserted into `yumai_audit.bridge_log`, so
`bridge status` counts the bridge's registrations and not the application's own.

The function pins `search_path`, runs as its owner (SECURITY DEFINER), and is owned by the table's
owner. PostgreSQL 13 and later take the trigger on a partitioned parent (partitions created later
inherit it); on 12 it goes on each partition.

With `--bridge none`, a gate stands right before each FK instead (fix/ops/gate.py).

Guard: the trigger exists. It repairs no finding (`REPAIRS`): it keeps the application's writes working
once the foreign keys exist. The planner adds `bridges` before the first FK; the bridge's state
(status, log, removal, the report's line) is auditor/bridge_state.py, which the scan and the report read
without importing fix/.
"""
from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from yumai_audit.checks.base import Probe
from yumai_audit.checks.predicates import key_valid, valid_key_uuid

from ...bridge_state import LOG, SCHEMA, TRIGGER
from ...catalog import QualifiedName
from ...context import AuditContext, KeyTable
from ...engine.steps import LockMode, Query, Step
from ...operations import Operation
from ...pgversion import BEFORE_ROW_TRIGGERS_ON_PARTITIONED
from ...sqlparts import table_ref
from ..ddl import relid, short_name
from ..draft import Draft
from ..registration import existing_fk, master_columns

REPAIRS: tuple[str, ...] = ()   # it keeps writes working through the cutover; no finding is repaired

# BEFORE ... FOR EACH ROW triggers on a partitioned table: PostgreSQL 13 and later
PG_ROW_TRIGGER_ON_PARTITIONED = BEFORE_ROW_TRIGGERS_ON_PARTITIONED


def function_name(table: QualifiedName) -> QualifiedName:
    return QualifiedName(SCHEMA, short_name("bridge", table.schema, table.name, suffix="fn"))


def _fn(name: QualifiedName) -> sql.Composable:
    return sql.Identifier(name.schema, name.name)


@dataclass(frozen=True)
class Registration:
    """How the bridge describes a session from one row (the backfill's rules, for a single row)."""

    table: QualifiedName            # the key table the trigger is on (a parent when partitioned)
    key: str                        # its key column
    master: QualifiedName
    master_key: str
    master_columns: frozenset[str]
    user_column: str | None = None
    created_column: str | None = None
    users: QualifiedName | None = None
    users_key: str = "id"
    active_window_minutes: int = 30

    def insert(self) -> sql.Composed:
        """The master insert of NEW's session, logging it only when this insert made it."""
        new = lambda c: sql.SQL("NEW.{}").format(sql.Identifier(c))   # noqa: E731
        cols, values = [sql.Identifier(self.master_key)], [new(self.key)]
        if self.created_column is not None:
            for name in ("session_start", "session_end"):
                if name in self.master_columns:
                    cols.append(sql.Identifier(name))
                    values.append(new(self.created_column))
            if "is_active" in self.master_columns:
                cols.append(sql.Identifier("is_active"))
                values.append(sql.SQL("coalesce({} >= now() - {} * interval '1 minute', false)").format(
                    new(self.created_column), sql.Literal(self.active_window_minutes)))
        if self.user_column is not None and "user_id" in self.master_columns:
            cols.append(sql.Identifier("user_id"))
            if self.users is not None:
                values.append(sql.SQL("(SELECT u.{uk} FROM {users} u WHERE u.{uk} = {v} LIMIT 1)").format(
                    uk=sql.Identifier(self.users_key), users=table_ref(self.users), v=new(self.user_column)))
            else:
                values.append(new(self.user_column))
        return sql.SQL(
            "WITH registered AS (INSERT INTO {master} ({cols}) VALUES ({values}) ON CONFLICT DO NOTHING "
            "RETURNING {mk}) INSERT INTO {log} (session_id, table_name) SELECT r.{mk}, {table} FROM registered r"
        ).format(master=table_ref(self.master), cols=sql.SQL(", ").join(cols), values=sql.SQL(", ").join(values),
                 mk=sql.Identifier(self.master_key), log=table_ref(LOG), table=sql.Literal(str(self.table)))

    def body(self) -> str:
        """The plpgsql body (identifiers quoted by psycopg.sql; rendered, then passed as one literal)."""
        return sql.SQL(
            "BEGIN\n"
            "  IF NEW.{k} IS NULL OR EXISTS (SELECT 1 FROM {master} m WHERE m.{mk} = NEW.{k}) THEN\n"
            "    RETURN NEW;\n"
            "  END IF;\n"
            "  {insert};\n"
            "  RETURN NEW;\n"
            "END").format(k=sql.Identifier(self.key), master=table_ref(self.master),
                          mk=sql.Identifier(self.master_key), insert=self.insert()).as_string(None)


def log_statements(key_type: str = "uuid") -> tuple[Query, ...]:
    """The log's schema, table and index; its session_id has the key type (as SQL names it)."""
    return (
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)),
        sql.SQL("CREATE TABLE IF NOT EXISTS {} (session_id {} NOT NULL, table_name text NOT NULL, "
                "registered_at timestamptz NOT NULL DEFAULT now())").format(table_ref(LOG), sql.SQL(key_type)),
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (registered_at)").format(
            sql.Identifier("bridge_log_registered_at_idx"), table_ref(LOG)),
    )


def function_statements(reg: Registration, owner: str, current_user: str) -> tuple[Query, ...]:
    fn = function_name(reg.table)
    out = [sql.SQL("CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
                   "SET search_path = pg_catalog, pg_temp AS {}").format(_fn(fn), sql.Literal(reg.body()))]
    if owner and owner != current_user:
        # the function runs as the table's owner: it must be able to own it and to do the insert
        who = sql.Identifier(owner)
        out += [sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(sql.Identifier(SCHEMA), who),
                sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(table_ref(LOG), who),
                sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(table_ref(reg.master), who)]
        if reg.users is not None and reg.user_column is not None:
            out.append(sql.SQL("GRANT SELECT ON {} TO {}").format(table_ref(reg.users), who))
    if owner:
        out.append(sql.SQL("ALTER FUNCTION {}() OWNER TO {}").format(_fn(fn), sql.Identifier(owner)))
    return tuple(out)


def trigger_exists(table: QualifiedName) -> sql.Composed:
    return sql.SQL("SELECT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = {} AND t.tgname = {})").format(
        relid(table), sql.Literal(TRIGGER))


def create_trigger(on: QualifiedName, key: str, fn: QualifiedName) -> sql.Composed:
    return sql.SQL("CREATE TRIGGER {} BEFORE INSERT OR UPDATE OF {} ON {} FOR EACH ROW EXECUTE FUNCTION {}()").format(
        sql.Identifier(TRIGGER), sql.Identifier(key), table_ref(on), _fn(fn))


def registration(ctx: AuditContext, k: KeyTable, master_columns: set[str], active_window_minutes: int) -> Registration:
    cfg = ctx.config
    created = cfg.created_at_column if ctx.created_at(k.table) is not None else None
    return Registration(
        table=k.name, key=k.key.name, master=cfg.master, master_key=cfg.key_column,
        master_columns=frozenset(master_columns), user_column=k.user.name if k.user is not None else None,
        created_column=created, users=ctx.users.name if ctx.users is not None else None, users_key=cfg.users_key,
        active_window_minutes=active_window_minutes)


def bridge_steps(ctx: AuditContext, k: KeyTable, *, version: int, master_columns: set[str],
                 active_window_minutes: int, depends_on: list[str]) -> list[Step]:
    """The step(s) that install the bridge on key table `k`: one on the table (a partitioned parent on
    PostgreSQL 13+, its partitions get clones), one per leaf partition on PostgreSQL 12."""
    reg = registration(ctx, k, master_columns, active_window_minutes)
    fn = function_name(k.name)
    setup = log_statements(ctx.key_type.stored) + function_statements(reg, k.table.owner, ctx.catalog.current_user)
    what = (f"registers the session of each new row of {k.name} (and each update of {k.key.name}) in "
            f"{reg.master} when it is missing; logs its registrations in {LOG}")
    if not k.table.is_partitioned or version >= PG_ROW_TRIGGER_ON_PARTITIONED:
        leaves = [str(p.name) for p in k.table.leaf_partitions] if k.table.is_partitioned else []
        return [Step(
            id=f"bridge:{k.name}",
            description=f"Bridge: trigger {TRIGGER} on {k.name} " + (
                "(the parent: every partition, also those created later) " if leaves else "") + what,
            statements=setup + (create_trigger(k.name, k.key.name, fn),), lock=LockMode.SHARE_ROW_EXCLUSIVE,
            tables=(str(k.name), *leaves), depends_on=tuple(depends_on), guard=trigger_exists(k.name),
            changes=(str(k.name),), operation=Operation.BRIDGE, target=str(k.name), column=k.key.name)]
    return [Step(
        id=f"bridge:{p.name}",
        description=f"Bridge: trigger {TRIGGER} on partition {p.name} (PostgreSQL 12 has no row trigger on a "
        f"partitioned table; a partition created later needs its own) " + what,
        statements=setup + (create_trigger(p.name, k.key.name, fn),), lock=LockMode.SHARE_ROW_EXCLUSIVE,
        tables=(str(p.name),), depends_on=tuple(depends_on), guard=trigger_exists(p.name),
        changes=(str(k.name),), operation=Operation.BRIDGE, target=str(k.name), column=k.key.name)
        for p in k.table.leaf_partitions]


# --- --bridge auto: which tables the application writes before a session's first message ---------------

EARLY_PROBE = "bridge:early-writes"


def _early_candidates(ctx: AuditContext) -> list[KeyTable]:
    """Key tables other than the source with a comparable key, a time column and no validated FK to the master
    yet (a table whose FK is in place needs no decision), when the source has a comparable key and a time column."""
    src = ctx.source
    if src is None or not src.key_checkable or ctx.created_at(src.table) is None:
        return []
    return [k for k in ctx.key_tables if not k.is_source and k.key_checkable and ctx.created_at(k.table) is not None
            and not any(fk.validated and fk.columns == (k.key.name,) and ctx.is_master_fk(fk)
                        for fk in k.table.foreign_keys)]


def probes(ctx: AuditContext) -> list[Probe]:
    """One probe, one row: per candidate table, the sessions whose first row there is earlier than their first
    row in the source table (the application wrote that table before the session's first message: with the
    bridge on the source table only, such a write fails once the table's FK exists). The source's first rows
    are grouped once (a MATERIALIZED CTE) for all the tables."""
    tables = _early_candidates(ctx)
    src = ctx.source
    if not tables or src is None:     # candidates need the source (_early_candidates)
        return []
    created = sql.Identifier(ctx.config.created_at_column)
    firsts = sql.SQL("SELECT {k} AS sid, min(s.{c}) AS first_at FROM {t} s WHERE {valid} GROUP BY 1").format(
        k=valid_key_uuid(src.key, "s"), c=created, t=table_ref(src.name), valid=key_valid(src.key, "s"))
    counts = [sql.SQL("(SELECT count(*) FROM (SELECT {k} AS sid, min(t.{c}) AS first_at FROM {t} t WHERE {valid} "
                      "GROUP BY 1) e JOIN first_rows f ON f.sid = e.sid WHERE e.first_at < f.first_at)").format(
        k=valid_key_uuid(k.key), c=created, t=table_ref(k.name), valid=key_valid(k.key)) for k in tables]
    return [Probe(EARLY_PROBE, "tables written before a session's first message (--bridge auto)",
                  sql.SQL("WITH first_rows AS MATERIALIZED ({}) SELECT {}").format(firsts, sql.SQL(", ").join(counts)))]


def early_writes(ctx: AuditContext, evidence: dict) -> dict[str, int]:
    """{table: sessions written there before their first message} from the probe's row (only tables with some)."""
    rows = evidence.get(EARLY_PROBE)
    if not rows:
        return {}
    return {str(k.name): n for k, n in zip(_early_candidates(ctx), rows[0]) if n}


def bridged_tables(ctx: AuditContext, tables: list[KeyTable], mode: str, early: dict[str, int] | None = None
                   ) -> list[KeyTable]:
    if mode == "none":
        return []
    if mode == "source":
        return [k for k in tables if k.is_source]
    if mode == "auto":
        return [k for k in tables if k.is_source or str(k.name) in (early or {})]
    return list(tables)


def plan_notes(ctx: AuditContext, tables: list[KeyTable], mode: str, version: int,
               early: dict[str, int] | None = None) -> list[str]:
    notes = []
    bridged = bridged_tables(ctx, tables, mode, early)
    if version < PG_ROW_TRIGGER_ON_PARTITIONED:
        for k in bridged:
            if k.table.is_partitioned:
                notes.append(f"bridge on {k.name}: PostgreSQL {version // 10000} puts it on each partition; "
                             "a partition created later has none until you create the trigger on it too")
    if mode == "all":
        others = [str(k.name) for k in bridged if not k.is_source]
        if others:
            notes.append("--bridge all: a new row of " + ", ".join(others) + " naming a session the master "
                         "lacks registers it: made-up session ids are then registered rather than refused")
    if mode == "auto":
        for k in bridged:
            if not k.is_source:
                notes.append(
                    f"--bridge auto: {(early or {})[str(k.name)]} session(s) have a row in {k.name} earlier than their "
                    f"first message in {ctx.config.source}: the application writes {k.name} before a session's "
                    "first message, "
                    f"and such a write would fail once its foreign key exists. {k.name} gets the bridge too: a new "
                    f"row naming a session the master lacks registers it (made-up session ids are then registered "
                    f"rather than refused; --bridge source refuses them, and those writes)")
    if mode == "source":
        for name, n in (early or {}).items():
            notes.append(f"--bridge source: {n} session(s) have a row in {name} earlier than their first message: "
                         f"such writes of the application fail once {name}'s foreign key exists")
    if mode == "none":
        notes.append("--bridge none: before the foreign keys a gate checks that the application registers "
                     "its new sessions, and stops the apply (exit code 1) if it does not")
    return notes


def bridges(d: Draft, tables: list[KeyTable], create: str, ready: dict[str, list[str]],
            backfills: list[str]) -> tuple[list[str], list[Step]]:
    """The bridge before the first FK, while any key table's FK is still to be made: its plan notes and steps."""
    if all((fk := existing_fk(d, k.table.foreign_keys, k.name)) is not None and fk.validated for k in tables):
        return [], []
    early = early_writes(d.ctx, d.evidence)
    notes = plan_notes(d.ctx, tables, d.options.bridge, d.version, early)
    return notes, [step for k in bridged_tables(d.ctx, tables, d.options.bridge, early)
                   for step in bridge_steps(d.ctx, k, version=d.version, master_columns=master_columns(d),
                                            active_window_minutes=d.options.active_window_minutes,
                                            depends_on=[create, *ready[str(k.name)],
                                                        *(backfills if k.is_source else [])])]

"""Session maintenance after cutover: close idle sessions, prune old ones (the guide's operating rules).

- `close_idle`: master rows still active whose last activity (the latest `created_at` over every key
  table, or `session_start`) is older than the idle limit get `is_active = false` and `session_end` =
  that last activity.
- `prune`: inactive sessions that ended before a cutoff are deleted; `ON DELETE CASCADE` takes their
  rows in every key table with them, and whatever the foreign keys of other tables do in turn
  (auditor/fk_reach.py: cascades at any depth, SET NULL / SET DEFAULT, RESTRICT / NO ACTION). The dry
  run counts exactly those rows, table by table; the apply deletes in batches of at most `batch_size`
  sessions, one short transaction each, with a `lock_timeout`, and counts the same way per batch. Rows
  of a RESTRICT / NO ACTION key that a delete would meet make the apply refuse before any change.

Both are dry runs unless `apply=True`. Each is a plan of one batched step (`Operation.CLOSE_IDLE`,
`Operation.PRUNE`) that `executor.Executor` runs as it runs `fix`: lock waits retried with backoff,
the journal (`yumai_audit.journal`), one apply at a time per database (its advisory lock), and the
same statements `render_script` writes for `--sql`. Each batch either commits whole or not at all;
running again resumes where an interrupted run stopped.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg
from psycopg import sql

from yumai_audit.checks.predicates import key_uuid

from ..catalog import Table
from ..config import Config
from ..connection import Target, connect, resolve_target
from ..context import AuditContext, KeyTable, audit_context
from ..engine.executor import Executor, LockBusy
from ..engine.guards import no_rows
from ..engine.lag import DEFAULT_MAX_REPLICA_LAG
from ..engine.plan import Plan
from ..engine.steps import Kind, LockMode, Step
from ..errors import AuditError
from ..fk_reach import count_query, of_table
from ..operations import Operation
from ..rows import one_row
from ..sqlparts import col, table_ref

Progress = Callable[[str], None]
DEFAULT_BATCH = 500
DEFAULT_LOCK_TIMEOUT = 5.0


class MaintenanceError(AuditError):
    """The master or the key tables are not in the shape the maintenance commands need."""


@dataclass
class CloseIdleResult:
    cutoff: datetime
    active: int                 # active sessions before the run
    idle: int                   # of which idle (what the run closes)
    applied: bool
    closed: int = 0
    batches: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plan: Plan | None = None    # what --apply runs (and --sql writes)


@dataclass
class PruneResult:
    cutoff: datetime
    sessions: int                           # inactive sessions that ended before the cutoff
    cascade: dict[str, int]                 # rows each table loses with them (ON DELETE CASCADE, at any depth)
    applied: bool
    deleted_sessions: int = 0
    deleted_rows: dict[str, int] = field(default_factory=dict)
    batches: list[int] = field(default_factory=list)   # sessions deleted per transaction
    notes: list[str] = field(default_factory=list)
    changed: dict[str, int] = field(default_factory=dict)    # rows ON DELETE SET NULL / SET DEFAULT changes
    blocked: dict[str, int] = field(default_factory=dict)    # rows of RESTRICT / NO ACTION keys: the delete fails
    changed_rows: dict[str, int] = field(default_factory=dict)
    plan: Plan | None = None    # what --apply runs (and --sql writes)


def _target(target: Target | str | None) -> Target:
    return target if isinstance(target, Target) else resolve_target(target)


def _check_master(ctx: AuditContext, *columns: str) -> None:
    master = ctx.config.master
    needed = (ctx.key, *columns)
    missing = [c for c in needed if c not in _master(ctx).columns]
    if missing:
        raise MaintenanceError(f"the session master {master} has no column {missing[0]!r}")


def _master(ctx: AuditContext) -> Table:
    """The session master table (MaintenanceError when it does not exist)."""
    if ctx.master is None:
        raise MaintenanceError(f"the session master {ctx.config.master} does not exist (run the migration first)")
    return ctx.master


def _matches(kt: KeyTable, ctx: AuditContext) -> sql.Composed:
    """`t` (a key table row) belongs to `m` (a master row); a plain equality where both keys have the key type."""
    return sql.SQL("{} = {}").format(key_uuid(kt.key, "t"), key_uuid(ctx.master_key, "m"))


def _activity_tables(ctx: AuditContext) -> tuple[list[KeyTable], list[str]]:
    created = ctx.config.created_at_column
    tables, notes = [], []
    for kt in ctx.key_tables:
        if not kt.key_checkable:
            notes.append(f"{kt.name}: key column {kt.key.name} is {kt.key.type}, not {ctx.key_type.name} or text: "
                         "ignored")
        elif created not in kt.table.columns:
            notes.append(f"{kt.name} has no column {created}: its rows do not count as activity")
        else:
            tables.append(kt)
    return tables, notes


def _cutoff(conn: psycopg.Connection, age: timedelta) -> datetime:
    row = conn.execute("SELECT now() - %s", (age,)).fetchone()
    assert row is not None      # a SELECT without FROM returns its row
    return row[0]


def _lock_timeout(conn: psycopg.Connection, seconds: float, local: bool = True) -> None:
    conn.execute(sql.SQL("SET {} lock_timeout = {}").format(
        sql.SQL("LOCAL") if local else sql.SQL("SESSION"), sql.Literal(f"{max(1, int(seconds * 1000))}ms")))


def _open(target: Target | str | None, lock_timeout: float, command: str) -> psycopg.Connection:
    """An autocommit connection whose every statement (catalog reads and counts too) waits at most lock_timeout
    (a session setting: refused through a transaction pooler, reset before the connection is closed)."""
    conn = connect(_target(target), autocommit=True, session=f"sessions {command}")
    _lock_timeout(conn, lock_timeout, local=False)
    return conn


SCRIPT_OPTIONS = ("batch_size", "lock_timeout")   # the plan options a maintenance script lists


def script_title(command: str) -> str:
    """The head line of a maintenance command's `--sql` script."""
    return f"-- yumai-audit sessions {command}: batches, each its own transaction (the plan --apply runs)"


@dataclass(frozen=True)
class BatchOptions:
    """A maintenance plan's options: the engine's `RunOptions` (what the executor and `render_script`
    read of `Plan.options`). These commands keep their own ranges (the CLI's), e.g. a lock_timeout
    beyond fix's hour."""
    batch_size: int
    lock_timeout: float
    wait_timeout: float = 300.0     # no CONCURRENTLY step here: never waited on
    gate_window: float = 0.0                        # no gate here
    max_replica_lag: float = DEFAULT_MAX_REPLICA_LAG   # between batches: standbys and logical slots

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _plan(conn: psycopg.Connection, step: Step, batch_size: int, lock_timeout: float,
          max_replica_lag: float = DEFAULT_MAX_REPLICA_LAG) -> Plan:
    """A plan of the one batched step, with the options the executor reads (batch size, lock_timeout)."""
    return Plan([step], conn.info.server_version,
                BatchOptions(batch_size, lock_timeout, max_replica_lag=max_replica_lag))


def _execute(target: Target | str | None, plan: Plan, command: str, what: str, say: Progress,
             batch: Callable[[psycopg.Cursor], int]) -> list[int]:
    """Run the plan with the executor; `batch` reads a batch's last statement (in its transaction) and
    returns how many `what` it did. Returns the per-batch counts."""
    done: list[int] = []

    def results(step: Step, cur: psycopg.Cursor) -> None:
        n = batch(cur)
        if n:
            done.append(n)
            say(f"batch {len(done)}: {n} {what} (total {sum(done)})")

    try:
        Executor(_target(target), plan, progress=say, results=results, command=f"sessions {command} --apply").run()
    except LockBusy as exc:
        raise AuditError(
            f"batch {len(done) + 1} waited more than {plan.options.lock_timeout:g}s for a lock and was rolled back "
            f"({exc}); {sum(done)} {what} in {len(done)} earlier batch(es) are committed; run again to resume"
        ) from None
    return done


# --- close idle sessions -------------------------------------------------------------------------

def _idle_predicate(ctx: AuditContext, tables: list[KeyTable], cutoff: datetime) -> sql.Composed:
    created = ctx.config.created_at_column
    parts: list[sql.Composable] = [sql.SQL("m.is_active IS NOT FALSE")]
    if "session_start" in _master(ctx).columns:
        parts.append(sql.SQL("coalesce(m.session_start < {c}, true)").format(c=sql.Literal(cutoff)))
    for kt in tables:
        parts.append(sql.SQL("NOT EXISTS (SELECT 1 FROM {t} t WHERE {match} AND {created} >= {c})").format(
            t=table_ref(kt.name), match=_matches(kt, ctx), created=col(created), c=sql.Literal(cutoff)))
    return sql.SQL(" AND ").join(parts)


def _last_activity(ctx: AuditContext, tables: list[KeyTable]) -> sql.Composed:
    created = ctx.config.created_at_column
    parts: list[sql.Composable] = [sql.SQL("(SELECT max({created}) FROM {t} t WHERE {match})").format(
        created=col(created), t=table_ref(kt.name), match=_matches(kt, ctx)) for kt in tables]
    if "session_start" in _master(ctx).columns:
        parts.append(sql.SQL("m.session_start"))
    return sql.SQL("greatest({})").format(sql.SQL(", ").join(parts))


def close_idle(target: Target | str | None, config: Config | None, idle: timedelta, *, apply: bool = False,
               batch_size: int = DEFAULT_BATCH, lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
               progress: Progress | None = None,
               max_replica_lag: float = DEFAULT_MAX_REPLICA_LAG) -> CloseIdleResult:
    """Count (and with apply=True close) active sessions with no activity for longer than `idle`."""
    say = progress or (lambda _m: None)
    config = config or Config()
    with _open(target, lock_timeout, "close-idle") as conn:
        ctx = audit_context(conn, config)
        _check_master(ctx, "is_active", "session_end")
        tables, notes = _activity_tables(ctx)
        if not tables and "session_start" not in _master(ctx).columns:
            raise MaintenanceError("no key table has a column "
                                 f"{config.created_at_column!r} and the master has no session_start: "
                                 "no way to tell when a session was last active")
        cutoff = _cutoff(conn, idle)
        master, key = table_ref(_master(ctx).name), sql.Identifier(ctx.key)
        idle_pred = _idle_predicate(ctx, tables, cutoff)
        active, n_idle = one_row(conn.execute(sql.SQL(
            "SELECT count(*) FILTER (WHERE m.is_active IS NOT FALSE), count(*) FILTER (WHERE {}) FROM {} m"
        ).format(idle_pred, master)))
        update = sql.SQL(
            "WITH batch AS (SELECT m.{key} FROM {master} m WHERE {idle} ORDER BY m.{key} LIMIT {n} "
            "FOR UPDATE SKIP LOCKED) "
            "UPDATE {master} m SET is_active = false, "
            "session_end = coalesce(m.session_end, {last}, CURRENT_TIMESTAMP) "
            "FROM batch WHERE m.{key} = batch.{key}"
        ).format(key=key, master=master, idle=idle_pred, n=sql.Literal(batch_size), last=_last_activity(ctx, tables))
        step = Step(id="close-idle", operation=Operation.CLOSE_IDLE, kind=Kind.BATCHED,
                    description=f"Close the sessions of {_master(ctx).name} idle since {cutoff.isoformat()} "
                                f"(batches of {batch_size})",
                    statements=(update,), lock=LockMode.ROW_EXCLUSIVE, tables=(str(_master(ctx).name),),
                    guard=no_rows(master, idle_pred, "m"), changes=(str(_master(ctx).name),),
                    target=str(_master(ctx).name))
        plan = _plan(conn, step, batch_size, lock_timeout, max_replica_lag)
        result = CloseIdleResult(cutoff=cutoff, active=active, idle=n_idle, applied=apply, notes=notes, plan=plan)
    if not apply or not n_idle:
        return result
    result.batches = _execute(target, plan, "close-idle", "sessions closed", say, lambda cur: max(cur.rowcount, 0))
    result.closed = sum(result.batches)
    return result


# --- prune old sessions --------------------------------------------------------------------------

def _check_cascades(ctx: AuditContext) -> None:
    """Every key table must reference the master ON DELETE CASCADE: otherwise a delete fails or orphans rows."""
    bad = []
    for kt in ctx.key_tables:
        fks = [fk for fk in kt.table.fks_on(kt.key.name) if ctx.is_master_fk(fk)]
        if not any(fk.on_delete == "c" for fk in fks):
            bad.append(f"{kt.name} ({'no foreign key' if not fks else 'foreign key without ON DELETE CASCADE'})")
    if bad:
        raise MaintenanceError(
            f"prune needs every key table to reference {ctx.config.master_reference} ON DELETE CASCADE; "
            f"not so: {', '.join(bad)}")


def prune(target: Target | str | None, config: Config | None, older_than: timedelta, *, apply: bool = False,
          batch_size: int = DEFAULT_BATCH, lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
          progress: Progress | None = None, max_replica_lag: float = DEFAULT_MAX_REPLICA_LAG) -> PruneResult:
    """Count (and with apply=True delete, in batches) inactive sessions that ended more than `older_than` ago."""
    if batch_size < 1:
        raise AuditError("batch size must be at least 1")
    say = progress or (lambda _m: None)
    config = config or Config()
    with _open(target, lock_timeout, "prune") as conn:
        ctx = audit_context(conn, config)
        _check_master(ctx, "is_active", "session_end")
        _check_cascades(ctx)
        cutoff = _cutoff(conn, older_than)
        master, key = table_ref(_master(ctx).name), sql.Identifier(ctx.key)
        candidate = sql.SQL("m.is_active IS FALSE AND m.session_end < {}").format(sql.Literal(cutoff))
        g = of_table(ctx.catalog, _master(ctx))

        def reach(predicate: sql.Composable) -> dict[str, dict[str, int]]:
            """Rows per table the delete of the master rows matching `predicate` (alias t) deletes, changes, meets."""
            out: dict[str, dict[str, int]] = {"delete": {}, "change": {}, "block": {}}
            for what, schema, table, n in conn.execute(count_query(g, predicate)).fetchall():
                name = f"{schema}.{table}"
                if (schema, table) != (_master(ctx).name.schema, _master(ctx).name.name) or what != "delete":
                    out[what][name] = out[what].get(name, 0) + n
            return out

        with conn.transaction():   # one snapshot for the preview
            sessions = one_row(conn.execute(sql.SQL("SELECT count(*) FROM {} m WHERE {}").format(master, candidate)))[0]
            preview = reach(sql.SQL("t.is_active IS FALSE AND t.session_end < {}").format(sql.Literal(cutoff)))
        # one batch, one statement: the sessions picked (locked FOR UPDATE: no new row can reference them
        # meanwhile), what deleting them reaches counted on the statement's snapshot (before the cascades,
        # which run at its end), the delete, each deleted session returning those counts
        batch = sql.SQL("SELECT m.{key} AS sid FROM {master} m WHERE {cand} ORDER BY m.{key} LIMIT {n} "
                        "FOR UPDATE SKIP LOCKED").format(key=key, master=master, cand=candidate,
                                                         n=sql.Literal(batch_size))
        delete = sql.SQL(
            "WITH batch AS MATERIALIZED ({batch}), reached (what, schema_name, table_name, n) AS ({reach}) "
            "DELETE FROM {master} d USING batch b WHERE d.{key} = b.sid "
            "RETURNING (SELECT jsonb_agg(jsonb_build_array(what, schema_name, table_name, n)) FROM reached)").format(
            batch=batch, reach=count_query(g, sql.SQL("t.{} IN (SELECT sid FROM batch)").format(key)),
            master=master, key=key)
        # a row of a table further down could start referencing a row the cascade deletes: those tables are locked
        direct = {e.child for e in g.cascades + g.changes if e.parent == g.root}
        deeper = {e.child for e in g.cascades + g.changes if e.parent != g.root}
        lock = [t for t in g.locked if t not in direct or t in deeper]
        statements = (sql.SQL("LOCK TABLE {} IN SHARE MODE").format(sql.SQL(", ").join(map(table_ref, lock))),) \
            if lock else ()
        name = str(_master(ctx).name)
        step = Step(id="prune", operation=Operation.PRUNE, kind=Kind.BATCHED,
                    description=f"Delete the inactive sessions of {name} that ended before {cutoff.isoformat()}, "
                                f"with their rows (ON DELETE CASCADE; batches of {batch_size})",
                    statements=statements + (delete,), lock=LockMode.SHARE if lock else LockMode.ROW_EXCLUSIVE,
                    tables=(name, *map(str, lock)), guard=no_rows(master, candidate, "m"),
                    changes=(name, *map(str, g.reached)), target=name)
        plan = _plan(conn, step, batch_size, lock_timeout, max_replica_lag)
    result = PruneResult(cutoff=cutoff, sessions=sessions, cascade=preview["delete"], applied=apply,
                         changed=preview["change"], blocked={t: n for t, n in preview["block"].items() if n}, plan=plan)
    if not apply or not sessions:
        return result
    if result.blocked:
        raise MaintenanceError("prune would fail, nothing was deleted: " + ", ".join(
            f"{n} row(s) of {t} reference the sessions' rows through a RESTRICT / NO ACTION foreign key"
            for t, n in result.blocked.items()))
    result.deleted_rows = {name: 0 for name in result.cascade}
    result.changed_rows = {name: 0 for name in result.changed}

    def batch_done(cur: psycopg.Cursor) -> int:
        """A batch's deleted sessions (one returned row each) and what they took with them."""
        rows = cur.fetchall()
        counted: dict[str, dict[str, int]] = {"delete": {}, "change": {}, "block": {}}
        for what, schema, table, n in (rows[0][0] or []) if rows else []:
            if (schema, table) != (_master(ctx).name.schema, _master(ctx).name.name) or what != "delete":
                counted[what][f"{schema}.{table}"] = counted[what].get(f"{schema}.{table}", 0) + n
        for table, n in counted["delete"].items():
            result.deleted_rows[table] = result.deleted_rows.get(table, 0) + n
        for table, n in counted["change"].items():
            result.changed_rows[table] = result.changed_rows.get(table, 0) + n
        return len(rows)

    result.batches = _execute(target, plan, "prune", "sessions deleted", say, batch_done)
    result.deleted_sessions = sum(result.batches)
    return result

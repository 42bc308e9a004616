"""The one function that makes the migration's plan: the API's `plan`, `repair_plan` and `apply`,
and through them the CLI's `fix`, `fix --sql` and `fix --apply`, all call `make_plan`.

It reads the catalog, measures what the planners' probes ask of the data, caps the lock waits below
the server's deadlock_timeout, builds the ordered steps (`planner.build_plan`), counts what the
plan's deletes reach (cascade.measure) and evaluates each step's guard.
"""
from __future__ import annotations

import dataclasses

import psycopg
from psycopg import errors as pgerrors

from ..config import Config
from ..connection import set_local
from ..context import audit_context
from ..engine.executor import evaluate_guards, run_check
from ..engine.waits import bounds
from ..errors import first_line
from ..scan.scanner import measure_probes
from . import cascade, replication, schema_plan, shares, users_plan
from .ops import bridge
from .plan import FixOptions, MigrationPlan, PlanError
from .planner import build_plan


def read_context_quietly(conn: psycopg.Connection, config: Config):
    """The audit context, read in a READ ONLY transaction (the scan's repair plan: nothing measured)."""
    with conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        return audit_context(conn, config)


def catalog_plan(conn: psycopg.Connection, config: Config, options: FixOptions) -> MigrationPlan:
    """The plan from the catalog only (no guard evaluated, nothing measured, nothing changed): what the
    scan's verdict reads the repairing steps from."""
    return build_plan(read_context_quietly(conn, config), options)


def make_plan(conn: psycopg.Connection, config: Config, options: FixOptions,
              preflight_notes: bool = True, serial: bool = False) -> MigrationPlan:
    """The migration's plan for this database, with each step's `done` flag (nothing is changed).
    `conn`: an autocommit connection. lock_timeout is capped below the server's deadlock_timeout (a
    plan note says so). `preflight_notes` False: the preflight's refusals are not read into the notes (a
    plan the executor runs at once, whose own preflight, right before the first change, stops it).
    `serial`: no parallel workers for the plan's reads (the apply's plan, made beside the application's
    writers and the scan before: a parallel count's workers took the cores the writers needed)."""
    # every read of the plan waits at most lock_timeout for a lock; set in each transaction, never on the
    # session (a transaction pooler would leave a session setting to another client)
    local = bounds(options.lock_timeout, conn.info.server_version)
    if serial:
        local["max_parallel_workers_per_gather"] = "0"
    try:
        with conn.transaction():
            set_local(conn, local)
            ctx = audit_context(conn, config)
    except pgerrors.LockNotAvailable as exc:
        raise PlanError(f"cannot read the tables' sizes: {first_line(exc)} (another session holds "
                        "a lock on one of them); nothing was changed: run again when the database is quieter") from None
    evidence: dict[str, list[tuple]] | None = None
    failed: dict[str, str] = {}
    wanted = []
    if "schema" in options.include:
        wanted += schema_plan.probes(ctx)
    if "users" in options.include:
        wanted += users_plan.probes(ctx)
    if options.bridge in ("auto", "source"):
        wanted += bridge.probes(ctx)
    if wanted:
        evidence, failed = measure_probes(conn, wanted, config.timeout_seconds, settings=local)
    row = conn.execute("SELECT setting FROM pg_settings WHERE name = 'deadlock_timeout'").fetchone()
    deadlock_ms = int(row[0]) if row is not None else 0
    cap = max(1, deadlock_ms * 4 // 5) / 1000
    capped = deadlock_ms > 0 and options.lock_timeout > cap
    asked = options.lock_timeout   # as given, before the cap
    if capped:
        # A statement of ours and an application transaction can wait for each other (the FK step holds
        # the key table and waits for the master; an application that registers first holds the master
        # and waits for the table). PostgreSQL aborts whichever waited deadlock_timeout first: make it
        # always ours (retried), never the application's write. In the options, so --sql shows it too.
        options = dataclasses.replace(options, lock_timeout=cap)
    plan = build_plan(ctx, options, evidence)
    if capped:
        plan.lock_timeout_asked = asked
        plan.notes.append(f"lock waits capped at {cap:g}s, below the server's deadlock_timeout ({deadlock_ms} ms): "
                          "when a statement of the migration and an application transaction wait for each other, the "
                          "migration's gives way and is retried, never the application's write")
    plan.notes += [f"not measured, nothing planned for it: {label}: {why}" for label, why in failed.items()]
    plan.notes += cascade.measure(conn, plan.removals, local)
    plan.shares, unmeasured = shares.measure(conn, plan.removals, plan.nulled, local)
    plan.notes += unmeasured
    plan.done = evaluate_guards(conn, plan, local)
    # what the preflight refuses (privileges, publications, leftovers): said by the dry run too
    if preflight_notes:
        plan.notes += [f"fix --apply stops before the first change: {problem}"
                       for s in plan.steps if s.precondition for problem in run_check(conn, s, local)]
    if plan.pending:   # the publications and slots the apply would reach (fix/replication.py)
        rows = conn.execute(replication.reached(replication.touched(plan.steps), plan.server_version_num)).fetchall()
        plan.notes += replication.dry_run_notes([r[0] for r in rows], options.subscribers_ready)
    return plan

"""The public Python API: what the CLI calls, usable from scripts and tests.

The CLI (cli.py) imports this module, `model` and `errors` only: what a command needs beyond
scan / plan / apply / report (its configuration and target, the sessions and watch commands, the
demo, the bridge, the `--sql` script, the output formats and files) is reached from here, in the
sections at the end of this file.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

from psycopg import errors as pgerrors

from .catalog import QualifiedName
from .config import MAX_TIMEOUT_SECONDS, Config, env_dsn, load_config
from .connection import Target, connect, resolve_target, scrub
from .durations import parse_duration, parse_since
from .errors import AuditError, ConfigError
from .model import ScanResult
from .outputs import (append_step_summary, check_writable_file, ensure_dir, out_lock, write_csv, write_formats,
                      write_json, write_text)
from .pgversion import CLIENT_CONNECTION_CHECK
from .progress import LiveProgress
from .scan.formats import FORMATS, RENDERERS
from .scan.scanner import DEFAULT_JOBS, Progress, audit_context, run_scan
from .scan.verdict import apply_severity, judge, partition_parents, step_repairs, summary_line, summary_lines
from .scan.watch import watch

if TYPE_CHECKING:     # annotations only: see _LAZY
    from .fix.executor import ApplyResult
    from .fix.plan import FixOptions, Plan

__all__ = [
    # scan, plan, apply, report and the demo
    "scan", "repair_plan", "verdict", "read_baseline", "write_scan", "report", "fix_options", "plan", "apply",
    "unrepaired", "demo", "demo_config", "plan_script", "render_format", "FixOptions", "Plan", "PlanError",
    "ApplyResult", "DEFAULT_JOBS", "Progress",
    # the cutover bridge
    "bridge_status", "bridge_remove", "BridgeInUse", "bridge_line",
    # what the commands need beyond them (the section at the end of this file)
    "load_config", "env_dsn", "resolve_target", "scrub", "MAX_TIMEOUT_SECONDS", "parse_duration", "parse_since",
    "close_idle", "prune", "sessions_script", "watch", "backup_hook", "summary_line", "summary_lines", "FORMATS",
    "ensure_dir", "check_writable_file", "write_text", "append_step_summary", "LiveProgress",
]


# The repair side (auditor/fix/, auditor/maintenance/) is imported when first used: a scan does not wait
# for it (the scan command builds its repair plan on another thread, which imports it meanwhile).
# partitions created during an apply (pg_partman's job) that its plan did not know: at most this many new
# plans run after the first, each covering what was created before it read the catalog
REPLANS = 2
_LAZY = {"backup_hook": ".fix.backup", "bridge_line": ".fix.bridge", "ApplyResult": ".fix.executor",
         "FixOptions": ".fix.plan", "Plan": ".fix.plan", "PlanError": ".fix.plan",
         "close_idle": ".maintenance.sessions", "prune": ".maintenance.sessions"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name], __package__), name)
    globals()[name] = value
    return value


def scan(target: Target | str | None, config: Config | None = None, progress: Progress | None = None,
         jobs: int = DEFAULT_JOBS) -> ScanResult:
    """Scan the database read-only and return the result (nothing is written anywhere). `jobs`: how many
    connections, all in the scan's one snapshot (the set of sessions in as many parts, then the table
    passes on whichever is free; see scan/passes.py)."""
    if not isinstance(target, Target):
        target = resolve_target(target)
    config = config or Config()
    with connect(target) as conn:
        return apply_severity(run_scan(conn, config, progress, connect=lambda: connect(target), jobs=jobs),
                              config.severity)


def repair_plan(target: Target | str | None, config: Config | None = None, options: FixOptions | None = None,
                **overrides) -> dict | None:
    """The plan (`Plan.to_dict()`) the scan's verdict reads the repairing steps from: built from the
    catalog only (no guard evaluated, nothing measured, nothing changed); None when there is nothing
    to migrate or the plan cannot be made (the verdict then has no step to count on)."""
    from .fix.plan import PlanError
    from .fix.planner import build_plan

    if not isinstance(target, Target):
        target = resolve_target(target)
    config = config or Config()
    with connect(target) as conn:
        with conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            ctx = audit_context(conn, config)
    try:
        return build_plan(ctx, fix_options(options, **overrides)).to_dict()
    except PlanError:
        return None


def verdict(result: ScanResult, config: Config | None = None, plan: dict | None = None,
            baseline: ScanResult | None = None):
    """The verdict (auditor/scan/verdict.py) of a scan, with the configuration's acceptances."""
    return judge(result, plan, accept=(config or Config()).accept, baseline=baseline)


def read_baseline(path: str | Path | None) -> ScanResult | None:
    """A saved findings.json to compare with (`--baseline`); None without a path."""
    if path is None:
        return None
    from .outputs import read_json

    return read_json(path)


def _live_scan(target: Target, config: Config) -> ScanResult:
    """The scans around `fix --apply`, on a database in use: without parallel workers. A parallel scan
    runs a leader and two workers, CPU-bound, and on a small server that starves the application's
    writers (benchmarks/README.md: 50-70 ms writer stalls on 2 cores, ~13 ms without)."""
    with connect(target) as conn:
        conn.execute("SET max_parallel_workers_per_gather = 0")
        conn.commit()
        return apply_severity(run_scan(conn, config), config.severity)


def write_scan(result: ScanResult, out_dir: str | Path, *, repair_plan: dict | None = None,
               baseline: ScanResult | None = None, verdict=None) -> dict[str, Path]:
    """Write findings.json, findings.csv, samples-*.csv, report.html, junit.xml, results.sarif and
    summary.md into `out_dir`. `repair_plan`: the plan whose steps the report names next to the
    findings they repair (not shown as a plan); `verdict`: the scan's, for the CI files."""
    from yumai_audit.reports.render import write_html

    out = ensure_dir(out_dir)
    paths = {"json": write_json(result, out / "findings.json")}
    csvs = write_csv(result, out)
    paths["csv"] = csvs[0]
    paths.update(write_formats(result, out, verdict))
    paths["html"] = write_html(result, out / "report.html", repair_plan=repair_plan, baseline=baseline)
    return paths


def report(findings: str | Path, out_dir: str | Path, *, compare: str | Path | None = None,
           plan: str | Path | None = None, baseline: str | Path | None = None):
    """Render report.html (and findings.csv, samples-*.csv) from a saved findings.json.

    `findings` is the scan reported on (after a fix: the newer scan); `compare` the older scan it
    is compared with, check by check; `plan` a saved plan JSON shown in the plan section; `baseline`
    an older findings.json whose findings are known (new / known / gone). Returns the scan, the
    written paths and the verdict.
    """
    from yumai_audit.outputs import read_json, read_plan
    from yumai_audit.reports.render import write_html

    result = read_json(findings)
    before = read_json(compare) if compare is not None else None
    plan_data = read_plan(plan) if plan is not None else None
    known = read_json(baseline) if baseline is not None else None
    out = ensure_dir(out_dir)
    csvs = write_csv(result, out)
    paths = {"csv": csvs[0], "html": write_html(result, out / "report.html", plan=plan_data, before=before,
                                                baseline=known)}
    from yumai_audit.reports.render import acceptances

    judged = judge(result, plan_data, accept=acceptances(result.config), baseline=known)
    paths.update(write_formats(result, out, judged))
    return result, paths, judged


def fix_options(options: FixOptions | None = None, **overrides) -> FixOptions:
    """`options` (default FixOptions()) with `overrides` (FixOptions' field names) replaced."""
    from .fix.plan import FixOptions

    try:
        return dataclasses.replace(options or FixOptions(), **overrides)
    except TypeError as exc:
        raise ConfigError(f"unknown fix option: {exc}") from None


def _build_plan(conn, config: Config, fix_options: FixOptions) -> Plan:
    from .fix.executor import evaluate_guards
    from .fix.plan import PlanError
    from .fix.planner import build_plan
    from .fix.waits import bound_session

    bound_session(conn, fix_options.lock_timeout)   # the catalog read and the guards wait that long for a lock at most
    if conn.info.server_version >= CLIENT_CONNECTION_CHECK:
        # a killed dry `fix` leaves no guard running on the server (and holding its locks) for minutes
        conn.execute("SET client_connection_check_interval = 1000")
    try:
        with conn.transaction():
            ctx = audit_context(conn, config)
    except pgerrors.LockNotAvailable as exc:
        raise PlanError(f"cannot read the tables' sizes: {str(exc).strip().splitlines()[0]} (another session holds "
                        "a lock on one of them); nothing was changed: run again when the database is quieter") from None
    evidence, failed = None, {}
    wanted = []
    if "schema" in fix_options.include:
        from .fix.schema_plan import probes

        wanted += probes(ctx)
    if "users" in fix_options.include:
        from .fix import users_plan

        wanted += users_plan.probes(ctx)
    if fix_options.bridge in ("auto", "source"):
        from .fix import bridge as bridge_plan

        wanted += bridge_plan.probes(ctx)
    if wanted:
        from .scan.scanner import measure_probes

        evidence, failed = measure_probes(conn, wanted, config.timeout_seconds)
    deadlock_ms = int(conn.execute("SELECT setting FROM pg_settings WHERE name = 'deadlock_timeout'").fetchone()[0])
    cap = max(1, deadlock_ms * 4 // 5) / 1000
    capped = deadlock_ms > 0 and fix_options.lock_timeout > cap
    if capped:
        # A statement of ours and an application transaction can wait for each other (the FK step holds
        # the key table and waits for the master; an application that registers first holds the master
        # and waits for the table). PostgreSQL aborts whichever waited deadlock_timeout first: make it
        # always ours (retried), never the application's write. In the options, so --sql shows it too.
        fix_options = dataclasses.replace(fix_options, lock_timeout=cap)
    plan = build_plan(ctx, fix_options, evidence)
    if capped:
        plan.notes.append(f"lock waits capped at {cap:g}s, below the server's deadlock_timeout ({deadlock_ms} ms): when "
                          "a statement of the migration and an application transaction wait for each other, the "
                          "migration's gives way and is retried, never the application's write")
    plan.notes += [f"not measured, nothing planned for it: {label}: {why}" for label, why in failed.items()]
    from .fix.cascade import measure

    plan.notes += measure(conn, plan.removals)
    plan.done = evaluate_guards(conn, plan)
    return plan


def plan(target: Target | str | None, config: Config | None = None, options: FixOptions | None = None,
         **overrides) -> Plan:
    """The fix plan for this database, with each step's `done` flag (nothing is changed).

    `options`: a `FixOptions` (orphans, yes_delete, active_window_minutes, batch_size, lock_timeout,
    include, bridge, gate_window); `overrides` replace single fields of it (`api.plan(dsn, include="schema")`).
    lock_timeout is capped below the server's deadlock_timeout (a plan note says so).
    """
    opts = fix_options(options, **overrides)   # bad options: one line before any connection
    if not isinstance(target, Target):
        target = resolve_target(target)
    with connect(target, autocommit=True) as conn:
        return _build_plan(conn, config or Config(), opts)


def apply(target: Target | str | None, config: Config | None = None, options: FixOptions | None = None, *,
          progress: Progress | None = None, before_first_change=None, out_dir: str | Path | None = None,
          step_hook=None, rescan: bool = True, baseline: ScanResult | None = None, confirm=None,
          **overrides) -> ApplyResult:
    """Run the migration: scan, plan, execute every step not yet done, verify, rescan.

    `options` / `overrides` as for `plan`; `baseline`: an older scan for the verdict (`result.verdict`).
    `before_first_change(tables)` is called once, before the first change, with the tables that
    will change (a backup hook). `confirm(plan, before)` is called with the plan that will run and the
    scan before it, before anything is written; it raises to stop (the CLI's question). With
    `out_dir`, plan.sql, apply-log.json and the reports (the
    scan after in `out_dir`, the scan before in `out_dir/before`) are written there, even when a
    step fails. One run at a time per `out_dir` (a lock file there) and per database (an advisory
    lock): a second one is refused before it writes anything.
    """
    config = config or Config()
    fix_opts = fix_options(options, **overrides)   # bad options: one line before any connection
    if not isinstance(target, Target):
        target = resolve_target(target)
    run = dict(progress=progress, before_first_change=before_first_change, step_hook=step_hook, rescan=rescan,
               baseline=baseline, confirm=confirm)
    if out_dir is None:
        return _apply(target, config, fix_opts, None, **run)
    out = ensure_dir(out_dir)
    with out_lock(out):     # before anything is written there: a second run with the same --out is refused
        return _apply(target, config, fix_opts, out, **run)


def _apply(target: Target, config: Config, fix_opts: FixOptions, out: Path | None, *, progress, before_first_change,
           step_hook, rescan: bool, baseline: ScanResult | None, confirm) -> ApplyResult:
    from .fix.coverage import uncovered
    from .fix.executor import Executor, refuse_if_running
    from .fix.sqlscript import render_script

    with connect(target, autocommit=True) as conn:
        refuse_if_running(conn)     # before the scan and the plan files: the running apply's stay as they are
    before = _live_scan(target, config) if rescan else None
    with connect(target, autocommit=True) as conn:
        the_plan = _build_plan(conn, config, fix_opts)
    if confirm is not None and the_plan.pending:
        confirm(the_plan, before)     # the CLI's question, on the very plan that runs; it raises to stop
    if out is not None:
        write_text(out / "plan.sql", render_script(the_plan))
        write_text(out / "plan.json", json.dumps(the_plan.to_dict(), indent=2))
    for attempt in range(1, REPLANS + 2):
        executor = Executor(target, the_plan, progress=progress, before_first_change=before_first_change,
                            step_hook=step_hook)
        try:
            result = executor.run()
        finally:
            partial = getattr(executor, "result", None)
            if out is not None and partial is not None:
                (out / "apply-log.json").write_text(json.dumps(partial.to_dict(), indent=2, default=str),
                                                    encoding="utf-8")
        if not uncovered(result.problems) or attempt > REPLANS:
            break
        # a partition created during the run (after the plan read the catalog): a new plan covers it
        (progress or (lambda _m: None))("a partition the plan did not know is not covered (created during the "
                                        "apply?): planning again and running what the new plan adds")
        before_first_change = None      # the backup, if any, was taken
        with connect(target, autocommit=True) as conn:
            the_plan = _build_plan(conn, config, fix_opts)
        if out is not None:
            write_text(out / "plan.sql", render_script(the_plan))
            write_text(out / "plan.json", json.dumps(the_plan.to_dict(), indent=2))
    result.before = before
    if rescan:
        result.after = _live_scan(target, config)
        result.problems.extend(unrepaired(result.after, the_plan))
        plan_dict = the_plan.to_dict()
        result.verdict = judge(result.after, plan_dict, accept=config.accept, baseline=baseline)
        if out is not None:
            write_scan(before, out / "before", repair_plan=plan_dict)
            write_scan(result.after, out, verdict=result.verdict)
            _write_fix_report(result, out / "report.html", baseline)
    return result


def _write_fix_report(result, path: Path, baseline: ScanResult | None = None) -> None:
    """The after-scan's report with the plan and the before/after comparison."""
    from yumai_audit.reports.render import write_html

    plan = result.plan.to_dict()
    finished = {o.step for o in result.outcomes if o.outcome in ("done", "skipped")}
    failed = any(o.outcome == "failed" for o in result.outcomes)
    for step in plan["steps"]:
        # a check step (preflight, verify) that the run got past has passed
        passed = step.get("kind") in ("check", "gate") and not failed
        step["done"] = bool(step["done"]) or step["id"] in finished or passed
    write_html(result.after, path, plan=plan, before=result.before, baseline=baseline)


def unrepaired(result: ScanResult, plan) -> list[str]:
    """The findings of a scan after the apply that a step of the plan declares it repairs: what a
    finished migration must not have (the checks the steps name, never a list kept here)."""
    parents = partition_parents(result)
    return [f"{f.check}: {f.message}" for f in result.findings
            if any(step_repairs(s.repairs, s.target, s.column, s.changes, f.check, f.table, f.column, parents)
                   for s in plan.steps)]


def demo(out_dir: str | Path, progress: Progress | None = None) -> tuple[ApplyResult, Path]:
    """`yumai-audit demo`: an embedded PostgreSQL, a sample yumai database with typical defects, the
    migration applied with its backup and the demo's decisions (`demo.DECISIONS`, written to
    `out_dir/yumai-audit.toml`; `demo.FIX_OPTIONS`), and the reports before and after in `out_dir`."""
    from .fix.backup import backup_hook
    from .demo import DECISIONS, FIX_OPTIONS, build_demo_database, decisions_config
    from .embedded import embedded_server

    say = progress or (lambda _m: None)
    out = Path(out_dir)
    with embedded_server() as uri:
        with connect(resolve_target(uri), autocommit=True) as conn:
            conn.execute("CREATE DATABASE yumai")
        target = resolve_target(uri.replace("/postgres?", "/yumai?"))
        say("Building the sample database (embedded PostgreSQL)...")
        build_demo_database(target.conninfo)
        say("Scanning, then applying the migration (yumai-audit fix --apply --include users --missing-users null)...")
        ensure_dir(out)
        (out / "yumai-audit.toml").write_text(DECISIONS, encoding="utf-8")
        result = apply(target, decisions_config(), out_dir=out,
                       before_first_change=backup_hook(target, out, say, throwaway=True), **FIX_OPTIONS)
    return result, out


# --- the cutover bridge (auditor/fix/bridge.py) ---------------------------------------------------------

class BridgeInUse(AuditError):
    """`bridge remove` refused: the bridge still registers sessions the application writes the old way."""

    exit_code = 1


def bridge_status(target: Target | str | None, config: Config | None = None):
    """Where the bridge is installed and the sessions it registered per hour of the last day (read-only)."""
    from .fix.bridge import read_status

    if not isinstance(target, Target):
        target = resolve_target(target)
    with connect(target, autocommit=True) as conn:
        return read_status(lambda q: conn.execute(q).fetchall())


def bridge_remove(target: Target | str | None, config: Config | None = None, *, force: bool = False,
                  lock_timeout: float = 2.0, max_tries: int = 6, backoff: float = 0.25) -> list[str]:
    """Drop every bridge trigger and its function (the log stays), in one transaction under
    `lock_timeout`, retried with backoff. Refused (BridgeInUse) while the bridge registered a session
    in the last hour, unless `force`. Returns the tables it was removed from."""
    import time

    from psycopg import errors as pgerrors
    from psycopg import sql

    from .fix.bridge import drop_statements, installed_query, read_status

    if not isinstance(target, Target):
        target = resolve_target(target)
    with connect(target, autocommit=True) as conn:
        status = read_status(lambda q: conn.execute(q).fetchall())
        if not status.tables:
            return []
        if status.last_hour and not force:
            raise BridgeInUse(
                f"the bridge registered {status.last_hour} session{'s' if status.last_hour != 1 else ''} in the "
                "last hour: the application still writes sessions without registering them, and without the "
                "bridge those writes would fail; deploy the registration first, or add --force")
        for attempt in range(1, max_tries + 1):
            try:
                with conn.transaction():
                    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(
                        sql.Literal(f"{int(lock_timeout * 1000)}ms")))
                    installed = conn.execute(installed_query()).fetchall()
                    for stmt in drop_statements(installed):
                        conn.execute(stmt)
                return [str(QualifiedName(s, t)) for s, t, _fs, _fn in installed]
            except (pgerrors.LockNotAvailable, pgerrors.DeadlockDetected) as exc:
                if attempt == max_tries:
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    raise AuditError(f"bridge remove: could not take the tables' locks after {attempt} tries "
                                     f"({first}); nothing was removed: try again when the database is quieter"
                                     ) from None
                time.sleep(backoff * 2 ** (attempt - 1))
    return []


# --- what the commands need beyond scan / plan / apply / report -------------------------------------
# Imported above and part of this API as they are (their own modules document them):
#   configuration and target: load_config, env_dsn, resolve_target, scrub (a message without the DSN's
#     secrets), MAX_TIMEOUT_SECONDS; parse_duration, parse_since (the --idle / --older-than / --since values)
#   sessions close-idle | prune: close_idle, prune (auditor/maintenance/sessions.py)
#   watch: watch (auditor/scan/watch.py)
#   fix --apply: backup_hook (auditor/fix/backup.py); the bridge: bridge_line (the scan summary's line)
#   the verdict's terminal lines: summary_line, summary_lines (auditor/scan/verdict.py)
#   output: FORMATS, ensure_dir, check_writable_file, write_text, append_step_summary, LiveProgress


def plan_script(plan: Plan) -> str:
    """The annotated SQL script of a `fix` plan: what `fix --sql` writes and `fix --apply` runs."""
    from .fix.sqlscript import render_script

    return render_script(plan)


def sessions_script(plan: Plan, command: str) -> str:
    """The annotated SQL script of a `sessions close-idle|prune` plan (`command`): what its --sql writes."""
    from .fix.sqlscript import render_script
    from .maintenance.sessions import SCRIPT_OPTIONS, script_title

    return render_script(plan, script_title(command), SCRIPT_OPTIONS)


def render_format(result: ScanResult, fmt: str, verdict=None) -> str:
    """`result` in one of FORMATS other than text (json, junit, sarif, github, markdown)."""
    return RENDERERS[fmt](result, verdict)


def demo_config() -> Config:
    """The demo's configuration (the defaults plus its decisions): what `demo` applies and judges with."""
    from .demo import decisions_config

    return decisions_config()

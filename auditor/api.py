"""The public Python API: what the CLI calls, usable from scripts and tests."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from psycopg import errors as pgerrors

from .config import Config, load_config
from .connection import Target, connect, resolve_target
from .errors import ConfigError
from .executor import ApplyResult, Executor, evaluate_guards
from .model import ScanResult
from .outputs import ensure_dir, write_csv, write_formats, write_json, write_text
from .plan import FixOptions, Plan, PlanError
from .planner import build_plan
from .runner import Progress, audit_context, run_scan
from .sqlscript import render_script
from .steps import step_repairs
from .waits import bound_session


def scan(target: Target | str | None, config: Config | None = None, progress: Progress | None = None) -> ScanResult:
    """Scan the database read-only and return the result (nothing is written anywhere)."""
    if not isinstance(target, Target):
        target = resolve_target(target)
    with connect(target) as conn:
        return run_scan(conn, config or Config(), progress)


def _live_scan(target: Target, config: Config) -> ScanResult:
    """The scans around `fix --apply`, on a database in use: without parallel workers. A parallel scan
    runs a leader and two workers, CPU-bound, and on a small server that starves the application's
    writers (benchmarks/README.md: 50-70 ms writer stalls on 2 cores, ~13 ms without)."""
    with connect(target) as conn:
        conn.execute("SET max_parallel_workers_per_gather = 0")
        conn.commit()
        return run_scan(conn, config)


def write_scan(result: ScanResult, out_dir: str | Path) -> dict[str, Path]:
    """Write findings.json, findings.csv, samples-*.csv, report.html, junit.xml, results.sarif and
    summary.md into `out_dir`."""
    from yumai_audit.reports.render import write_html

    out = ensure_dir(out_dir)
    paths = {"json": write_json(result, out / "findings.json")}
    csvs = write_csv(result, out)
    paths["csv"] = csvs[0]
    paths.update(write_formats(result, out))
    paths["html"] = write_html(result, out / "report.html")
    return paths


def report(findings: str | Path, out_dir: str | Path, *, compare: str | Path | None = None,
           plan: str | Path | None = None) -> tuple[ScanResult, dict[str, Path]]:
    """Render report.html (and findings.csv, samples-*.csv) from a saved findings.json.

    `findings` is the scan reported on (after a fix: the newer scan); `compare` the older scan it
    is compared with, check by check; `plan` a saved plan JSON shown in the plan section.
    """
    from yumai_audit.outputs import read_json, read_plan
    from yumai_audit.reports.render import write_html

    result = read_json(findings)
    before = read_json(compare) if compare is not None else None
    plan_data = read_plan(plan) if plan is not None else None
    out = ensure_dir(out_dir)
    csvs = write_csv(result, out)
    paths = {"csv": csvs[0], "html": write_html(result, out / "report.html", plan=plan_data, before=before)}
    paths.update(write_formats(result, out))
    return result, paths


def fix_options(options: FixOptions | None = None, **overrides) -> FixOptions:
    """`options` (default FixOptions()) with `overrides` (FixOptions' field names) replaced."""
    try:
        return dataclasses.replace(options or FixOptions(), **overrides)
    except TypeError as exc:
        raise ConfigError(f"unknown fix option: {exc}") from None


def _build_plan(conn, config: Config, fix_options: FixOptions) -> Plan:
    bound_session(conn, fix_options.lock_timeout)   # the catalog read and the guards wait that long for a lock at most
    if conn.info.server_version >= 140000:
        # a killed dry `fix` leaves no guard running on the server (and holding its locks) for minutes
        conn.execute("SET client_connection_check_interval = 1000")
    try:
        with conn.transaction():
            ctx = audit_context(conn, config)
    except pgerrors.LockNotAvailable as exc:
        raise PlanError(f"cannot read the tables' sizes: {str(exc).strip().splitlines()[0]} (another session holds "
                        "a lock on one of them); nothing was changed: run again when the database is quieter") from None
    evidence, failed = None, {}
    if "schema" in fix_options.include:
        from .runner import measure_probes
        from .schema_plan import probes

        evidence, failed = measure_probes(conn, probes(ctx), config.timeout_seconds)
    plan = build_plan(ctx, fix_options, evidence)
    plan.notes += [f"not measured, nothing planned for it: {label}: {why}" for label, why in failed.items()]
    from .cascade import measure

    plan.notes += measure(conn, plan.removals)
    plan.done = evaluate_guards(conn, plan)
    return plan


def plan(target: Target | str | None, config: Config | None = None, options: FixOptions | None = None,
         **overrides) -> Plan:
    """The fix plan for this database, with each step's `done` flag (nothing is changed).

    `options`: a `FixOptions` (orphans, yes_delete, active_window_minutes, batch_size, lock_timeout,
    include); `overrides` replace single fields of it (`api.plan(dsn, include="schema")`).
    """
    opts = fix_options(options, **overrides)   # bad options: one line before any connection
    if not isinstance(target, Target):
        target = resolve_target(target)
    with connect(target, autocommit=True) as conn:
        return _build_plan(conn, config or Config(), opts)


def apply(target: Target | str | None, config: Config | None = None, options: FixOptions | None = None, *,
          progress: Progress | None = None, before_first_change=None, out_dir: str | Path | None = None,
          step_hook=None, rescan: bool = True, confirm=None, **overrides) -> ApplyResult:
    """Run the migration: scan, plan, execute every step not yet done, verify, rescan.

    `options` / `overrides` as for `plan`.
    `before_first_change(tables)` is called once, before the first change, with the tables that
    will change (a backup hook). `confirm(plan, before)` is called with the plan that will run and the
    scan before it, before anything is written; it raises to stop (the CLI's question). With
    `out_dir`, plan.sql, apply-log.json and the reports (the
    scan after in `out_dir`, the scan before in `out_dir/before`) are written there, even when a
    step fails.
    """
    config = config or Config()
    fix_opts = fix_options(options, **overrides)   # bad options: one line before any connection
    if not isinstance(target, Target):
        target = resolve_target(target)
    before = _live_scan(target, config) if rescan else None
    with connect(target, autocommit=True) as conn:
        the_plan = _build_plan(conn, config, fix_opts)
    if confirm is not None and the_plan.pending:
        confirm(the_plan, before)
    out = ensure_dir(out_dir) if out_dir is not None else None
    if out is not None:
        write_text(out / "plan.sql", render_script(the_plan))
        write_text(out / "plan.json", json.dumps(the_plan.to_dict(), indent=2))
    executor = Executor(target, the_plan, progress=progress, before_first_change=before_first_change,
                        step_hook=step_hook)
    try:
        result = executor.run()
    finally:
        partial = getattr(executor, "result", None)
        if out is not None and partial is not None:
            (out / "apply-log.json").write_text(json.dumps(partial.to_dict(), indent=2, default=str), encoding="utf-8")
    result.before = before
    if rescan:
        result.after = _live_scan(target, config)
        result.problems.extend(unrepaired(result.after, the_plan))
        if out is not None:
            write_scan(before, out / "before")
            write_scan(result.after, out)
            _write_fix_report(result, out / "report.html")
    return result


def _write_fix_report(result, path: Path) -> None:
    """The after-scan's report with the plan and the before/after comparison."""
    from yumai_audit.reports.render import write_html

    plan = result.plan.to_dict()
    finished = {o.step for o in result.outcomes if o.outcome in ("done", "skipped")}
    failed = any(o.outcome == "failed" for o in result.outcomes)
    for step in plan["steps"]:
        # a check step (preflight, verify) that the run got past has passed
        passed = step.get("kind") == "check" and not failed
        step["done"] = bool(step["done"]) or step["id"] in finished or passed
    write_html(result.after, path, plan=plan, before=result.before)


def unrepaired(result: ScanResult, plan) -> list[str]:
    """The findings of a scan after the apply that a step of the plan declares it repairs: what a
    finished migration must not have (the checks the steps name, never a list kept here)."""
    parents = {str(p.get("partition")): str(p.get("table")) for p in (result.stats or {}).get("partitions") or []
               if isinstance(p, dict)}
    return [f"{f.check}: {f.message}" for f in result.findings
            if any(step_repairs(s.repairs, s.target, s.column, s.changes, f.check, f.table, f.column, parents)
                   for s in plan.steps)]


def demo(out_dir: str | Path, progress: Progress | None = None) -> tuple[ApplyResult, Path]:
    """`yumai-audit demo`: an embedded PostgreSQL, a sample yumai database with typical defects, the
    migration applied with its backup, and the reports before and after in `out_dir`."""
    from .backup import backup_hook
    from .demo import build_demo_database
    from .embedded import embedded_server

    say = progress or (lambda _m: None)
    out = Path(out_dir)
    with embedded_server() as uri:
        with connect(resolve_target(uri), autocommit=True) as conn:
            conn.execute("CREATE DATABASE yumai")
        target = resolve_target(uri.replace("/postgres?", "/yumai?"))
        say("Building the sample database (embedded PostgreSQL)...")
        build_demo_database(target.conninfo)
        say("Scanning, then applying the migration (yumai-audit fix --apply)...")
        result = apply(target, load_config(None, {}), out_dir=out,
                       before_first_change=backup_hook(target, out, say, throwaway=True))
    return result, out

"""The public Python API: what the CLI calls, usable from scripts and tests.

The CLI (cli.py) imports this module, `model` and `errors` only: what a command needs beyond
scan / plan / apply / report (its configuration and target, the sessions and watch commands, the
demo, the bridge, the `--sql` script, the output formats and files) is reached from here, in the
sections at the end of this file.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import lockbudget
from .catalog import QualifiedName
from .config import CONFIG_FILE, MAX_TIMEOUT_SECONDS, Config, env_dsn, find_config, load_config
from .connection import Target, connect, resolve_target, scrub
from .durations import parse_duration, parse_since
from .errors import AuditError, ConnectionEnded, DatabaseError, connection_ended, first_line
from .model import ScanResult
from .outputs import (
    append_step_summary,
    check_writable_file,
    ensure_dir,
    out_lock,
    write_formats,
    write_json,
    write_text,
)
from .pgversion import version_text
from .progress import LiveProgress
from .scan.formats import FORMATS, RENDERERS
from .scan.scanner import DEFAULT_JOBS, Progress, run_scan
from .scan.verdict import (
    Verdict,
    acceptances_from,
    apply_severity,
    judge,
    partition_parents,
    step_repairs,
    summary_line,
    summary_lines,
)
from .scan.watch import watch
from .terminal import message as terminal_message
from .terminal import wrap as wrap_text

if TYPE_CHECKING:     # annotations only: see _LAZY
    from .context import AuditContext
    from .discover import Proposal
    from .engine.executor import ApplyResult, StepHook
    from .engine.plan import Plan
    from .fix.plan import FixOptions, MigrationPlan

__all__ = [
    # scan, plan, apply, report and the demo
    "scan", "repair_plan", "judge_scan", "read_baseline", "write_plan", "write_scan", "plan_section", "report", "plan",
    "apply",
    "unrepaired", "demo", "demo_config", "plan_script", "render_format", "FixOptions", "Plan", "PlanError",
    "stop_demo", "KeptDemo",
    # the scan as pandas DataFrames (auditor/frames.py; pandas imported on first use)
    "findings_frame", "samples_frame", "weeks_frame", "partitions_frame",
    "ApplyResult", "DEFAULT_JOBS", "Progress",
    # the cutover bridge
    "bridge_status", "bridge_remove", "BridgeInUse", "bridge_line",
    # what the commands need beyond them (the section at the end of this file)
    "load_config", "env_dsn", "resolve_target", "scrub", "MAX_TIMEOUT_SECONDS", "parse_duration", "parse_since",
    "close_idle", "prune", "sessions_script", "watch", "backup_hook", "summary_line", "summary_lines", "FORMATS",
    "ensure_dir", "check_writable_file", "write_text", "append_step_summary", "LiveProgress", "version_text",
    "terminal_message", "wrap_text",
    "check_documentation", "find_config", "FIX_RANGES",
    # init: a configuration proposed from the catalog
    "init", "propose_config", "check_init_out", "CONFIG_FILE",
    # logical replication (auditor/fix/replication.py, auditor/fix/subscriber.py)
    "write_subscriber_scripts",
]


# The repair side (auditor/fix/, auditor/maintenance/) is imported when first used: a scan does not wait
# for it (the scan command builds its repair plan on another thread, which imports it meanwhile).
# partitions created during an apply (pg_partman's job) that its plan did not know: at most this many new
# plans run after the first, each covering what was created before it read the catalog
REPLANS = 2
_LAZY = {"backup_hook": ".fix.backup", "bridge_line": ".bridge_state", "ApplyResult": ".engine.executor",
         "FixOptions": ".fix.plan", "Plan": ".engine.plan", "PlanError": ".engine.plan",
         "close_idle": ".maintenance.sessions", "prune": ".maintenance.sessions",
         "FIX_RANGES": ".fix.plan", "findings_frame": ".frames", "samples_frame": ".frames",
         "weeks_frame": ".frames", "partitions_frame": ".frames"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name], __package__), name)
    globals()[name] = value
    return value


# `confirm(plan, before)`: called with the plan that will run and the scan before it; raises to stop
Confirm = Callable[[Any, "ScanResult | None"], None]


def scan(target: Target | str | None, config: Config | None = None, progress: Progress | None = None,
         jobs: int = DEFAULT_JOBS, *, on_context: Callable[[AuditContext], None] | None = None) -> ScanResult:
    """Scan the database read-only and return the result (nothing is written anywhere). `jobs`: how many
    connections, all in the scan's one snapshot (the set of sessions in as many parts, then the table
    passes on whichever is free; see scan/passes.py). `on_context`: called with the audit context the scan
    read, before its statements run (`repair_plan(..., context=)` makes the repair plan from it)."""
    if not isinstance(target, Target):
        target = resolve_target(target)
    config = config or Config()
    with connect(target) as conn:
        return apply_severity(run_scan(conn, config, progress, connect=lambda: connect(target), jobs=jobs,
                                       on_context=on_context), config.severity)


def repair_plan(target: Target | str | None, config: Config | None = None,
                options: FixOptions | None = None, *, context: AuditContext | None = None) -> dict | None:
    """The plan (`Plan.to_dict()`) the scan's verdict reads the repairing steps from: built from the
    catalog only (no guard evaluated, nothing measured, nothing changed); None when there is nothing
    to migrate or the plan cannot be made (the verdict then has no step to count on). `context`: the
    catalog as the scan read it (`scan(..., on_context=)`), instead of reading it again on a connection
    of its own."""
    from .engine.plan import PlanError
    from .fix.make import catalog_plan
    from .fix.plan import FixOptions
    from .fix.planner import build_plan

    if context is not None:
        try:
            return build_plan(context, options or FixOptions()).to_dict()
        except PlanError:
            return None
    if not isinstance(target, Target):
        target = resolve_target(target)
    config = config or Config()
    with connect(target) as conn:
        try:
            return catalog_plan(conn, config, options or FixOptions()).to_dict()
        except PlanError:
            return None


def judge_scan(result: ScanResult, config: Config | None = None, plan: dict | None = None,
               baseline: ScanResult | None = None) -> Verdict:
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
    writers of a core to finish their commits (benchmarks/README.md, "The scans")."""
    with connect(target) as conn:
        return apply_severity(run_scan(conn, config, settings={"max_parallel_workers_per_gather": "0"}),
                              config.severity)


def write_scan(result: ScanResult, out_dir: str | Path, *, repair_plan: dict | None = None,
               plan: dict | None = None, baseline: ScanResult | None = None,
               verdict: Verdict | None = None, rendered_plan: str | None = None) -> dict[str, Path]:
    """Write findings.json, findings.csv, samples-*.csv, report.html, junit.xml, results.sarif and
    summary.md into `out_dir`, all with one verdict: `verdict` (the scan's), else the scan judged
    here with the plan and the acceptances its config carries. `plan`: the plan that runs (shown
    in the report's plan section); `repair_plan`: the plan `fix` would make (shown as such);
    `rendered_plan`: the plan section of the plan shown, already rendered (`plan_section`)."""
    shown = plan if plan is not None else repair_plan
    if verdict is None:
        verdict = judge(result, shown, accept=acceptances_from(result.config), baseline=baseline)
    out = ensure_dir(out_dir)
    return {"json": write_json(result, out / "findings.json", verdict),
            **_write_reports(result, out, verdict, plan=plan, repair_plan=repair_plan, baseline=baseline,
                             rendered_plan=rendered_plan)}


def _write_reports(result: ScanResult, out: Path, verdict: Verdict, *, repair_plan: dict | None = None,
                   plan: dict | None = None, baseline: ScanResult | None = None,
                   rendered_plan: str | None = None) -> dict[str, Path]:
    """What `write_scan` writes besides findings.json (`fix --apply` writes that before its first change, these
    beside its first steps)."""
    from yumai_audit.reports.render import write_html

    from .frames import write_csv

    paths = {"csv": write_csv(result, out)[0]}
    paths.update(write_formats(result, out, verdict))
    paths["html"] = write_html(result, out / "report.html", plan=plan, repair_plan=repair_plan, baseline=baseline,
                               verdict=verdict, rendered_plan=rendered_plan)
    return paths


def plan_section(plan: dict, *, proposed: bool = False) -> str:
    """The report's plan section of `plan` (Plan.to_dict()) as HTML, for `write_scan(rendered_plan=)`: it
    depends on the plan only (`proposed`: shown as the plan `fix` would make, `write_scan(repair_plan=)`)."""
    from yumai_audit.reports.render import plan_section as render_section

    return str(render_section(plan, proposed=proposed))


def write_plan(the_plan: Plan, out_dir: str | Path) -> dict[str, Path]:
    """plan.sql (the annotated script --apply runs) and plan.json (what `report --plan` shows) in `out_dir`."""
    out = ensure_dir(out_dir)
    return {"sql": write_text(out / "plan.sql", plan_script(the_plan)),
            "plan": write_text(out / "plan.json", json.dumps(the_plan.to_dict(), indent=2) + "\n")}


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

    from .frames import write_csv

    result = read_json(findings)
    before = read_json(compare) if compare is not None else None
    plan_data = read_plan(plan) if plan is not None else None
    known = read_json(baseline) if baseline is not None else None
    out = ensure_dir(out_dir)
    judged = judge(result, plan_data, accept=acceptances_from(result.config), baseline=known)
    csvs = write_csv(result, out)
    paths = {"csv": csvs[0], "html": write_html(result, out / "report.html", plan=plan_data, before=before,
                                                baseline=known, verdict=judged)}
    paths.update(write_formats(result, out, judged))
    return result, paths, judged


def plan(target: Target | str | None, config: Config | None = None,
         options: FixOptions | None = None) -> MigrationPlan:
    """The fix plan for this database, with each step's `done` flag (nothing is changed): the plan
    `apply(..., plan=)` runs, `plan_script` writes and the CLI's confirmation shows (fix/make.py).

    `options`: a `FixOptions` (orphans, yes_delete, active_window_minutes, batch_size, lock_timeout,
    include, bridge, gate_window; `api.plan(dsn, options=FixOptions(include=("schema",)))`).
    lock_timeout is capped below the server's deadlock_timeout (a plan note says so).
    """
    from .fix.make import make_plan
    from .fix.plan import FixOptions

    if not isinstance(target, Target):
        target = resolve_target(target)
    config = config or Config()
    with connect(target, autocommit=True) as conn:
        lockbudget.check(conn, config.schemas, 1, "fix", fewer=None)   # the catalog read locks every relation
        return make_plan(conn, config, options or FixOptions())


def apply(target: Target | str | None, config: Config | None = None, options: FixOptions | None = None, *,
          progress: Progress | None = None, before_first_change: Callable[[list[str]], object] | None = None,
          out_dir: str | Path | None = None, step_hook: StepHook | None = None, rescan: bool = True,
          baseline: ScanResult | None = None, confirm: Confirm | None = None,
          plan: MigrationPlan | None = None, planned: Callable[[MigrationPlan], object] | None = None,
          preflight_notes: bool = True) -> ApplyResult:
    """Run the migration: scan, plan, execute every step not yet done, verify, rescan.

    `options` as for `plan`; `baseline`: an older scan for the verdict (`result.verdict`).
    `before_first_change(tables)` is called once, before the first change, with the tables that
    will change (a backup hook). `confirm(plan, before)` is called with the plan that will run and the
    scan before it, before anything is written; it raises to stop (the CLI's question). With
    `plan`: a plan made by `plan()` (the CLI's, which `fix --sql` wrote): the very object that is
    confirmed, written to plan.sql and run (its options are the plan's; without it one is made here, while the
    scan before runs on a connection of its own, when the lock table holds both). `planned(plan)`: called
    with the plan made here, before the question (the CLI prints it and writes --sql; it raises to stop).
    `preflight_notes` False: the plan made here does not read the preflight's refusals into its notes (the
    executor's preflight, right before the first change, stops the run on them all the same). With
    `out_dir`, plan.sql, apply-log.json and the reports (the
    scan after in `out_dir`, the scan before in `out_dir/before`) are written there, even when a
    step fails. One run at a time per `out_dir` (a lock file there) and per database (an advisory
    lock): a second one is refused before it writes anything.
    """
    from .fix.plan import FixOptions

    config = config or Config()
    fix_opts = plan.options if plan is not None else options or FixOptions()
    if not isinstance(target, Target):
        target = resolve_target(target)
    if out_dir is None:
        return _apply(target, config, fix_opts, None, progress, before_first_change, step_hook, rescan, baseline,
                      confirm, plan, planned, preflight_notes)
    out = ensure_dir(out_dir)
    with out_lock(out):     # before anything is written there: a second run with the same --out is refused
        return _apply(target, config, fix_opts, out, progress, before_first_change, step_hook, rescan, baseline,
                      confirm, plan, planned, preflight_notes)


def _apply(target: Target, config: Config, fix_opts: FixOptions, out: Path | None, progress: Progress | None,
           before_first_change: Callable[[list[str]], object] | None, step_hook: StepHook | None, rescan: bool,
           baseline: ScanResult | None, confirm: Confirm | None, plan: MigrationPlan | None,
           planned: Callable[[MigrationPlan], object] | None = None, preflight_notes: bool = True) -> ApplyResult:
    from .engine.executor import PreflightFailed, refuse_if_running

    made_here = plan is None   # its guards evaluated just now (the executor's flags up front)
    try:
        # one server session for the run: refused here, before the scan, through a transaction pooler
        with connect(target, autocommit=True, session="fix --apply") as conn:
            if planned is None:     # the CLI's `fix` asks once its plan is made (_made_plan), as it did before
                refuse_if_running(conn)     # before the scan and the plan files: the running apply's stay as they are
            # one transaction at a time, the largest locking a partitioned table whole (auditor/lockbudget.py)
            # (named as the command that planned: the CLI's `fix` plans here, through `planned`)
            settings, relations = lockbudget.check(conn, config.schemas, 1, "fix" if planned else "fix --apply",
                                                   fewer=None)
            # the scan before and the plan at once (two connections, each locking every relation it reads)
            together = lockbudget.shortfall(settings, relations, 2, "fix --apply", fewer=None) is None
        if plan is not None or not rescan or not together:
            before = _live_scan(target, config) if rescan else None
            if plan is None:
                plan = _made_plan(target, config, fix_opts, preflight_notes, planned)
        else:
            # independent reads: the scan on a thread of its own while the plan is made; both end before the
            # question, the plan files and the first change
            with ThreadPoolExecutor(1, thread_name_prefix="scan-before") as pool:
                scanning = pool.submit(_live_scan, target, config)
                plan = _made_plan(target, config, fix_opts, preflight_notes, planned)
                before = scanning.result()
    except DatabaseError as exc:
        if not connection_ended(exc):
            raise
        raise ConnectionEnded(f"the connection to the server ended before the first change "
                              f"({target.scrub(first_line(exc))}); nothing was changed: run fix --apply again "
                              "when the server answers") from None
    the_plan = plan
    if the_plan.refused():
        # before the question, the backup and the plan files: the preflight would refuse it (shares.py)
        raise PreflightFailed("\n".join(the_plan.refused()))
    if confirm is not None and the_plan.pending:
        confirm(the_plan, before)     # the CLI's question, on the very plan that runs; it raises to stop
    reporting = ThreadPoolExecutor(1, thread_name_prefix="report-before")
    report_before = None
    if out is not None:
        write_plan(the_plan, out)
        if before is not None:
            # the report before: its findings.json now, before the first change; the rest (CSV, HTML, ...) on a
            # thread beside the first steps, which mostly wait on the server (0.4 s of rendering, pandas' import
            # included, no longer ahead of the first change); done before this function returns, however it ends
            plan_dict = the_plan.to_dict()
            verdict = judge(before, plan_dict, accept=config.accept, baseline=baseline)
            write_json(before, ensure_dir(out / "before") / "findings.json", verdict)
            report_before = reporting.submit(_write_reports, before, out / "before", verdict, plan=plan_dict)
    try:
        result, the_plan, backups = _execute(target, config, fix_opts, out, progress, before_first_change, step_hook,
                                             the_plan, made_here)
    finally:
        reporting.shutdown(wait=True)   # the report before is whole, however the run ended
    if report_before is not None:
        report_before.result()          # its error, if any, is the run's (the steps' own went up above)
    result.before = before
    if before is not None:      # rescan: the scans before and after
        try:
            result.after = _live_scan(target, config)
        except DatabaseError as exc:
            if not connection_ended(exc):
                raise
            raise ConnectionEnded(f"every step of the migration finished ({len(result.changed)} in this run), then "
                                  f"the connection to the server ended during the scan after it "
                                  f"({target.scrub(first_line(exc))}); the database is consistent: run fix --apply "
                                  "again when the server answers (nothing is left to do: it verifies and reports)"
                                  ) from None
        result.problems.extend(unrepaired(result.after, the_plan))
        plan_dict = the_plan.to_dict()
        result.verdict = judge(result.after, plan_dict, accept=config.accept, baseline=baseline)
        if out is not None:
            write_scan(result.after, out, verdict=result.verdict)
            _write_fix_report(result, out / "report.html", baseline,
                              backup_text(backups[0] if backups else None, before_first_change is not None))
    return result


def _execute(target: Target, config: Config, fix_opts: FixOptions, out: Path | None, progress: Progress | None,
             before_first_change: Callable[[list[str]], object] | None, step_hook: StepHook | None,
             the_plan: MigrationPlan, made_here: bool) -> tuple[ApplyResult, MigrationPlan, list]:
    """The executor's run, and again with a new plan where a partition created during it is not covered: the
    result, the plan that ran last and what the backup hook returned."""
    from .engine.executor import Executor
    from .fix.coverage import uncovered
    from .fix.make import make_plan

    backups: list = []     # what the backup hook returned, for the report after

    def backup_first(tables: list[str]) -> object:
        assert before_first_change is not None
        taken = before_first_change(tables)
        backups.append(taken)
        return taken

    first_change: Callable[[list[str]], object] | None = backup_first if before_first_change is not None else None
    for attempt in range(1, REPLANS + 2):
        executor = Executor(target, the_plan, progress=progress, before_first_change=first_change,
                            step_hook=step_hook, fresh=made_here)
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
        first_change = None      # the backup, if any, was taken
        with connect(target, autocommit=True) as conn:
            the_plan = make_plan(conn, config, fix_opts, serial=True)
        made_here = True
        if out is not None:
            write_plan(the_plan, out)
    return result, the_plan, backups


def _made_plan(target: Target, config: Config, fix_opts: FixOptions, preflight_notes: bool,
               planned: Callable[[MigrationPlan], object] | None) -> MigrationPlan:
    from .engine.executor import refuse_if_running
    from .fix.make import make_plan

    with connect(target, autocommit=True) as conn:
        plan = make_plan(conn, config, fix_opts, preflight_notes, serial=True)
        if planned is not None:
            # before the plan is shown and its files written: the running apply's stay as they are
            refuse_if_running(conn)
    if planned is not None:
        planned(plan)
    return plan


def backup_text(taken, hooked: bool) -> str | None:
    """What the report after `fix --apply` says of the backup taken before the first change."""
    if not hooked:
        return "No backup was taken before the first change (no backup hook: --no-backup)."
    if taken is None:
        return None                       # nothing was changed, so nothing was backed up
    path = getattr(taken, "path", None)
    if path is None:
        return "No backup was needed: the tables the migration changed did not exist yet."
    tables = getattr(taken, "tables", ()) or ()
    restore = getattr(taken, "restore_command", "")
    return (f"Backup taken before the first change: {Path(path).name} ({len(tables)} table"
            f"{'s' if len(tables) != 1 else ''}, pg_dump custom format, beside this report)"
            + (f"; restore with: {restore}" if restore else "") + ".")


def _write_fix_report(result, path: Path, baseline: ScanResult | None = None, backup: str | None = None) -> None:
    """The after-scan's report with the plan and the before/after comparison."""
    from yumai_audit.reports.render import write_html

    plan = result.plan.to_dict()
    finished = {o.step for o in result.outcomes if o.outcome in ("done", "skipped", "unneeded")}
    failed = any(o.outcome == "failed" for o in result.outcomes)
    for step in plan["steps"]:
        # a check step (preflight, verify) that the run got past has passed
        passed = step.get("kind") in ("check", "gate") and not failed
        step["done"] = bool(step["done"]) or step["id"] in finished or passed
    write_html(result.after, path, plan=plan, before=result.before, baseline=baseline, verdict=result.verdict,
               backup=backup)


def unrepaired(result: ScanResult, plan: Plan) -> list[str]:
    """The findings of a scan after the apply that a step of the plan declares it repairs: what a
    finished migration must not have (the checks the steps name, never a list kept here)."""
    parents = partition_parents(result)
    return [f"{f.check}: {f.message}" for f in result.findings
            if any(step_repairs(s, f, parents) for s in plan.steps)]


@dataclasses.dataclass(frozen=True)
class KeptDemo:
    """`demo --keep`: the server left running, its databases and how to stop it."""

    before_dsn: str      # the demo database as it was before its migration (yumai_before)
    after_dsn: str       # the demo database the demo migrated (yumai)
    data_dir: Path       # `yumai-audit demo --stop DATA_DIR` stops the server and removes it


def demo(out_dir: str | Path, progress: Progress | None = None, *,
         keep: bool = False) -> tuple[ApplyResult, Path, KeptDemo | None]:
    """`yumai-audit demo`: an embedded PostgreSQL, a sample yumai database with typical defects, the
    migration applied with its backup and the demo's decisions (`demo.DECISIONS`, written to
    `out_dir/yumai-audit.toml`; `demo.FIX_OPTIONS`), and the reports before and after in `out_dir`.
    With `keep`, the server stays up afterwards with the migrated database and a copy made before the
    migration (`yumai_before`), to run the commands on by hand; a failed demo stops it all the same."""
    from .demo import DECISIONS, FIX_OPTIONS, build_demo_database, decisions_config
    from .embedded import data_dir, embedded_server
    from .fix.backup import backup_hook

    say = progress or (lambda _m: None)
    out = Path(out_dir)
    kept = None
    with embedded_server(keep=keep) as uri:
        with connect(resolve_target(uri), autocommit=True) as conn:
            conn.execute("CREATE DATABASE yumai")
        target = resolve_target(uri.replace("/postgres?", "/yumai?"))
        say("Building the sample database (embedded PostgreSQL)...")
        build_demo_database(target.conninfo)
        if keep:
            with connect(resolve_target(uri), autocommit=True) as conn:
                conn.execute("CREATE DATABASE yumai_before TEMPLATE yumai")
            kept = KeptDemo(uri.replace("/postgres?", "/yumai_before?"), uri.replace("/postgres?", "/yumai?"),
                            data_dir(uri))
        say("Scanning, then applying the migration (yumai-audit fix --apply --include users --missing-users null)...")
        ensure_dir(out)
        (out / "yumai-audit.toml").write_text(DECISIONS, encoding="utf-8")
        result = apply(target, decisions_config(), out_dir=out,
                       before_first_change=backup_hook(target, out, say, throwaway=not keep), options=FIX_OPTIONS)
    return result, out, kept


def stop_demo(data_dir: str | Path) -> None:
    """Stop the server `demo --keep` left running (its data directory) and remove it."""
    from .embedded import stop_kept_server

    stop_kept_server(data_dir)


def write_subscriber_scripts(plan: MigrationPlan, path: str | Path) -> list[Path]:
    """`fix --subscriber-sql FILE`: the script each logical-replication subscriber runs before the apply
    (FILE) and, when the plan converts key columns, the one it runs after (FILE-after); returns the paths."""
    from .fix.subscriber import subscriber_scripts

    written = []
    for target_path, text in subscriber_scripts(plan, path).items():
        write_text(target_path, text)
        written.append(target_path)
    return written


# --- the cutover bridge (auditor/fix/ops/bridge.py) ---------------------------------------------------------

class BridgeInUse(AuditError):
    """`bridge remove` refused: the bridge still registers sessions the application writes the old way."""

    exit_code = 1


def bridge_status(target: Target | str | None, config: Config | None = None):
    """Where the bridge is installed and the sessions it registered per hour of the last day (read-only)."""
    from .bridge_state import read_status

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

    from .bridge_state import drop_statements, installed_query, read_status

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
                    first = first_line(exc)
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
#   the terminal: terminal_message, wrap_text (auditor/terminal.py: long lines wrapped, commands still runnable)


def plan_script(plan: Plan) -> str:
    """The annotated SQL script of a `fix` plan: what `fix --sql` writes and `fix --apply` runs."""
    from .engine.sqlscript import render_script

    return render_script(plan)


def sessions_script(plan: Plan, command: str) -> str:
    """The annotated SQL script of a `sessions close-idle|prune` plan (`command`): what its --sql writes."""
    from .engine.sqlscript import render_script
    from .maintenance.sessions import SCRIPT_OPTIONS, script_title

    return render_script(plan, script_title(command), SCRIPT_OPTIONS)


def render_format(result: ScanResult, fmt: str, verdict=None) -> str:
    """`result` in one of FORMATS other than text (json, junit, sarif, github, markdown)."""
    return RENDERERS[fmt](result, verdict)


def demo_config() -> Config:
    """The demo's configuration (the defaults plus its decisions): what `demo` applies and judges with."""
    from .demo import decisions_config

    return decisions_config()


def check_documentation() -> list[dict]:
    """Every registered check, in the registry's order: id, severity, one-line description and the whole
    documentation (the check class's docstring), for `yumai-audit checks`."""
    import inspect

    from yumai_audit.checks import REGISTRY

    return [{"id": c.id, "severity": str(getattr(c.severity, "value", c.severity)), "description": c.description,
             "documentation": inspect.cleandoc(c.documentation())} for c in REGISTRY]


# --- init: a configuration proposed from the catalog (auditor/discover.py, auditor/init_config.py) ------

def propose_config(target: Target | str | None, schemas: tuple[str, ...] = ()) -> Proposal:
    """What the catalog suggests for the configuration (read-only: one READ ONLY transaction)."""
    from .discover import discover

    return discover(target if isinstance(target, Target) else resolve_target(target), schemas)


def check_init_out(path: str | Path, *, force: bool = False) -> None:
    """Refuse an existing `path` without `force` (before connecting: nothing is read for a file not written)."""
    from .init_config import check_out

    check_out(path, force=force)


def init(target: Target | str | None, out: str | Path = CONFIG_FILE, *, force: bool = False,
         schemas: tuple[str, ...] = ()) -> tuple[Path, Proposal]:
    """`yumai-audit init`: write the commented configuration the catalog suggests to `out`; refuses an
    existing file without `force` (ConfigError, before connecting)."""
    from .init_config import write

    check_init_out(out, force=force)
    proposal = propose_config(target, schemas)
    return write(proposal, out, force=force), proposal

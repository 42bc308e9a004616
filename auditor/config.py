"""Configuration: the guide's defaults, overridden by `yumai-audit.toml` (or `[tool.yumai-audit]` in
pyproject.toml, found in the current directory or a parent), then the environment, then flags.

Precedence is flag > environment > config file > default. Only `DATABASE_URL` (and libpq's `PG*`
variables, read by libpq itself) come from the environment; the rest are flags or the file.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import math
import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from .catalog import QualifiedName, split_dotted
from .errors import ConfigError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as the tomli package (a dependency there only)
    import tomli as tomllib

CONFIG_FILE = "yumai-audit.toml"
# PostgreSQL's timeouts (statement_timeout, lock_timeout) are whole milliseconds up to INT_MAX
MAX_TIMEOUT_SECONDS = 2147483.0
DEFAULT_EXCLUDE_TABLES = ("partman.template_*",)


@dataclass(frozen=True)
class Acceptance:
    """An `[[accept]]` entry: findings of `check` (on `table`, `column` when given) are a decision taken,
    for `reason`, until `until` (inclusive; none: for good)."""

    check: str
    reason: str
    table: str | None = None
    column: str | None = None
    until: date | None = None

    def matches(self, check: str, table: str | None, column: str | None) -> bool:
        return (check == self.check and (self.table is None or self.table == table)
                and (self.column is None or self.column == column))

    def expired(self, today: date) -> bool:
        return self.until is not None and today > self.until

    @property
    def label(self) -> str:
        where = ".".join(p for p in (self.table, self.column) if p)
        return f"{self.check}" + (f" on {where}" if where else "") + (f" until {self.until}" if self.until else "")

    def to_dict(self) -> dict:
        out = {"check": self.check, "reason": self.reason}
        out.update({k: v for k, v in (("table", self.table), ("column", self.column)) if v is not None})
        if self.until is not None:
            out["until"] = self.until.isoformat()
        return out


SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Config:
    key_column: str = "session_id"
    master: QualifiedName = QualifiedName("chatbot", "session_master")
    source: QualifiedName = QualifiedName("chatbot", "conversations")
    users: QualifiedName = QualifiedName("chatbot", "users")
    users_key: str = "id"
    user_column: str = "user_id"
    created_at_column: str = "created_at"
    schemas: tuple[str, ...] = ()  # empty: every user schema
    sample_size: int = 20
    checks: tuple[str, ...] = ()  # empty: every registered check
    timeout_seconds: float | None = None
    verify_declared: bool = False  # also count rows violating valid (not only NOT VALID) foreign keys
    ignore: tuple[str, ...] = ()   # "schema.table.column" or "schema.table": never reported as implied FKs
    accept: tuple[Acceptance, ...] = ()            # [[accept]]: findings that are a decision taken
    severity: tuple[tuple[str, str], ...] = ()     # [severity] check_id = "error": per-check override
    exclude: tuple[str, ...] = ()  # check ids not to run (after `checks`)
    # schema.table glob patterns (catalog spelling) of tables no check measures and no fix touches;
    # pg_partman's template tables are not key tables (they would get index and FK steps)
    exclude_tables: tuple[str, ...] = DEFAULT_EXCLUDE_TABLES
    # [fix] max_removed_share: the --max-removed-share of `fix` when neither the flag nor the variable is given
    max_removed_share: float | None = None

    def excludes_table(self, name: QualifiedName) -> bool:
        text = f"{name.schema}.{name.name}"
        return any(fnmatch.fnmatchcase(text, pattern) for pattern in self.exclude_tables)

    def as_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, QualifiedName):
                value = str(value)
            elif f.name == "accept":
                value = [a.to_dict() for a in value]
            elif f.name == "severity":
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @property
    def users_reference(self) -> str:
        return f"{self.users}.{self.users_key}"

    @property
    def master_reference(self) -> str:
        return f"{self.master}.{self.key_column}"


_NAMES = {"master", "source", "users"}
_STRINGS = {"key_column", "users_key", "user_column", "created_at_column"}


def _coerce(key: str, value, origin: str):
    if value is None:
        return None
    if key in _NAMES:
        if not isinstance(value, str):
            raise ConfigError(f"{origin}: {key} must be a string like schema.table")
        return QualifiedName.parse(value, f"{origin}: {key}")
    if key in _STRINGS:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{origin}: {key} must be a non-empty string")
        return value
    if key in {"schemas", "checks", "exclude"}:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{origin}: {key} must be a list of names")
        return tuple(v.strip() for v in value)
    if key == "sample_size":
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1000:
            raise ConfigError(f"{origin}: sample_size must be a whole number from 0 to 1000")
        return value
    if key == "timeout_seconds":
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
                or not 0.001 <= value <= MAX_TIMEOUT_SECONDS:
            raise ConfigError(f"{origin}: timeout_seconds must be a number of seconds from 0.001 to "
                              f"{MAX_TIMEOUT_SECONDS:.0f}")
        return float(value)
    if key == "verify_declared":
        if not isinstance(value, bool):
            raise ConfigError(f"{origin}: verify_declared must be true or false")
        return value
    if key == "ignore":
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{origin}: ignore must be a list of \"schema.table.column\" names")
        for v in value:
            if len(split_dotted(v, f"{origin}: ignore")) not in (2, 3):
                raise ConfigError(f"{origin}: ignore entries must be schema.table or schema.table.column, got {v!r}")
        return tuple(v.strip() for v in value)
    if key == "accept":
        return _acceptances(value, origin)
    if key == "severity":
        return _severities(value, origin)
    if key == "exclude_tables":
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
            raise ConfigError(f"{origin}: exclude_tables must be a list of \"schema.table\" patterns (* and ? match)")
        return tuple(v.strip() for v in value)
    if key == "max_removed_share":
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 100:
            raise ConfigError(f"{origin}: [fix] max_removed_share must be a percent from 0 to 100, not {value!r}")
        return float(value)
    raise ConfigError(f"{origin}: unknown setting {key!r}")


FIX_SETTINGS = ("max_removed_share",)   # the keys of the [fix] table


def _fix_settings(value, origin: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{origin}: [fix] must be a table ({', '.join(FIX_SETTINGS)})")
    unknown = sorted(set(value) - set(FIX_SETTINGS))
    if unknown:
        raise ConfigError(f"{origin}: [fix]: unknown setting {unknown[0]!r} (known: {', '.join(FIX_SETTINGS)})")
    return {k: _coerce(k, v, origin) for k, v in value.items()}


def _check_ids() -> set[str]:
    from yumai_audit.checks import REGISTRY

    return {c.id for c in REGISTRY}


def _acceptances(value, origin: str) -> tuple[Acceptance, ...]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{origin}: accept must be [[accept]] tables (check, reason, optional table, column, until)")
    out = []
    known = _check_ids()
    for i, entry in enumerate(value, 1):
        where = f"{origin}: [[accept]] #{i}"
        unknown = sorted(set(entry) - {"check", "reason", "table", "column", "until"})
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}")
        check, reason = entry.get("check"), entry.get("reason")
        if not isinstance(check, str) or check not in known:
            raise ConfigError(f"{where}: check must be a check id, got {check!r}")
        if not isinstance(reason, str) or not reason.strip():
            raise ConfigError(f"{where}: reason is required (why this finding is accepted)")
        for k in ("table", "column"):
            if entry.get(k) is not None and (not isinstance(entry[k], str) or not entry[k]):
                raise ConfigError(f"{where}: {k} must be a non-empty string")
        if entry.get("table") is not None:
            QualifiedName.parse(entry["table"], f"{where}: table")
        until = entry.get("until")
        if until is not None:
            if isinstance(until, str):
                try:
                    until = date.fromisoformat(until)
                except ValueError:
                    raise ConfigError(f"{where}: until must be a date (YYYY-MM-DD), got {until!r}") from None
            if not isinstance(until, date) or hasattr(until, "hour"):
                raise ConfigError(f"{where}: until must be a date (YYYY-MM-DD), got {until!r}")
        out.append(Acceptance(check, reason.strip(), entry.get("table"), entry.get("column"), until))
    return tuple(out)


def _severities(value, origin: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise ConfigError(f'{origin}: severity must be a table of check_id = "error" | "warning" | "info"')
    known = _check_ids()
    for check, sev in value.items():
        if check not in known:
            raise ConfigError(f"{origin}: [severity]: unknown check id {check!r}")
        if sev not in SEVERITIES:
            raise ConfigError(f"{origin}: [severity] {check} must be one of {', '.join(SEVERITIES)}, got {sev!r}")
    return tuple(sorted(value.items()))


PYPROJECT = "pyproject.toml"
PYPROJECT_TABLE = "yumai-audit"   # [tool.yumai-audit]


def _read_toml(file: Path) -> dict:
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {file} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {file} is a directory, not a file") from None
    except OSError as exc:
        raise ConfigError(f"config file {file} cannot be read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None


def _tool_table(data: dict) -> dict | None:
    tool = data.get("tool")
    return tool.get(PYPROJECT_TABLE) if isinstance(tool, dict) else None


def find_config(start: str | Path | None = None) -> Path | None:
    """The configuration file that applies in `start` (default: the current directory): the first directory,
    going up from `start` to the root, that holds `yumai-audit.toml` or a pyproject.toml with a
    `[tool.yumai-audit]` table (yumai-audit.toml first), as sqlfluff and Squawk look for theirs."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        own = folder / CONFIG_FILE
        if own.exists():   # a directory of that name is reported when it is read, not passed over
            return own
        pyproject = folder / PYPROJECT
        if pyproject.is_file():
            try:
                ours = _tool_table(_read_toml(pyproject)) is not None
            except ConfigError:   # another tool's broken pyproject.toml is not ours to judge
                ours = False
            if ours:
                return pyproject
    return None


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> Config:
    """Build the configuration: defaults, then the file (explicit path, else the one `find_config` finds), then
    flags. A pyproject.toml is read from its `[tool.yumai-audit]` table."""
    values: dict = {}
    file = Path(path) if path else find_config()
    if file is not None:
        data = _read_toml(file)
        if file.name == PYPROJECT and _tool_table(data) is not None:
            section = _tool_table(data)
        else:
            section = data.get("yumai-audit", data)
        if not isinstance(section, dict):
            raise ConfigError(f"config file {file}: [yumai-audit] must be a table")
        for key, value in section.items():
            if key == "fix":
                values.update(_fix_settings(value, str(file)))
            elif key in FIX_SETTINGS:
                raise ConfigError(f"{file}: {key} belongs under [fix]")
            else:
                values[key] = _coerce(key, value, str(file))
    for key, value in (overrides or {}).items():
        coerced = _coerce(key, value, "option")
        if coerced is not None and coerced != ():
            values[key] = coerced
    return Config(**values)


def env_dsn() -> str | None:
    return os.environ.get("DATABASE_URL") or None

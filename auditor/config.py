"""Configuration: the guide's defaults, overridden by `yumai-audit.toml`, then the environment, then flags.

Precedence is flag > environment > config file > default. Only `DATABASE_URL` (and libpq's `PG*`
variables, read by libpq itself) come from the environment; the rest are flags or the file.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as the tomli package (a dependency there only)
    import tomli as tomllib

CONFIG_FILE = "yumai-audit.toml"
# PostgreSQL's timeouts (statement_timeout, lock_timeout) are whole milliseconds up to INT_MAX
MAX_TIMEOUT_SECONDS = 2147483.0
DEFAULT_EXCLUDE_TABLES = ("partman.template_*",)
_DOTTED = re.compile(r'^(?:"[^"]+"|[^."]+)(?:\.(?:"[^"]+"|[^."]+))*$')


@dataclass(frozen=True, order=True)
class QualifiedName:
    """A catalog name (schema, table), spelled as in the catalog: no quoting, case preserved."""

    schema: str
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"

    @classmethod
    def parse(cls, text: str, what: str) -> "QualifiedName":
        parts = split_dotted(text, what)
        if len(parts) != 2:
            raise ConfigError(f"{what} must be schema.table, got {text!r}")
        return cls(*parts)


def split_dotted(text: str, what: str) -> list[str]:
    """Split `a.b.c`; a part in double quotes may contain dots and keeps its case."""
    text = text.strip()
    if not text or not _DOTTED.match(text):
        raise ConfigError(f"{what}: cannot read {text!r} as a dotted name")
    parts = re.findall(r'"([^"]+)"|([^."]+)', text)
    return [quoted or plain for quoted, plain in parts]


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
    exclude: tuple[str, ...] = ()  # check ids not to run (after `checks`)
    # schema.table glob patterns (catalog spelling) of tables no check measures and no fix touches;
    # pg_partman's template tables are not key tables (they would get index and FK steps)
    exclude_tables: tuple[str, ...] = DEFAULT_EXCLUDE_TABLES

    def excludes_table(self, name: QualifiedName) -> bool:
        text = f"{name.schema}.{name.name}"
        return any(fnmatch.fnmatchcase(text, pattern) for pattern in self.exclude_tables)

    def as_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, QualifiedName):
                value = str(value)
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
    if key == "exclude_tables":
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
            raise ConfigError(f"{origin}: exclude_tables must be a list of \"schema.table\" patterns (* and ? match)")
        return tuple(v.strip() for v in value)
    raise ConfigError(f"{origin}: unknown setting {key!r}")


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> Config:
    """Build the configuration: defaults, then the file (explicit path, or ./yumai-audit.toml), then flags."""
    values: dict = {}
    file = Path(path) if path else Path(CONFIG_FILE)
    if path or file.exists():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {file} does not exist") from None
        except IsADirectoryError:
            raise ConfigError(f"config file {file} is a directory, not a file") from None
        except OSError as exc:
            raise ConfigError(f"config file {file} cannot be read: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None
        section = data.get("yumai-audit", data)
        if not isinstance(section, dict):
            raise ConfigError(f"config file {file}: [yumai-audit] must be a table")
        for key, value in section.items():
            values[key] = _coerce(key, value, str(file))
    for key, value in (overrides or {}).items():
        coerced = _coerce(key, value, "option")
        if coerced is not None and coerced != ():
            values[key] = coerced
    return Config(**values)


def env_dsn() -> str | None:
    return os.environ.get("DATABASE_URL") or None

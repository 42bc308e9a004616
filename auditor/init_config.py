"""The `yumai-audit.toml` that `yumai-audit init` writes: every proposed key (auditor/discover.py) with what
it means, why it was chosen and the alternatives weighed, as comments; the other keys commented out.

Names come from the database: in a value they are TOML basic strings (escaped), in a comment every
control character is written as an escape, so no name can end a comment and add a key of its own.
"""
from __future__ import annotations

import os
import tempfile
import textwrap
from pathlib import Path

from .config import CONFIG_FILE
from .discover import Choice, Proposal, printable
from .errors import ConfigError

WIDTH = 110

# what each key means (the same words as yumai-audit.toml.example)
MEANINGS = {
    "source": "The table whose rows prove a key was real: its keys are backfilled into the master (flag: --source).",
    "key_column": "The key column of every key table: the tables holding it are audited and migrated "
                  "(flag: --key-column).",
    "master": "The master table the migration creates and every key table references (flag: --master).",
    "users": "The users table (flag: --users): the user checks compare the user column with its key.",
    "users_key": "The users table's key.",
    "user_column": "The user column of the key tables.",
    "created_at_column": "The timestamp column of the key tables: first activity, weekly charts, watch --since, "
                         "close-idle.",
}

SCHEMAS_LINE = "# schemas = []                 # audit only these schemas; empty: every user schema\n"
OTHER_KEYS = f"""\
# The other keys keep their defaults; yumai-audit.toml.example (or docs/configuration.md) lists them all:
{SCHEMAS_LINE}# exclude_tables = ["partman.template_*"]
# [fix]
# max_removed_share = 5.0      # refuse a plan that takes out more than this percent of a table's rows
"""


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def comment(text: str, indent: str = "") -> list[str]:
    wrapped = textwrap.wrap(printable(text), WIDTH - 2 - len(indent), break_long_words=False,
                            break_on_hyphens=False) or [""]
    return [f"# {indent}{line}" if i == 0 else f"# {indent}  {line}" for i, line in enumerate(wrapped)]


def _key(key: str, choice: Choice) -> list[str]:
    lines = comment(MEANINGS[key])
    lines += comment(("Chosen: " if choice.value is not None else "Not set: ") + choice.why)
    listing = False     # after a line ending in ":", the lines up to the next such line are its items
    for alternative in choice.alternatives:
        header = alternative.endswith(":")
        lines += comment(alternative, indent="  " if listing and not header else "")
        listing = listing or header
    setting = f"{key} = {toml_string(choice.value) if choice.value is not None else '...'}"
    lines.append(setting if choice.value is not None else f"# {key} = ...")
    return lines


def render(proposal: Proposal) -> str:
    """The whole file."""
    lines = [
        f"# yumai-audit configuration proposed by `yumai-audit init` from the catalog of database "
        f"{printable(proposal.database)}.",
        "# Review every key before the first `fix`: each says why it was chosen and what else was weighed.",
        "# Precedence: command-line flag > environment (DATABASE_URL) > this file > default.",
        "# Names are schema.table in catalog spelling; a part holding a dot is double-quoted.",
        "",
    ]
    for key, choice in proposal.choices():
        lines += _key(key, choice) + [""]
    if proposal.schemas:
        lines += ["# Audit only these schemas (flag: --schema): the ones init looked at (init --schema).",
                  "schemas = [" + ", ".join(toml_string(s) for s in proposal.schemas) + "]", ""]
    return "\n".join(lines) + "\n" + (OTHER_KEYS if not proposal.schemas else OTHER_KEYS.replace(SCHEMAS_LINE, ""))


def write(proposal: Proposal, path: str | Path, *, force: bool = False) -> Path:
    """Write the proposal to a new file `path`; with `force` over an existing one, all of it or nothing (a
    temporary file renamed over it)."""
    path = Path(path)
    check_out(path, force=force)
    text = render(proposal)
    if not force:     # created here or not at all: a file made since check_out is not overwritten
        try:
            with open(path, "x", encoding="utf-8") as f:
                f.write(text)
        except FileExistsError:
            raise exists(path) from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def exists(path: Path) -> ConfigError:
    return ConfigError(f"init: {path} exists; pass --force to overwrite it")


def check_out(path: str | Path, *, force: bool = False) -> None:
    """Refuse before connecting: an existing file without `force`, a directory, a missing folder."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"init: {path} is a directory; --out names the file to write (default {CONFIG_FILE})")
    if path.exists() and not force:
        raise exists(path)
    if not (path.parent if str(path.parent) else Path(".")).is_dir():
        raise ConfigError(f"init: the folder of {path} does not exist")

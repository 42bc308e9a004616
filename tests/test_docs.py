"""Every shell, SQL and Python block of README.md and docs/*.md runs, as written, on a real PostgreSQL.

A fenced ```bash / ```sh / ```shell / ```sql / ```python block is run unless the line right before its
fence says otherwise:

- `<!-- not-runnable: <reason> -->`: not run (a placeholder host, an install, the test suite itself);
- `<!-- run-by: tests/<file>.py::<test> -->`: run as written by that test (it must exist);
- `<!-- runs-on: migrated -->`: run on the demo database after its migration, not before it.

Each block gets a database of its own: a copy of the demo's (auditor/demo.py) as it is before the migration,
or after `fix --apply --include users --missing-users null` with the demo's decisions. Shell blocks run in
bash in an empty folder, with `DATABASE_URL` and libpq's `PG*` variables naming that database and this
venv's `yumai-audit` first on PATH; a command fails the block on a non-zero exit, except `yumai-audit`'s
exit 1 (findings: what a scan of the demo database reports). SQL blocks run through psql with
ON_ERROR_STOP; Python blocks in this interpreter with the same environment.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

ROOT = Path(__file__).resolve().parent.parent
LANGUAGES = {"bash": "shell", "sh": "shell", "shell": "shell", "sql": "sql", "python": "python"}
_FENCE = re.compile(r"^```(\w*)\s*$")
_MARKER = re.compile(r"^<!--\s*([a-z-]+):\s*(.*?)\s*-->\s*$")
MARKERS = ("not-runnable", "run-by", "runs-on")
STATES = ("demo", "migrated")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int            # the fence's line, 1-based
    language: str        # shell, sql, python
    text: str
    marker: tuple[str, str] | None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"


def doc_files() -> list[Path]:
    """README.md and every docs/*.md that exists (pages other branches add are picked up when they land)."""
    return [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))] if p.is_file()]


def blocks_of(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file in one of LANGUAGES, each with the marker on the line before it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
        language = LANGUAGES.get(fence.group(1).lower())
        if language:
            before = _MARKER.match(lines[i - 1]) if i else None
            marker = (before.group(1), before.group(2)) if before and before.group(1) in MARKERS else None
            found.append(Block(path, i + 1, language, "\n".join(lines[i + 1:end]) + "\n", marker))
        i = end + 1
    return found


def all_blocks() -> list[Block]:
    return [b for path in doc_files() for b in blocks_of(path)]


def _runnable() -> list[Block]:
    return [b for b in all_blocks() if b.marker is None or b.marker[0] == "runs-on"]


# --- the markers ---------------------------------------------------------------------------------------

def test_every_marker_is_well_formed():
    wrong = []
    for b in all_blocks():
        if b.marker is None:
            continue
        kind, value = b.marker
        if kind == "not-runnable" and len(value) < 5:
            wrong.append(f"{b.where}: not-runnable needs a reason")
        elif kind == "runs-on" and value not in STATES:
            wrong.append(f"{b.where}: runs-on takes one of {', '.join(STATES)}, not {value!r}")
        elif kind == "run-by":
            file, _, test = value.partition("::")
            source = ROOT / file
            if not (file.startswith("tests/") and source.is_file() and test
                    and re.search(rf"^def {re.escape(test)}\(", source.read_text(encoding="utf-8"), re.M)):
                wrong.append(f"{b.where}: run-by names no test: {value!r}")
    assert wrong == []


def test_the_reader_finds_blocks_and_markers(tmp_path):
    """The block reader itself (else every test below could pass on nothing)."""
    page = tmp_path / "p.md"
    page.write_text("text\n```bash\necho one\n```\n<!-- not-runnable: a placeholder host -->\n```sql\nSELECT 1;\n```\n"
                    "```yaml\na: 1\n```\n<!-- runs-on: migrated -->\n```python\nprint(2)\n```\n")
    found = blocks_of(page)
    assert [(b.line, b.language, b.marker) for b in found] == [
        (2, "shell", None), (6, "sql", ("not-runnable", "a placeholder host")), (13, "python", ("runs-on", "migrated"))]
    assert found[0].text == "echo one\n"
    assert len(_runnable()) >= 5   # the README alone has that many runnable blocks


# --- running them --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def templates(pg_server):
    """Two template databases: the demo's before its migration and after it (made once per run)."""
    from yumai_audit.api import apply, demo_config
    from yumai_audit.demo import FIX_OPTIONS, build_demo_database

    names = {state: f"yumai_doc_{state}_{uuid.uuid4().hex[:8]}" for state in STATES}
    with psycopg.connect(pg_server.conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(names["demo"])))
        build_demo_database(pg_server.database(names["demo"]))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(names["migrated"]), sql.Identifier(names["demo"])))
    result = apply(pg_server.database(names["migrated"]), demo_config(), options=FIX_OPTIONS)
    assert result.ok
    try:
        yield names
    finally:
        with psycopg.connect(pg_server.conninfo, autocommit=True) as conn:
            for name in names.values():
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def block_database(pg_server, templates):
    made = []

    def make(state: str) -> str:
        name = f"yumai_t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_server.conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(templates[state])))
        made.append(name)
        return pg_server.database(name)

    yield make
    with psycopg.connect(pg_server.conninfo, autocommit=True) as conn:
        for name in made:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def environment(conninfo: str) -> dict[str, str]:
    """DATABASE_URL and the PG* variables for `conninfo`, and this venv's programs first on PATH."""
    params = conninfo_to_dict(conninfo)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "DATABASE_URL"}
    env.update(DATABASE_URL=conninfo, PYTHONWARNINGS="ignore", NO_COLOR="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    for key, var in (("host", "PGHOST"), ("port", "PGPORT"), ("user", "PGUSER"), ("dbname", "PGDATABASE"),
                     ("password", "PGPASSWORD")):
        if params.get(key):
            env[var] = params[key]
    return env


# a failing command ends the block, except yumai-audit's exit 1 (findings), which a scan of the demo reports
SHELL_PRELUDE = """set -E -o pipefail
trap '__rc=$?; case "$BASH_COMMAND" in yumai-audit\\ *|*=*\\ yumai-audit\\ *) [ "$__rc" -le 1 ] || exit "$__rc";; *) exit "$__rc";; esac' ERR
"""


def run_block(block: Block, conninfo: str, folder: Path) -> subprocess.CompletedProcess:
    env = environment(conninfo)
    if block.language == "shell":
        args = ["bash", "-c", SHELL_PRELUDE + block.text + "exit 0\n"]   # a failure exited above
    elif block.language == "sql":
        args = ["psql", "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1", "-f", "-"]
    else:
        args = [sys.executable, "-c", block.text]
    stdin = block.text if block.language == "sql" else None
    return subprocess.run(args, input=stdin, capture_output=True, text=True, env=env, cwd=folder, timeout=600)


@pytest.mark.parametrize("block", _runnable(), ids=lambda b: b.where)
def test_block_runs(block, block_database, tmp_path):
    state = block.marker[1] if block.marker else "demo"
    proc = run_block(block, block_database(state), tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{block.where} exited {proc.returncode}:\n{output[-3000:]}"
    assert "Traceback" not in output, f"{block.where}:\n{output[-3000:]}"


def test_a_failing_block_fails(block_database, tmp_path):
    """The runner itself: a usage error (exit 2), a failing command and a failing SQL statement fail their
    block; a scan's findings (exit 1) do not."""
    conninfo = block_database("demo")
    def block(language: str, text: str) -> Block:
        return Block(ROOT / "README.md", 1, language, text, None)
    assert run_block(block("shell", "yumai-audit scan --no-such-option\necho after\n"), conninfo, tmp_path).returncode == 2
    assert run_block(block("shell", "false\necho after\n"), conninfo, tmp_path).returncode == 1
    scan = run_block(block("shell", "yumai-audit scan --out out\necho after\n"), conninfo, tmp_path)
    assert (scan.returncode, scan.stdout.strip().splitlines()[-1]) == (0, "after")
    assert run_block(block("sql", "SELECT * FROM chatbot.nope;\n"), conninfo, tmp_path).returncode == 3
    assert run_block(block("sql", "SELECT count(*) FROM chatbot.users;\n"), conninfo, tmp_path).returncode == 0


# --- the front page ------------------------------------------------------------------------------------

def test_the_readme_is_a_front_page():
    """Under 1,500 words, and a newcomer meets the first `scan --dsn` within the first 400."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.split()) < 1500
    assert len(text[:text.index("yumai-audit scan --dsn")].split()) <= 400


_LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def test_every_relative_link_resolves():
    missing = []
    for page in doc_files():
        for target, _anchor in _LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"^[a-z]+:", target):
                continue
            path = (page.parent / target).resolve()
            if not path.exists():
                missing.append(f"{page.relative_to(ROOT).as_posix()}: {target}")
    assert missing == []

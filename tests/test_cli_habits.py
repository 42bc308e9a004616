"""What users of sqlfluff, Squawk, psql and terraform expect of a command line: -V, a command listing the
checks with their documentation, colour on a terminal only (and never under NO_COLOR), -q / -v, option
ranges in --help, no help that points into the source."""
from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from yumai_audit import __version__
from yumai_audit.checks import CHECK_IDS
from yumai_audit.cli import cli
from yumai_audit.demo import build_demo_database

ANSI = re.compile(r"\x1b\[[0-9;]*m")
YUMAI = str(Path(sys.executable).parent / "yumai-audit")


def invoke(*args, env=None):
    return CliRunner().invoke(cli, list(args), env=env or {})


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(flag):
    result = invoke(flag)
    assert (result.exit_code, result.output) == (0, f"yumai-audit, version {__version__}\n")


def test_checks_lists_every_check_once():
    result = invoke("checks")
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.output.splitlines()[:len(CHECK_IDS)]]
    assert listed == list(CHECK_IDS)
    assert "orphaned_session_ids       error    Rows whose session id is in neither" in result.output


def test_checks_shows_a_checks_documentation():
    result = invoke("checks", "null_session_ids", "orphaned_user_ids")
    assert result.exit_code == 0
    assert result.output.startswith("null_session_ids (warning)\nRows with no session id at all.\n\nWhat is wrong:")
    assert "\norphaned_user_ids (error)\n" in result.output
    assert result.output.count("Why it matters") == 2
    bad = invoke("checks", "nope")
    assert bad.exit_code == 2 and "no check 'nope'" in bad.output


def test_no_help_points_into_the_source():
    def commands(group: click.Group, path=()):
        for name, command in group.commands.items():
            yield (*path, name)
            if isinstance(command, click.Group):
                yield from commands(command, (*path, name))

    seen = []
    for path in [(), *commands(cli)]:
        text = invoke(*path, "--help").output
        seen.append(path)
        assert not re.search(r"auditor/|\.py\b", text), (path, re.findall(r".*(?:auditor/|\.py\b).*", text))
    assert ("fix",) in seen and ("bridge", "remove") in seen



def _options(help_text: str) -> set[str]:
    """The long option names a --help lists."""
    return set(re.findall(r"^\s+(?:-\w, )?(--[a-z][\w-]*)", help_text, re.M))


def test_bridge_commands_offer_only_options_that_mean_something_there():
    """The bridge is found by its trigger in every schema: no configuration, table or check selection."""
    assert _options(invoke("bridge", "status", "--help").output) == {"--dsn", "--format", "--help"}
    assert _options(invoke("bridge", "remove", "--help").output) == {"--dsn", "--force", "--lock-timeout", "--help"}
    assert {"--dsn", "--config", "--checks", "--schema"} <= _options(invoke("scan", "--help").output)   # the reader
    for args in (["status", "--checks", "orphaned_session_ids"], ["remove", "--config", "x.toml"]):
        result = invoke("bridge", *args, "--dsn", "postgresql://nobody@127.0.0.1:1/none")
        assert result.exit_code == 2 and "No such option" in result.output, result.output
    # --lock-timeout is a number of seconds PostgreSQL can take, refused before any connection
    result = invoke("bridge", "remove", "--dsn", "postgresql://nobody@127.0.0.1:1/none", "--lock-timeout", "nan")
    assert result.exit_code == 2 and "not a number of seconds" in result.output, result.output

def test_fix_help_shows_the_ranges():
    text = " ".join(invoke("fix", "--help").output.split())
    assert "[default: 5000; 1<=x<=10000000]" in text            # --batch-size
    assert "[default: 2.0; 0<x<=3600]" in text                  # --lock-timeout
    assert "[default: 300.0; 0<x<=604800]" in text              # --wait-timeout
    assert "[default: 30; 0<=x<=5270400]" in text               # --active-window
    # the value itself is checked once, by FixOptions, with the API's message (tests/test_preflight.py)
    result = invoke("fix", "--dsn", "postgresql://nobody@127.0.0.1:1/none", "--batch-size", "0")
    assert result.exit_code == 2 and "batch size must be at least 1" in result.output


def test_quiet_and_verbose(db, tmp_path):
    build_demo_database(db.conninfo)
    quiet = invoke("-q", "scan", "--dsn", db.conninfo, "--out", str(tmp_path / "q"))
    assert quiet.exit_code == 1
    assert quiet.stdout.splitlines() == [
        "Verdict: Needs a decision. Some error findings are not repaired by the plan: decide on each (below).",
        f"Report: {tmp_path / 'q' / 'report.html'}"] or quiet.stdout.splitlines()[0].startswith("Verdict: ")
    assert len(quiet.stdout.splitlines()) == 2 and "FAIL" not in quiet.stdout
    normal = invoke("scan", "--dsn", db.conninfo, "--out", str(tmp_path / "n"))
    assert normal.stdout.splitlines()[0] == quiet.stdout.splitlines()[0]
    assert "  FAIL    missing_master_rows (1 finding)" in normal.stdout
    assert "configuration:" not in normal.stderr
    (tmp_path / "yumai-audit.toml").write_text("sample_size = 3\n")   # the test runs in tmp_path
    verbose = invoke("-v", "scan", "--dsn", db.conninfo, "--out", str(tmp_path / "v"))
    assert f"yumai-audit: configuration: {tmp_path / 'yumai-audit.toml'}" in verbose.stderr
    assert invoke("-q", "-v", "checks").exit_code == 2


def _on_a_terminal(args: list[str], env: dict[str, str]) -> str:
    """Run the installed command with its stdout on a pseudo-terminal; return what it printed."""
    main, child = pty.openpty()
    proc = subprocess.Popen(args, stdout=child, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env)
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:   # the terminal closed: the command ended
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=300)
    os.close(main)
    return b"".join(chunks).decode()


def test_colour_on_a_terminal_only_and_never_under_no_color(db, tmp_path):
    build_demo_database(db.conninfo)
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    args = [YUMAI, "scan", "--dsn", db.conninfo, "--out", str(tmp_path / "out"), "--no-progress"]
    coloured = _on_a_terminal(args, env)
    fail_lines = [line for line in coloured.splitlines() if "missing_master_rows (1 finding)" in line]
    assert fail_lines and ANSI.search(fail_lines[0]), coloured[:500]
    verdict = coloured.splitlines()[0]
    assert "Verdict: Needs a decision" in verdict and "\x1b[31m" in verdict   # red: someone must decide
    assert not ANSI.search(next(line for line in coloured.splitlines() if "PASS" in line))
    plain = _on_a_terminal(args, {**env, "NO_COLOR": "1"})
    assert "Verdict: Needs a decision" in plain and not ANSI.search(plain)
    piped = subprocess.run(args, capture_output=True, text=True, env=env)
    assert "Verdict: Needs a decision" in piped.stdout and not ANSI.search(piped.stdout)

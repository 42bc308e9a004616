"""plan.sql passes Squawk, the migration linter: every deliberate break carries its reason and Squawk's ignore
comment (auditor/fix/lint.py); anything else is a finding (issue 15 §3)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from psycopg import sql
from test_cli import invoke

from yumai_audit.cli import version_text
from yumai_audit.demo import build_demo_database
from yumai_audit.engine.sqlscript import render_step
from yumai_audit.engine.steps import LockMode, Step, step_block
from yumai_audit.fix.lint import DELIBERATE
from yumai_audit.operations import Operation

# on PATH, or beside this interpreter (a venv that is not activated)
SQUAWK = shutil.which("squawk") or shutil.which("squawk", path=str(Path(sys.executable).parent))
needs_squawk = pytest.mark.skipif(SQUAWK is None, reason="squawk is not installed (pip install squawk-cli; the "
                                                          "test extra installs it where PyPI has a wheel for the platform)")


def squawk(path, version_num: int) -> subprocess.CompletedProcess:
    return subprocess.run([SQUAWK, "--reporter", "gcc", f"--pg-version={version_text(version_num)}", str(path)],
                          capture_output=True, text=True, timeout=120)


@needs_squawk
def test_the_demo_plan_passes_squawk(db, tmp_path):
    build_demo_database(db.conninfo)
    path = tmp_path / "plan.sql"
    result = invoke("fix", "--dsn", db.conninfo, "--sql", str(path))
    assert result.exit_code == 1 and "SQL script:" in result.output, result.output   # the demo's user findings: a decision
    proc = squawk(path, db.server.version_num)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = path.read_text().splitlines()
    ignores = [i for i, line in enumerate(lines) if line.startswith("-- squawk-ignore ")]
    assert len(ignores) >= 5   # the master's user_id, ON ONLY, CONCURRENTLY builds, the type change
    for i in ignores:
        assert lines[i - 1].startswith("-- deliberate (") and len(lines[i - 1]) > 60   # with its reason
        assert not lines[i + 1].startswith("--")                                       # right above the statement


@needs_squawk
def test_the_demos_own_plan_sql_has_no_squawk_warning(db, tmp_path):
    """The plan.sql `yumai-audit demo` writes (its options: --include users --missing-users null, its
    decisions), linted by the pinned Squawk: not one warning, not one error."""
    from yumai_audit.api import apply, demo_config
    from yumai_audit.demo import FIX_OPTIONS

    build_demo_database(db.conninfo)
    result = apply(db.conninfo, demo_config(), out_dir=tmp_path, options=FIX_OPTIONS)
    assert result.ok
    text = (tmp_path / "plan.sql").read_text()
    assert "nulled_user_ids" in text and "missing-users:chatbot.conversations" in text   # the users' steps are in it
    proc = squawk(tmp_path / "plan.sql", db.server.version_num)
    assert (proc.returncode, proc.stdout.strip()) == (0, ""), proc.stdout + proc.stderr


@needs_squawk
def test_the_pinned_squawk_runs():
    """The test extra pins squawk-cli: a later release's new rule cannot change the claim unnoticed."""
    pinned = re.search(r'"squawk-cli==([0-9.]+)"', (Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert pinned, "pyproject.toml: the test extra pins squawk-cli=="
    version = subprocess.run([SQUAWK, "--version"], capture_output=True, text=True, timeout=60).stdout.split()
    assert version == ["squawk", pinned.group(1)]


@needs_squawk
def test_a_break_not_in_the_table_is_reported(tmp_path, pg_server):
    step = Step(id="index:s.t", description="an index built without CONCURRENTLY",
                statements=(sql.SQL('CREATE INDEX IF NOT EXISTS "i" ON "s"."t" ("c")'),),
                lock=LockMode.SHARE, tables=("s.t",), operation=Operation.INDEX)
    path = tmp_path / "plan.sql"
    path.write_text(render_step(step, 1, 1, step_block(step, 2.0, 5000)) + "\n")
    proc = squawk(path, pg_server.version_num)
    assert proc.returncode == 1 and "require-concurrent-index-creation" in proc.stdout


def test_every_deliberate_break_has_a_reason():
    for d in DELIBERATE:
        assert d.rules and len(d.reason) > 40, d


@needs_squawk
def test_a_plan_with_grouped_partitions_passes_squawk(db, tmp_path):
    """40 daily partitions: the small ones' grouped index builds (not CONCURRENTLY) and, before 18, grouped FK
    adds (validated at once) carry their reasons; Squawk finds nothing else."""
    from test_backfill import DAILY

    db.execute(DAILY.replace("{pk}", ", PRIMARY KEY (id, created_at)").replace("{more}", ""))
    path = tmp_path / "plan.sql"
    result = invoke("fix", "--dsn", db.conninfo, "--sql", str(path))
    assert "SQL script:" in result.output, result.output
    text = path.read_text()
    assert "-- squawk-ignore require-concurrent-index-creation" in text
    assert ("small partitions, a group in one transaction" in text) == (db.server.version_num < 180000)
    proc = squawk(path, db.server.version_num)
    assert proc.returncode == 0, proc.stdout + proc.stderr

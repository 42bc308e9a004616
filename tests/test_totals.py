"""The before-report's totals line carries the apply's estimate (plan.json's `estimate`: seconds and WAL),
and durations are written as `parse_duration` reads them."""
from __future__ import annotations

import html
import json
import re

import pytest
from click.testing import CliRunner

from yumai_audit.cli import cli
from yumai_audit.demo import build_demo_database
from yumai_audit.durations import duration_text, parse_duration
from yumai_audit.model import ScanResult
from yumai_audit.reports.render import human_bytes
from yumai_audit.reports.totals import plan_totals

EMPTY = ScanResult(database={}, generated_at="", config={}, checks=[], findings=[])


@pytest.mark.parametrize(("seconds", "text"), [(0.2, "<1s"), (0.6, "1s"), (12.4, "12s"), (89.4, "89s"), (90, "2m"),
                                               (1500, "25m"), (5340, "89m"), (5400, "1h30m"), (7200, "2h"),
                                               (90061, "25h1m")])
def test_duration_text(seconds, text):
    assert duration_text(seconds) == text
    if text != "<1s":    # written as the options take durations: read back within the rounding
        assert abs(parse_duration(text).total_seconds() - seconds) <= (0.5 if seconds < 90 else 30)


def test_the_totals_end_with_the_estimate():
    plan = {"steps": [{"id": "fk", "kind": "change", "operation": "fk-add", "done": False},
                      {"id": "verify", "kind": "check", "done": False}],
            "estimate": {"steps": 3, "rows": 1000, "seconds": 5400.0, "wal_bytes": 5 * 2**20}}
    assert plan_totals(EMPTY, plan, human_bytes) == [
        "1 foreign key to add", "no table rewritten",
        "about 1h30m and 5.0 MB of WAL to apply (estimated from the plan's 3 steps and the key tables' estimated rows)"]
    del plan["estimate"]     # a plan.json written before plans carried their estimate
    assert plan_totals(EMPTY, plan, human_bytes) == ["1 foreign key to add", "no table rewritten"]
    done = {"steps": [{"id": "fk", "kind": "change", "operation": "fk-add", "done": True}],
            "estimate": {"steps": 1, "rows": 0, "seconds": 0.1, "wal_bytes": 50_000}}
    assert plan_totals(EMPTY, done, human_bytes) == []     # nothing to do: no line, no estimate


def test_the_dry_runs_report_shows_the_plans_estimate(db, tmp_path):
    build_demo_database(db.conninfo)
    result = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output      # the demo's user findings need a decision
    estimate = json.loads((tmp_path / "plan.json").read_text())["estimate"]
    assert set(estimate) == {"steps", "rows", "seconds", "wal_bytes"} and estimate["steps"] > 0
    expected = (f"about {duration_text(estimate['seconds'])} and {human_bytes(estimate['wal_bytes'])} of WAL to "
                f"apply (estimated from the plan's {estimate['steps']} steps and the key tables' estimated rows)")
    page = (tmp_path / "report.html").read_text()
    (totals,) = re.findall(r'<p class="totals">(.*?)</p>', page, re.S)
    parts = [html.unescape(p) for p in re.findall(r'<span class="total">(.*?)</span>', totals, re.S)]
    assert parts[-1] == expected and "foreign keys to add" in parts[0]

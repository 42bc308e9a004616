"""`yumai-audit report`: renders from saved findings; exit 0 ready, 1 blocked, 2 bad input (one line)."""
from __future__ import annotations

import json

from click.testing import CliRunner
from report_fixtures import plan_dict, scan_result

from yumai_audit.cli import cli
from yumai_audit.outputs import write_json


def run(*args):
    return CliRunner().invoke(cli, list(args))


def saved(tmp_path, name, result):
    path = tmp_path / name
    write_json(result, path)
    return path


def test_report_from_saved_findings_blocked_exits_1(tmp_path):
    findings = saved(tmp_path, "findings.json", scan_result())
    out = tmp_path / "out"
    res = run("report", str(findings), "--out", str(out))
    assert res.exit_code == 1, res.output
    assert res.output.splitlines()[0].startswith("Verdict: Needs a decision.")
    assert res.output.splitlines()[1] == f"Report: {out / 'report.html'}"
    html = (out / "report.html").read_text()
    assert "Needs a decision" in html and 'id="comparison"' not in html
    assert sorted(p.name for p in out.iterdir()) == [
        "findings.csv", "junit.xml", "report.html", "results.sarif", "samples-null_session_ids.csv",
        "samples-orphaned_session_ids.csv", "summary.md"]


def test_report_with_compare_and_plan(tmp_path):
    before = saved(tmp_path, "before.json", scan_result(generated_at="2026-11-01T09:00:00+00:00"))
    after = saved(tmp_path, "after.json", scan_result(blocked=False, generated_at="2026-11-01T11:00:00+00:00"))
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(plan_dict()))
    res = run("report", str(after), "--compare", str(before), "--plan", str(plan), "--out", str(tmp_path / "r"))
    assert res.exit_code == 0, res.output
    html = (tmp_path / "r" / "report.html").read_text()
    assert 'id="comparison"' in html and 'id="plan"' in html
    assert "Scan before: 2026-11-01T09:00:00+00:00 · scan after: 2026-11-01T11:00:00+00:00" in html


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    good = saved(tmp_path, "findings.json", scan_result())
    not_json = tmp_path / "notes.txt"
    not_json.write_text("hello")
    other_json = tmp_path / "other.json"
    other_json.write_text('{"steps": "no"}')
    cases = [
        (["report", str(tmp_path / "missing.json")], "missing.json: no such file"),
        (["report", str(not_json)], "not a findings.json file"),
        (["report", str(other_json)], "not a findings.json file (version 1)"),
        (["report", str(good), "--compare", str(not_json)], "not a findings.json file"),
        (["report", str(good), "--plan", str(other_json)], "not a plan JSON file (no list of steps)"),
        (["report"], "Missing argument 'FINDINGS.json'"),
    ]
    for args, message in cases:
        res = run(*args, "--out", str(tmp_path / "o")) if len(args) > 1 else run(*args)
        assert res.exit_code == 2, (args, res.output)
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("yumai-audit: error: ") and message in lines[0], res.output
        assert "Traceback" not in res.output


def test_help_says_which_file_is_which():
    res = run("report", "--help")
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert "FINDINGS.json is the scan the report is about (after a fix, the newer scan)" in text
    assert "--compare BEFORE.json" in text and "Example:" in text

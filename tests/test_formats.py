"""The CI formats (JUnit XML, SARIF 2.1.0, GitHub annotations, Markdown), findings.json's schema and
findings.csv's samples (issue 15 §1): each validated, and nothing from the database left unescaped."""
from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
from report_fixtures import scan_result
from test_cli import invoke

from yumai_audit.frames import write_csv
from yumai_audit.model import CheckResult, Finding, ScanResult, Severity, Status
from yumai_audit.scan.formats import (
    check_docs,
    escape_data,
    escape_property,
    findings_json,
    github,
    junit,
    markdown,
    sarif,
)

HOSTILE = 'odd"<schema>&]]>.t%25:a,b\r\nc'
SARIF_SCHEMA = json.loads((Path(__file__).parent / "schemas" / "sarif-schema-2.1.0.json").read_text())


def findings_schema() -> dict:
    return json.loads(resources.files("yumai_audit").joinpath("schemas/findings.schema.json").read_text())


def assert_valid_findings(path: Path) -> dict:
    data = json.loads(path.read_text())
    jsonschema.Draft202012Validator(findings_schema()).validate(data)
    return data


def hostile_result() -> ScanResult:
    r = scan_result(table=HOSTILE)
    r.findings[0].sample = [""]   # an empty malformed key
    r.checks.append(CheckResult("invalid_indexes", Status.ERROR, 1.5, Severity.WARNING, "Invalid indexes",
                                reason="canceling statement due to statement timeout"))
    r.checks.append(CheckResult("duplicate_foreign_keys", Status.PASS, 0.2, Severity.WARNING, "Duplicate FKs"))
    return r


# --- JUnit ----------------------------------------------------------------------------------------------

def test_junit_structure_and_escaping():
    r = hostile_result()
    root = ET.fromstring(junit(r).encode())
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    # one testcase per check and target: one per finding of a failing check, one per other check
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("orphaned_session_ids", f"{HOSTILE}.session_id"),
        ("null_session_ids", "chatbot.conversations.session_id"),
        ("unvalidated_fk", "unvalidated_fk"), ("invalid_indexes", "invalid_indexes"),
        ("duplicate_foreign_keys", "duplicate_foreign_keys")]
    failure = cases[0].find("failure")
    assert failure.get("message") == f"7 rows in {HOSTILE} refer to 3 unknown sessions"   # CR LF kept, escaped
    assert 'sample: [""]' in failure.text
    assert cases[1].find("failure") is None and "[warning]" in cases[1].find("system-out").text
    assert cases[2].find("skipped").get("message") == "no foreign key to validate"
    assert cases[3].find("error").get("message") == "canceling statement due to statement timeout"
    assert not list(cases[4])
    for node in (suite, root):
        assert (node.get("tests"), node.get("failures"), node.get("errors"), node.get("skipped")) == ("5", "1", "1", "1")


# --- SARIF ----------------------------------------------------------------------------------------------

def test_sarif_validates_against_the_2_1_0_schema():
    r = hostile_result()
    log = json.loads(sarif(r))
    jsonschema.Draft4Validator(SARIF_SCHEMA).validate(log)
    (run,) = log["runs"]
    rules = run["tool"]["driver"]["rules"]
    assert [rule["id"] for rule in rules] == [c.check for c in r.checks]
    docs = check_docs()
    assert rules[0]["fullDescription"]["text"] == docs["orphaned_session_ids"]
    assert len(docs["orphaned_session_ids"]) > 80   # the docstring, not the one-line description
    assert [(res["ruleId"], res["level"]) for res in run["results"]] == [
        ("orphaned_session_ids", "error"), ("null_session_ids", "warning")]
    assert run["results"][0]["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == f"{HOSTILE}.session_id"
    assert run["results"][0]["properties"] == {"rows": 7, "keys": 3, "references": "chatbot.session_master.session_id",
                                               "sample": [""]}
    assert run["invocations"][0]["executionSuccessful"] is False


def test_sarif_of_a_real_scan_validates(db, tmp_path):
    from yumai_audit.demo import build_demo_database

    build_demo_database(db.conninfo)
    result = invoke("scan", "--dsn", db.conninfo, "--out", str(tmp_path), "--format", "sarif")
    assert result.exit_code == 1
    log = json.loads(result.stdout)
    jsonschema.Draft4Validator(SARIF_SCHEMA).validate(log)
    findings = assert_valid_findings(tmp_path / "findings.json")
    assert len(log["runs"][0]["results"]) == len(findings["findings"])
    assert json.loads((tmp_path / "results.sarif").read_text()) == log
    # JUnit from the same scan: one testcase per finding, one per check without findings
    root = ET.parse(tmp_path / "junit.xml").getroot()
    with_findings = {f["check"] for f in findings["findings"]}
    expected = len(findings["findings"]) + sum(1 for c in findings["checks"] if c["check"] not in with_findings)
    assert len(root.findall("testsuite/testcase")) == expected
    errors = sum(1 for f in findings["findings"] if f["severity"] == "error")
    assert int(root.get("failures")) == errors == len(root.findall("testsuite/testcase/failure"))


# --- GitHub annotations ---------------------------------------------------------------------------------

def test_github_annotation_escaping():
    assert escape_data("50% done\r\nnext") == "50%25 done%0D%0Anext"
    assert escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"
    lines = github(hostile_result()).splitlines()
    assert len(lines) == 3
    title, _, message = lines[0].partition("::")[2].partition("::")
    assert lines[0].startswith("::error title=")
    assert title == "error title=orphaned_session_ids on " + HOSTILE.replace("%", "%25").replace(":", "%3A").replace(
        ",", "%2C").replace("\r", "%0D").replace("\n", "%0A") + ".session_id"
    assert "\r" not in message and "\n" not in message and "%0D%0A" in message
    assert lines[1].startswith("::warning title=null_session_ids on chatbot.conversations.session_id::")
    assert lines[2] == ("::error title=invalid_indexes did not finish::"
                        "canceling statement due to statement timeout")


# --- Markdown -------------------------------------------------------------------------------------------

def test_markdown_summary_escapes_and_counts():
    text = markdown(hostile_result())
    assert text.startswith("## yumai-audit: ❌ Needs a decision\n")   # the verdict, as the report states it
    assert "| `orphaned_session_ids` | error | fail | 1 | 7 rows |" in text
    assert "| `duplicate_foreign_keys` | warning | pass | 0 | – |" in text
    assert "<schema>" not in text and "&lt;schema&gt;" in text
    assert "\r" not in text
    assert "### Top findings (2 of 2)" in text
    top = [line for line in text.splitlines() if line.startswith("- ")]
    assert top[0].startswith("- **error** `orphaned_session_ids`")


def test_step_summary_is_appended_in_github_actions(db, tmp_path):
    from test_cli import CLEAN

    db.execute(CLEAN)
    summary = tmp_path / "summary"
    summary.write_text("earlier step\n")
    result = invoke("scan", "--dsn", db.conninfo, "--out", str(tmp_path / "o"), "--format", "github",
                    "--format", "markdown", env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert result.exit_code == 0, result.output
    md = (tmp_path / "o" / "summary.md").read_text()
    assert summary.read_text() == "earlier step\n" + md
    assert md.startswith("## yumai-audit: ✅ Migrated and clean")   # the verdict of auditor/scan/verdict.py
    assert result.stdout == md   # no finding: no annotation, then the summary


# --- findings.json and findings.csv ---------------------------------------------------------------------

def test_every_written_findings_json_validates(db, tmp_path):
    from yumai_audit.demo import build_demo_database

    build_demo_database(db.conninfo)
    assert invoke("scan", "--dsn", db.conninfo, "--out", str(tmp_path / "scan")).exit_code == 1
    assert invoke("watch", "--dsn", db.conninfo, "--since", "3650d", "--out", str(tmp_path / "watch")).exit_code == 1
    result = invoke("fix", "--dsn", db.conninfo, "--apply", "--yes", "--out", str(tmp_path / "fix"))
    # migrated, with the demo's user findings left undecided (exit 1)
    assert result.exit_code == 1 and "Verdict: Migrated, bridge on. " in result.output, result.output
    written = sorted(tmp_path.rglob("findings.json"))
    assert [p.relative_to(tmp_path).as_posix() for p in written] == [
        "fix/before/findings.json", "fix/findings.json", "scan/findings.json", "watch/findings.json"]
    for path in written:
        assert_valid_findings(path)


def test_the_schema_rejects_what_the_contract_forbids():
    data = json.loads(findings_json(scan_result()))      # findings.json as it is written: with its verdict
    jsonschema.Draft202012Validator(findings_schema()).validate(data)
    with pytest.raises(jsonschema.ValidationError):     # a verdict key always
        jsonschema.Draft202012Validator(findings_schema()).validate(scan_result().to_dict())
    data["findings"][0]["rows"] = "7"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(findings_schema()).validate(data)


def test_csv_samples_are_a_json_array(tmp_path):
    keys = ["", "  0b8f3c2e-0000-4000-8000-000000000001 ", "a b", 'quote"d']
    r = ScanResult(database={"name": "d", "server_version": "18"}, generated_at="", config={},
                   checks=[], findings=[Finding("malformed_session_ids", Severity.ERROR, "s.t", "session_id",
                                                "4 malformed", rows=4, sample=keys)])
    write_csv(r, tmp_path)
    with open(tmp_path / "findings.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert json.loads(row["sample"]) == keys

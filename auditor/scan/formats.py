"""A scan rendered for CI: JUnit XML, SARIF 2.1.0, GitHub workflow annotations, a Markdown summary.

Each renderer takes a ScanResult and returns text. Everything that came from the database (table and
column names, messages, samples) is escaped for the format it lands in: XML escaping in JUnit (by the
XML writer), JSON in SARIF, the workflow-command escaping of `%`, CR, LF (and `:` `,` in properties)
in annotations, Markdown and HTML metacharacters in the summary.
"""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from textwrap import dedent
from typing import Any

from .. import __version__
from ..model import Finding, ScanResult, Severity, Status
from .verdict import Verdict, acceptances_from, judge, plural

FORMATS = ("text", "json", "junit", "sarif", "github", "markdown")
# the files `write_scan` writes beside findings.json, one per CI format
FILES = {"junit": "junit.xml", "sarif": "results.sarif", "markdown": "summary.md"}
SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
TOP_FINDINGS = 10


def check_docs() -> dict[str, str]:
    """Each registered check's documentation (its docstring), by id."""
    from yumai_audit.checks import all_checks

    return {c.id: dedent(type(c).__doc__ or c.description).strip() for c in all_checks()}


def target_of(f: Finding) -> str:
    return f"{f.table}.{f.column}" if f.column else f.table


def judged_or_judge(result: ScanResult, judged: Verdict | None) -> Verdict:
    """The caller's verdict of the scan, else the scan judged on its own (no plan; the acceptances its
    config carries): every format says the verdict the terminal and the report say."""
    return judged if judged is not None else judge(result, accept=acceptances_from(result.config))


def count_text(findings: list[Finding]) -> str:
    """What a check's findings add up to, in their unit: rows, else the keys they count ("400 sessions")."""
    rows = [f.rows for f in findings if f.rows is not None]
    parts = []
    if rows:
        parts.append(plural(sum(rows), "row"))
    keyed = [f for f in findings if f.rows is None and f.keys is not None]
    units: dict[str, int] = {}
    for f in keyed:
        unit = str(f.details.get("sample_of", "session id")).removesuffix(" id")
        units[unit] = units.get(unit, 0) + (f.keys or 0)
    parts += [plural(n, unit) for unit, n in units.items()]
    return ", ".join(parts) or "–"


# --- JUnit XML ----------------------------------------------------------------------------------------

def junit(result: ScanResult, judged=None) -> str:
    """One testsuite (the database); one testcase per check and target: a finding of error severity is a
    <failure>, a warning or info finding passes with its message in <system-out>; a skipped check is
    <skipped>, a check that could not finish an <error>; a check with no finding is one passing testcase."""
    db = str(result.database.get("name", ""))
    judged = judged_or_judge(result, judged)
    suite = ET.Element("testsuite", name=f"yumai-audit {db}", timestamp=result.generated_at)
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="verdict", value=judged.label)
    ET.SubElement(properties, "property", name="verdict_state", value=judged.state.value)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    by_check: dict[str, list[Finding]] = {}
    for f in result.findings:
        by_check.setdefault(f.check, []).append(f)
    for c in result.checks:
        findings = by_check.get(c.check, [])
        if not findings:
            case = ET.SubElement(suite, "testcase", classname=c.check, name=c.check, time=f"{c.seconds:.3f}")
            counts["tests"] += 1
            if c.status is Status.SKIPPED:
                ET.SubElement(case, "skipped", message=c.reason or "skipped")
                counts["skipped"] += 1
            elif c.status is Status.ERROR:
                ET.SubElement(case, "error", message=c.reason or "error", type="error")
                counts["errors"] += 1
            continue
        for f in findings:
            case = ET.SubElement(suite, "testcase", classname=c.check, name=target_of(f), time="0")
            counts["tests"] += 1
            if f.severity is Severity.ERROR:
                failure = ET.SubElement(case, "failure", message=f.message, type=f.severity.value)
                failure.text = _finding_text(f)
                counts["failures"] += 1
            else:
                ET.SubElement(case, "system-out").text = f"[{f.severity.value}] {f.message}"
    for key, value in counts.items():
        suite.set(key, str(value))
    suites = ET.Element("testsuites", {"name": "yumai-audit", **{k: str(v) for k, v in counts.items()}})
    suites.append(suite)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def _finding_text(f: Finding) -> str:
    lines = [f.message, f"check: {f.check}", f"table: {f.table}"]
    if f.column:
        lines.append(f"column: {f.column}")
    for label, value in (("rows", f.rows), ("keys", f.keys), ("references", f.references)):
        if value is not None:
            lines.append(f"{label}: {value}")
    if f.sample:
        lines.append("sample: " + json.dumps(f.sample))
    return "\n".join(lines)


# --- SARIF 2.1.0 --------------------------------------------------------------------------------------

_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def sarif(result: ScanResult, judged=None) -> str:
    """One run; the rules are the checks that ran (id, description, documentation = the docstring); one
    result per finding, ruleId = the check id, located logically at the table (or column) it is about."""
    docs = check_docs()
    rules: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for c in result.checks:
        index[c.check] = len(rules)
        rules.append({"id": c.check, "name": c.check,
                      "shortDescription": {"text": c.description or c.check},
                      "fullDescription": {"text": docs.get(c.check, c.description or c.check)},
                      "help": {"text": docs.get(c.check, c.description or c.check)},
                      "defaultConfiguration": {"level": _LEVEL[c.severity]}})
    results = []
    for f in result.findings:
        if f.check not in index:
            index[f.check] = len(rules)
            rules.append({"id": f.check, "shortDescription": {"text": f.check}})
        location = {"logicalLocations": [{"fullyQualifiedName": target_of(f),
                                          "kind": "column" if f.column else "table"}]}
        properties = {k: v for k, v in (("rows", f.rows), ("keys", f.keys), ("references", f.references),
                                        ("sample", f.sample)) if v not in (None, [])}
        results.append({"ruleId": f.check, "ruleIndex": index[f.check], "level": _LEVEL[f.severity],
                        "message": {"text": f.message}, "locations": [location], "properties": properties})
    invocation: dict[str, Any] = {"executionSuccessful": not any(c.status is Status.ERROR for c in result.checks)}
    notes = [{"level": "error", "message": {"text": f"{c.check}: {c.reason or 'error'}"}}
             for c in result.checks if c.status is Status.ERROR]
    if notes:
        invocation["toolExecutionNotifications"] = notes
    log = {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [{
        "tool": {"driver": {"name": "yumai-audit", "version": __version__, "rules": rules}},
        "invocations": [invocation],
        "results": results,
        "properties": {"database": result.database, "generated_at": result.generated_at,
                       "verdict": judged_or_judge(result, judged).label,
                       "verdict_state": judged_or_judge(result, judged).state.value},
    }]}
    return json.dumps(log, indent=2, default=str) + "\n"


# --- GitHub workflow annotations ------------------------------------------------------------------------

def escape_data(text: str) -> str:
    """A workflow command's message: % CR LF escaped (GitHub's toolkit escapeData)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value: also : and , (GitHub's toolkit escapeProperty)."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


_COMMAND = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def github(result: ScanResult, judged=None) -> str:
    """One annotation per finding (`::error title=check on table::message`), one per check that errored."""
    lines = []
    for f in result.findings:
        title = escape_property(f"{f.check} on {target_of(f)}")
        lines.append(f"::{_COMMAND[f.severity]} title={title}::{escape_data(f.message)}")
    for c in result.checks:
        if c.status is Status.ERROR:
            lines.append(f"::error title={escape_property(c.check + ' did not finish')}::"
                         f"{escape_data(c.reason or 'error')}")
    return "\n".join(lines) + ("\n" if lines else "")


# --- Markdown summary -----------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def md(text: object) -> str:
    """Text from the database as inert Markdown: HTML metacharacters as entities, Markdown ones backslashed,
    newlines as spaces (a table cell is one line)."""
    s = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", re.sub(r"[\r\n]+", " ", s))


def markdown(result: ScanResult, judged=None) -> str:
    """Verdict, counts per check, the top findings (errors first, most rows first)."""
    errors = sum(1 for f in result.findings if f.severity is Severity.ERROR)
    warnings = sum(1 for f in result.findings if f.severity is Severity.WARNING)
    judged = judged_or_judge(result, judged)
    lines = [f"## yumai-audit: {judged.state.symbol} {md(judged.label)}", "", md(judged.headline), ""]
    if judged.to_done:
        lines += ["The way to done:", ""] + [f"{i}. {md(step)}" for i, step in enumerate(judged.to_done, 1)] + [""]
    lines += [
             f"Database {md(result.database.get('name', ''))} (PostgreSQL "
             f"{md(result.database.get('server_version', ''))}), {md(result.generated_at)}: "
             f"{plural(errors, 'error')}, {plural(warnings, 'warning')}.", "",
             "| check | severity | status | findings | count |", "|---|---|---|---:|---:|"]
    for c in result.checks:
        mine = [f for f in result.findings if f.check == c.check]
        lines.append(f"| `{c.check}` | {c.severity.value} | {c.status.value} | {len(mine)} | {count_text(mine)} |")
    top = sorted(result.findings, key=lambda f: (f.severity.rank, -(f.rows or 0), f.check, f.table))[:TOP_FINDINGS]
    if top:
        lines += ["", f"### Top findings ({len(top)} of {len(result.findings)})", ""]
        lines += [f"- **{f.severity.value}** `{f.check}` on {md(target_of(f))}: {md(f.message)}" for f in top]
    return "\n".join(lines) + "\n"


def findings_json(result: ScanResult, judged=None) -> str:
    """findings.json: the scan and, always, its verdict (`verdict`)."""
    data = result.to_dict()
    data["verdict"] = judged_or_judge(result, judged).to_dict()
    return json.dumps(data, indent=2, default=str) + "\n"


# each renders (result, judged=None): `judged` is the scan's Verdict when the caller has one, else the
# scan is judged on its own (judged_or_judge)
RENDERERS = {"junit": junit, "sarif": sarif, "github": github, "markdown": markdown, "json": findings_json}

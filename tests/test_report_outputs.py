"""The outputs of one run agree and hold together, on a real database (the demo's defects):

- every report written before the cutover (`scan`'s, `fix --out`'s dry run, `fix --apply`'s before/)
  has the plan section with its notes, and every in-page link of every report resolves to an id;
- one verdict everywhere: the terminal, report.html, summary.md, junit.xml, results.sarif and
  findings.json of one scan say the same one.
"""
from __future__ import annotations

import itertools
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

from click.testing import CliRunner

from yumai_audit.cli import cli
from yumai_audit.demo import build_demo_database


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        href = a.get("href") or ""
        if tag == "a" and href.startswith("#"):
            self.links.append(href[1:])


def anchors(path: Path) -> _Anchors:
    parsed = _Anchors()
    parsed.feed(path.read_text(encoding="utf-8"))
    return parsed


def broken_links(path: Path) -> list[str]:
    parsed = anchors(path)
    return sorted({link for link in parsed.links if link not in parsed.ids})


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_every_report_before_the_cutover_has_the_plan_and_every_link_resolves(db, tmp_path):
    build_demo_database(db.conninfo)
    scanned, planned, applied = tmp_path / "scan", tmp_path / "plan", tmp_path / "apply"
    assert run("scan", "--dsn", db.conninfo, "--out", str(scanned)).exit_code == 1
    dry = run("fix", "--dsn", db.conninfo, "--out", str(planned))
    assert dry.exit_code == 1, dry.output
    # the dry run wrote the plan, so `report --plan` works before the cutover
    header = (planned / "plan.sql").read_text().splitlines()[1]
    # the version as PostgreSQL spells it, the options as their flags (no Python reprs), the lock
    # timeout as capped below deadlock_timeout (1 s by default) with the value asked for
    assert re.match(r"-- PostgreSQL \d+\.\d+; options: --orphans quarantine ", header), header
    assert "--lock-timeout 0.8 (2 asked: capped below the server's deadlock_timeout)" in header
    assert "=" not in header and "False" not in header and "(" not in header.split("(2 asked")[0]
    plan = json.loads((planned / "plan.json").read_text())
    assert plan["steps"] and plan["notes"]
    reviewed = tmp_path / "review"
    res = run("report", str(planned / "findings.json"), "--plan", str(planned / "plan.json"), "--out", str(reviewed))
    assert res.exit_code == 1, res.output
    res = run("fix", "--dsn", db.conninfo, "--apply", "--yes", "--no-backup", "--out", str(applied))
    assert res.exit_code in (0, 1), res.output

    before_reports = [scanned / "report.html", planned / "report.html", reviewed / "report.html",
                      applied / "before" / "report.html"]
    for page in [*before_reports, applied / "report.html"]:
        parsed = anchors(page)
        assert "plan" in parsed.ids and "plan" in parsed.links, page
        assert broken_links(page) == [], page
    options = re.search(r'<p class="meta">Options: (.*?)</p>', (planned / "report.html").read_text()).group(1)
    assert "<code>--include users</code>" not in options and "<code>--orphans quarantine</code>" in options
    for page in before_reports:
        parsed = anchors(page)
        steps = [link for link in parsed.links if link.startswith("step-")]
        assert steps and all(s in parsed.ids for s in steps), page
        assert "plan-notes" in parsed.ids, page   # the notes the verdict's choices refer to
    # the plan that ran is the one the before-report shows: every step of it, in its order
    shown = re.findall(r'<tr id="step-\d+"[^>]*>\s*<td class="num">\d+</td>\s*<th scope="row"><code>([^<]+)</code>',
                       (applied / "before" / "report.html").read_text())
    assert shown == [s["id"] for s in json.loads((applied / "plan.json").read_text())["steps"]]


def _verdicts(out: Path) -> dict[str, str]:
    """The verdict's label as each file in `out` states it."""
    html = (out / "report.html").read_text()
    badge = re.search(r'<h2 id="verdict-title">Verdict: <span class="badge [a-z]+">([^<]+)</span>', html)
    heading = (out / "summary.md").read_text().splitlines()[0]
    junit = ET.parse(out / "junit.xml").getroot()
    sarif = json.loads((out / "results.sarif").read_text())
    findings = json.loads((out / "findings.json").read_text())
    return {"report.html": badge.group(1) if badge else "",
            "summary.md": heading.split(" ", 3)[3] if heading.startswith("## yumai-audit: ") else heading,
            "junit.xml": next(p.get("value") for p in junit.iter("property") if p.get("name") == "verdict"),
            "results.sarif": sarif["runs"][0]["properties"]["verdict"],
            "findings.json": findings["verdict"]["label"]}


def test_one_verdict_in_every_output_of_one_scan(db, tmp_path):
    build_demo_database(db.conninfo)
    out = tmp_path / "scan"
    res = run("scan", "--dsn", db.conninfo, "--out", str(out))
    assert res.exit_code == 1, res.output
    terminal = re.match(r"Verdict: ([^.]+)\.", res.output).group(1)
    assert terminal == "Needs a decision"     # the demo's user findings: no step of the default plan repairs them
    assert _verdicts(out) == dict.fromkeys(_verdicts(out), terminal)
    # `scan --format json` says it the same way as the file
    printed = run("scan", "--dsn", db.conninfo, "--out", str(tmp_path / "again"), "--format", "json")
    assert json.loads(printed.output)["verdict"]["label"] == terminal


def test_one_verdict_in_every_output_before_and_after_the_apply(db, tmp_path):
    build_demo_database(db.conninfo)
    out = tmp_path / "apply"
    res = run("fix", "--dsn", db.conninfo, "--apply", "--yes", "--no-backup", "--out", str(out),
              "--include", "users", "--missing-users", "null")
    labels = re.findall(r"^Verdict: ([^.]+)\.", res.output, re.M)
    assert len(labels) == 1, res.output
    assert _verdicts(out) == dict.fromkeys(_verdicts(out), labels[0])
    before = _verdicts(out / "before")
    # the users' findings have a step now; the conflicting users are left for a person to decide
    assert before == dict.fromkeys(before, "Needs a decision"), before


def test_the_summary_counts_findings_in_their_unit(db, tmp_path):
    """A finding counted in sessions (missing from the master) shows its sessions, not 0 rows."""
    build_demo_database(db.conninfo)
    out = tmp_path / "scan"
    run("scan", "--dsn", db.conninfo, "--out", str(out))
    findings = json.loads((out / "findings.json").read_text())["findings"]
    missing = next(f for f in findings if f["check"] == "missing_master_rows")
    assert missing["rows"] is None and missing["keys"] > 0
    row = next(line for line in (out / "summary.md").read_text().splitlines() if "`missing_master_rows`" in line)
    assert row.split("|")[5].strip() == f"{missing['keys']:,} sessions"
    orphans = [f for f in findings if f["check"] == "orphaned_session_ids"]
    row = next(line for line in (out / "summary.md").read_text().splitlines() if "`orphaned_session_ids`" in line)
    assert row.split("|")[5].strip() == f"{sum(f['rows'] for f in orphans):,} rows"


def test_migrated_with_the_bridge_on_says_so_and_shows_the_way_to_done(db, tmp_path):
    """After `fix --apply` the bridge is still installed (--bridge auto: on the source table): a made-up
    session id is registered, not refused. The verdict of every output says "Migrated, bridge on", with
    the bridge's registrations of the last day, and the way to done; once it is removed, "Migrated"."""
    build_demo_database(db.conninfo)
    out = tmp_path / "apply"
    res = run("fix", "--dsn", db.conninfo, "--apply", "--yes", "--no-backup", "--out", str(out))
    assert res.exit_code == 1, res.output      # finished, with the users' findings left as debt
    assert re.search(r"^Verdict: Migrated, bridge on\. ", res.output, re.M), res.output
    assert _verdicts(out) == dict.fromkeys(_verdicts(out), "Migrated, bridge on")
    # what it still accepts: a made-up session id, registered by the bridge
    made_up = "00000000-0000-4000-8000-00000000dead"
    db.execute("INSERT INTO chatbot.conversations (session_id, role, message, created_at) "
               "VALUES (%s, 'user', 'x', '2026-09-02')", (made_up,))
    assert db.scalar("SELECT count(*) FROM chatbot.session_master WHERE session_id = %s", (made_up,)) == 1
    scanned = tmp_path / "scan"
    res = run("scan", "--dsn", db.conninfo, "--out", str(scanned))
    lines = res.output.splitlines()
    wrapped = [lines[0]] + [line for line in itertools.takewhile(lambda x: x.startswith("    "), lines[1:])]
    headline = " ".join(" ".join(wrapped).split())    # the verdict's line, wrapped at 120 columns
    assert headline.startswith("Verdict: Migrated, bridge on. "), res.output
    assert max(len(line) for line in res.output.splitlines()) <= 120
    assert "a new row of chatbot.conversations naming a session the master lacks" in headline
    assert "It registered 1 session in the last 24 hours." in headline
    assert "  the way to done:" in res.output and "    3. run yumai-audit bridge remove" in res.output
    verdict = json.loads((scanned / "findings.json").read_text())["verdict"]
    assert verdict["state"] == "migrated-bridge-on"
    assert verdict["bridge"] == {"tables": ["chatbot.conversations"], "registered_last_day": 1}
    assert len(verdict["to_done"]) == 3 and "bridge status" in verdict["to_done"][1]
    summary = (scanned / "summary.md").read_text()
    assert summary.startswith("## yumai-audit: 🌉 Migrated, bridge on\n") and "The way to done:" in summary
    html = (scanned / "report.html").read_text()
    assert "<ol class=\"to-done\">" in html
    assert html.count("<li>") >= 3 and "bridge remove" in html
    # done: the bridge removed (it registered a session in the last hour: --force), the verdict is Migrated
    assert run("bridge", "remove", "--dsn", db.conninfo, "--force").exit_code == 0
    res = run("scan", "--dsn", db.conninfo, "--out", str(tmp_path / "done"))
    assert res.output.startswith("Verdict: Migrated. "), res.output
    assert "the way to done" not in res.output

"""The HTML report without a database: verdict, sections, escaping, self-containment, accessibility."""
from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from jinja2 import StrictUndefined
from report_fixtures import external_references, plan_dict, scan_result

from yumai_audit.model import Status
from yumai_audit.reports import render
from yumai_audit.reports.render import ReasonGroup, environment, render_html, template_context

TEMPLATES = Path(render.__file__).parent / "templates"
EVIL = "<script>alert(1)</script>"
EVIL_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def section(html: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}".*?(?=<section id=|</main>)', html, re.S)
    assert match, f"no section {section_id}"
    return match.group(0)


def text_of(fragment: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", fragment).split())


def test_environment_is_strict_and_escapes():
    env = environment()
    assert env.undefined is StrictUndefined
    assert env.from_string("{{ x }}").render(x="<b>") == "&lt;b&gt;"
    with pytest.raises(Exception):
        env.from_string("{{ missing }}").render()


def test_templates_never_mark_values_safe_and_partials_are_underscored():
    names = sorted(p.name for p in TEMPLATES.glob("*.html"))
    assert "report.html" in names
    assert all(n == "report.html" or n.startswith("_") for n in names), names
    for path in TEMPLATES.glob("*.html"):
        text = path.read_text()
        assert "|safe" not in text.replace(" ", "") and "Markup" not in text and "autoescape false" not in text, path


def test_without_a_plan_an_error_finding_needs_a_decision_and_names_its_choices():
    html = render_html(scan_result())
    verdict = text_of(section(html, "verdict"))
    assert "Verdict: Needs a decision" in verdict
    assert "1 error finding no step of the plan repairs" in verdict
    assert ("Needs a decision Rows whose session id is in neither the master nor the source table "
            "(orphaned_session_ids): chatbot.user_interactions.session_id (7 rows) Choice: accept it") in verdict
    # a warning never needs a decision
    assert "no session id" not in verdict
    assert "<title>Session integrity audit · yumai · needs a decision</title>" in html


def test_ready_verdict():
    html = render_html(scan_result(blocked=False))
    verdict = text_of(section(html, "verdict"))
    assert "Verdict: Ready" in verdict
    assert "No error finding stands in the way of the cutover." in verdict
    assert "<title>Session integrity audit · yumai · ready</title>" in html


def test_check_that_could_not_run_blocks():
    result = scan_result(blocked=False)
    result.checks[0].status, result.checks[0].reason = Status.ERROR, "timed out on chatbot.x after 1s"
    ctx = template_context(result)
    assert not ctx.verdict.ready
    assert ctx.verdict.groups == [ReasonGroup("Could not be verified",
                                              ["orphaned_session_ids: timed out on chatbot.x after 1s"],
                                              ["run the scan again (with a longer --timeout)"])]


def test_findings_grouped_by_severity_with_documentation_and_samples():
    html = render_html(scan_result())
    findings = section(html, "findings")
    assert findings.index('id="sev-error"') < findings.index('id="sev-warning"')
    article = re.search(r'<article[^>]*id="check-orphaned_session_ids".*?</article>', findings, re.S).group(0)
    text = text_of(article)
    assert "1 finding · 7 rows · 3 distinct keys" in text
    assert "What the fix does:" in text and "yumai_quarantine" in text      # from the check's docstring
    assert "0b8f3c2e-0000-4000-8000-000000000001" in text
    assert "Planned step" not in text                                           # no plan given


def test_plan_section_lists_steps_in_order_with_locks_sizes_and_rewrites():
    html = render_html(scan_result(), plan=plan_dict())
    plan = section(html, "plan")
    rows = re.findall(r'<tr id="step-(\d+)"', plan)
    assert rows == ["1", "2", "3", "4"]
    text = text_of(plan)
    assert "4 steps in the order they run, for PostgreSQL 18.1" in text
    assert "1 step under an exclusive lock" in text and "1 step rewrites a table (3.0 MB)" in text
    assert "1 step outside a transaction" in text
    assert text.index("create_session_master") < text.index("quarantine_orphaned_session_ids") \
        < text.index("convert_key:chatbot.recommendations_log")
    assert "ACCESS EXCLUSIVE" in text and "rewrites the table" in text and "no transaction (CONCURRENTLY)" in text
    step2 = text_of(re.search(r'<tr id="step-2".*?</tr>', plan, re.S).group(0))
    assert step2.endswith("no rewrite in a transaction #1 pending")
    assert "chatbot.user_interactions (80.0 kB)" in text
    # the finding's own section folds the exact SQL of the step that declares it repairs it
    article = re.search(r'<article[^>]*id="check-orphaned_session_ids".*?</article>', html, re.S).group(0)
    assert "<details" in article
    assert "DELETE FROM chatbot.user_interactions t WHERE t.session_id NOT IN (SELECT 1) RETURNING *;" in article
    assert "CREATE INDEX CONCURRENTLY" not in article
    verdict = text_of(section(html, "verdict"))
    assert "Verdict: Ready once fix runs" in verdict
    # the verdict says what the plan repairs by kind; the step ids are the plan section's and the finding's
    assert ("Repaired by the plan Rows whose session id is in neither the master nor the source table "
            "(orphaned_session_ids): chatbot.user_interactions.session_id (7 rows)") in verdict
    assert "#2" not in verdict and "repaired by step" not in verdict
    assert "repaired by step #2" in text_of(article)


def test_steps_declaring_repairs_are_matched_on_them_and_the_table():
    plan = plan_dict()
    for step in plan["steps"]:
        step["repairs"] = ["null_session_ids"] if step["id"].startswith("index_key") else []
        if step["id"].startswith("index_key"):
            step["tables"] = ["chatbot.conversations_default"]   # a partition counts as its table
    html = render_html(scan_result(), plan=plan)
    nulls = re.search(r'<article[^>]*id="check-null_session_ids".*?</article>', html, re.S).group(0)
    orphans = re.search(r'<article[^>]*id="check-orphaned_session_ids".*?</article>', html, re.S).group(0)
    assert "CREATE INDEX CONCURRENTLY" in nulls
    assert "<details" not in orphans and "No planned step changes anything for this check." in orphans


def test_comparison_check_by_check():
    before = scan_result(generated_at="2026-11-01T09:00:00+00:00")
    after = scan_result(blocked=False, generated_at="2026-11-01T11:00:00+00:00")
    html = render_html(after, before=before)
    comp = section(html, "comparison")
    text = text_of(comp)
    assert "Scan before: 2026-11-01T09:00:00+00:00 · scan after: 2026-11-01T11:00:00+00:00" in text
    assert "1 fixed" in text and "1 with findings left" in text and "0 new" in text
    rows = {m.group(1): text_of(m.group(0)) for m in
            re.finditer(r'<tr>\s*<th scope="row">.*?<code class="check-id">(\w+)</code>.*?</tr>', comp, re.S)}
    assert rows["orphaned_session_ids"].endswith("fail 1 7 pass 0 – fixed")
    assert rows["null_session_ids"].endswith("fail 1 2 fail 1 2 unchanged")
    assert rows["unvalidated_fk"].endswith("skipped 0 – skipped 0 – unchanged")
    assert "Verdict: Ready" in text_of(section(html, "verdict"))
    assert "different database" not in text
    before.database["name"] = "<other>"
    text = text_of(section(render_html(after, before=before), "comparison"))
    assert "different database The earlier scan is of database &lt;other&gt; , not yumai" in text


def test_without_plan_or_before_those_sections_are_absent():
    html = render_html(scan_result())
    assert 'id="plan"' not in html and 'id="comparison"' not in html


def test_every_value_is_escaped_in_html_and_svg():
    table = f"chatbot.{EVIL}"
    result = scan_result(table=table, sample=EVIL)
    result.stats["partitions"][0]["partition"] = f"chatbot.{EVIL}"
    result.stats["sessions_by_week_skipped"] = [f"{table}: no column created_at"]
    plan = plan_dict()
    plan["steps"][1]["sql"] = f"DELETE FROM {EVIL};"
    plan["steps"][1]["tables"] = [table]
    html = render_html(result, plan=plan, before=scan_result(table=table))
    assert EVIL not in html
    assert "<script>" not in html.replace('<script>\n/* Printing', "")
    assert html.count("<script") == 1
    assert html.count(EVIL_ESCAPED) >= 8
    svg = "".join(re.findall(r"<svg.*?</svg>", html, re.S))
    assert EVIL_ESCAPED in svg and EVIL not in svg


def test_report_references_nothing_outside_itself():
    html = render_html(scan_result(), plan=plan_dict(), before=scan_result())
    assert external_references(html) == []
    assert "<style>" in html and "@media print" in html
    assert html.count("<svg") == 3


def test_self_containment_check_catches_external_references():
    bad = ('<link rel="stylesheet" href="https://cdn.example.com/x.css"><img src="/logo.png">'
           '<style>@import "x.css"; body { background: url(bg.png) }</style><script src="a.js"></script>')
    assert len(external_references(bad)) >= 5
    assert external_references('<a href="#verdict">x</a><img src="data:image/png;base64,AA">') == []


class _Outline(HTMLParser):
    def __init__(self):
        super().__init__()
        self.headings, self.header_cells, self.colour_marks = [], [], []
        self._mark = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if re.fullmatch(r"h[1-6]", tag):
            self.headings.append(int(tag[1]))
        if tag == "th":
            self.header_cells.append(attrs.get("scope"))
        classes = (attrs.get("class") or "").split()
        if tag == "span" and {"badge", "status", "change", "lock"} & set(classes):
            self._mark = ""

    def handle_data(self, data):
        if self._mark is not None:
            self._mark += data

    def handle_endtag(self, tag):
        if tag == "span" and self._mark is not None:
            self.colour_marks.append(self._mark.strip())
            self._mark = None


def test_accessible_structure():
    html = render_html(scan_result(), plan=plan_dict(), before=scan_result())
    outline = _Outline()
    outline.feed(html)
    assert outline.headings[0] == 1 and outline.headings.count(1) == 1
    for previous, current in zip(outline.headings, outline.headings[1:]):
        assert current <= previous + 1, outline.headings
    assert outline.header_cells and all(s in ("col", "row", "colgroup") for s in outline.header_cells)
    assert outline.colour_marks and all(outline.colour_marks), "a coloured mark without text"
    assert html.count('role="img"') == 3 and html.count("<title id=") == 3
    assert '<html lang="en">' in html


def test_charts_show_their_numbers():
    ctx = template_context(scan_result())
    orphans, sessions, partitions = ctx.charts
    assert orphans.rows == [["chatbot.user_interactions", "7", "3"]]
    assert "None are left" not in orphans.caption
    clean = template_context(scan_result(blocked=False)).charts[0]
    assert clean.rows == [["chatbot.user_interactions", "0", "0"]] and clean.caption.endswith("None are left in any table.")
    assert clean.bars == [] and clean.empty == "No orphaned row is left in any key table."   # no empty axis
    # the missing week (2026-03-09) is drawn as zero
    assert [row[0] for row in sessions.rows] == ["2026-03-02", "2026-03-09", "2026-03-16"]
    assert sessions.rows[1] == ["2026-03-09", "0", "0", "0", "0"]
    assert sessions.rows[2] == ["2026-03-16", "2", "30", "3", "35"]
    assert [b.text for b in sessions.bars] == ["5", "40", "2", "30", "3"]
    assert partitions.rows[1] == ["chatbot.conversations_default", "chatbot.conversations", "DEFAULT", "144.0 kB", "702"]
    html = render_html(scan_result())
    assert "<title>week of 2026-03-16: orphaned: 3</title>" in html
    assert "<title>chatbot.user_interactions: 7</title>" in html


def test_findings_without_statistics_still_render():
    html = render_html(scan_result(stats={}))
    assert "this findings.json was written without weekly statistics" in html
    assert "this findings.json was written without partition statistics" in html
    malformed = render_html(scan_result(stats={"sessions_by_week": [{"week": "x"}], "partitions": [{"bytes": 1}]}))
    assert malformed.count("the statistics in this findings.json are malformed") == 2


def test_the_declared_repairs_decide_ready_once_fix_runs():
    plan = plan_dict()
    ctx = template_context(scan_result(), plan=plan)
    assert ctx.verdict.ready and ctx.verdict.state == "ready-once-fix"
    assert ctx.verdict.headline == ("Every error finding is repaired by a step of the plan (1 finding): "
                                    "run fix --apply.")
    assert [g.items for g in ctx.verdict.groups] == [[
        "Rows whose session id is in neither the master nor the source table (orphaned_session_ids): "
        "chatbot.user_interactions.session_id (7 rows)"]]
    plan["steps"][1]["repairs"] = ["null_session_ids"]
    ctx = template_context(scan_result(), plan=plan)
    assert not ctx.verdict.ready and ctx.verdict.state == "needs-decision"
    assert ctx.verdict.groups[0].title == "Needs a decision"
    assert ctx.verdict.groups[0].items[0].endswith("chatbot.user_interactions.session_id (7 rows)")
    # the right check on another table repairs nothing here
    plan["steps"][1]["repairs"], plan["steps"][1]["tables"] = ["orphaned_session_ids"], ["chatbot.user_feedback"]
    assert template_context(scan_result(), plan=plan).verdict.state == "needs-decision"
    # a check that could not run always needs a decision
    plan["steps"][1]["tables"] = ["chatbot.user_interactions"]
    result = scan_result()
    result.checks[1].status, result.checks[1].reason = Status.ERROR, "timed out"
    assert template_context(result, plan=plan).verdict.state == "needs-decision"


def scan_with_unindexed_key():
    """The report fixture's scan plus an `unindexed_fk_columns` finding on the partitioned source."""
    result = scan_result()
    result.checks.append(result.checks[0].__class__("unindexed_fk_columns", Status.FAIL, 0, result.checks[0].severity))
    result.findings.append(result.findings[1].__class__(
        "unindexed_fk_columns", result.findings[1].severity, "chatbot.conversations", "session_id", "no index"))
    return result


def test_step_ids_are_never_read_for_what_a_step_repairs():
    """A step named like the fix planner's (`orphans:<table>`) but declaring nothing repairs nothing."""
    def step(step_id, tables=(), repairs=()):
        return {"id": step_id, "description": step_id, "lock": "ROW EXCLUSIVE", "tables": list(tables),
                "table_bytes": {}, "rewrites": False, "transactional": True, "depends_on": [],
                "sql": f"-- {step_id}", "done": False, "repairs": list(repairs)}
    plan = {"steps": [step("preflight"),
                      step("index:chatbot.conversations_2026_03", ["chatbot.conversations_2026_03"],
                           ["unindexed_fk_columns"]),
                      step("orphans:chatbot.user_interactions", ["chatbot.user_interactions"]),
                      step("verify")],
            "server_version_num": 180001, "options": {}}
    result = scan_with_unindexed_key()
    ctx = template_context(result, plan=plan)
    steps = {c.id: [s.id for s in c.steps] for g in ctx.groups for c in g.checks}
    assert steps == {"orphaned_session_ids": [], "null_session_ids": [],
                     "unindexed_fk_columns": ["index:chatbot.conversations_2026_03"]}
    assert ctx.verdict.state == "needs-decision"


def test_steps_declaring_what_they_repair_are_attached_to_the_checks_they_repair():
    """The fix planner's steps declare the checks they repair and the table and column they are
    about (a partition's step: its parent's); the step ids are never read."""
    def step(step_id, tables=(), repairs=(), target="", column="session_id"):
        return {"id": step_id, "description": step_id, "lock": "ROW EXCLUSIVE", "tables": list(tables),
                "table_bytes": {}, "rewrites": False, "transactional": True, "depends_on": [],
                "sql": f"-- {step_id}", "done": False, "repairs": list(repairs), "target": target,
                "column": column, "changes": list(tables)}
    plan = {"steps": [step("preflight"),
                      step("master", repairs=["missing_master_rows"], target="chatbot.session_master"),
                      step("index:chatbot.conversations_2026_03", ["chatbot.conversations_2026_03"],
                           ["unindexed_fk_columns"], "chatbot.conversations"),
                      step("backfill:chatbot.conversations_2026_03", ["chatbot.session_master"],
                           ["missing_master_rows"], "chatbot.session_master"),
                      step("orphans:chatbot.user_interactions", ["chatbot.user_interactions"],
                           ["orphaned_session_ids"], "chatbot.user_interactions"),
                      step("fk-add:chatbot.user_interactions", ["chatbot.user_interactions"],
                           ["unconstrained_fk"], "chatbot.user_interactions"),
                      step("verify")],
            "server_version_num": 180001, "options": {}}
    result = scan_with_unindexed_key()
    ctx = template_context(result, plan=plan)
    steps = {c.id: [s.id for s in c.steps] for g in ctx.groups for c in g.checks}
    assert steps == {"orphaned_session_ids": ["orphans:chatbot.user_interactions"],
                     "null_session_ids": [],
                     "unindexed_fk_columns": ["index:chatbot.conversations_2026_03"]}
    # declared: the verdict rests on the declarations (every error finding has its step)
    assert ctx.verdict.ready and ctx.verdict.state == "ready-once-fix"
    # a step about another column of the table does not repair the finding
    plan["steps"][4]["column"] = "user_id"
    steps = {c.id: [s.id for s in c.steps] for g in template_context(result, plan=plan).groups for c in g.checks}
    assert steps["orphaned_session_ids"] == []


def test_a_check_that_no_longer_applies_after_the_fix_counts_as_fixed():
    before = scan_result()
    after = scan_result(blocked=False)
    after.checks[0].status, after.checks[0].reason = Status.SKIPPED, "no text key column left"
    rows = {r["check"]: r for r in template_context(after, before=before).comparison.rows}
    assert (rows["orphaned_session_ids"]["after_status"], rows["orphaned_session_ids"]["change"]) == ("skipped", "fixed")


def test_week_labels_carry_the_year_where_it_starts_or_changes():
    sessions = template_context(scan_result()).charts[1]
    assert [label for _x, _y, label in sessions.labels] == ["2026-03-02", "03-09", "03-16"]
    stats = dict(scan_result().stats)
    stats["sessions_by_week"] = [{"week": "2025-12-22", "registered": 1, "missing_from_master": 0, "orphaned": 0},
                                 {"week": "2026-01-05", "registered": 2, "missing_from_master": 0, "orphaned": 0}]
    turn = template_context(scan_result(stats=stats)).charts[1]
    assert [label for _x, _y, label in turn.labels] == ["2025-12-22", "12-29", "2026-01-05"]


def test_a_check_that_could_not_apply_before_and_passes_now_is_not_badged_as_a_problem():
    before, after = scan_result(blocked=False), scan_result(blocked=False)
    after.checks[2].status, after.checks[2].reason = Status.PASS, None      # unvalidated_fk: skipped -> pass
    rows = {r["check"]: r for r in template_context(after, before=before).comparison.rows}
    assert rows["unvalidated_fk"]["change"] == "passes"
    assert '<span class="change passes">passes</span>' in render_html(after, before=before)

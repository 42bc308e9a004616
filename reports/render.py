"""Render a scan (and optionally a plan and a scan to compare) as one self-contained HTML file.

The template context is a small declared structure (`ReportContext`): plain data, no markup. Every
string from the database (table names, sample keys, messages, SQL text) reaches the template as
text and is escaped by jinja2's autoescape, in the HTML and in the inline SVG charts alike; the
renderer never builds markup in Python. Chart geometry (positions, sizes) is computed here, the
SVG elements are written by the `_chart_*.html` partials.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from jinja2 import Environment, FileSystemBytecodeCache, PackageLoader, StrictUndefined
from markupsafe import Markup

from yumai_audit.bridge_state import bridge_line
from yumai_audit.checks import REGISTRY
from yumai_audit.model import Finding, ScanResult, Severity, Status
from yumai_audit.outputs import samples_file
from yumai_audit.pgversion import version_text
from yumai_audit.reports.totals import plan_totals
from yumai_audit.scan.formats import count_text
from yumai_audit.scan.verdict import Judged, State, Verdict, acceptances_from, judge, partition_parents, repairing_steps

MAX_WEEKS_DRAWN = 104
SEVERITY_TITLES = {Severity.ERROR: "Errors (block the cutover)", Severity.WARNING: "Warnings",
                   Severity.INFO: "Information"}
DOC_LABELS = ("What is wrong:", "Why it matters:", "What the fix does:")


def _bytecode_cache():
    try:
        return FileSystemBytecodeCache()
    except (OSError, RuntimeError):      # no usable temporary directory: compile every time
        return None


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("yumai_audit.reports", "templates"),
        autoescape=True,            # every template, whatever its name; values are always escaped
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        # Compiled templates kept between runs (jinja2's own per-user directory under the system's
        # temporary directory, created 0700 and checked to be the user's): compiling them took a third
        # of a second of every scan. A cache entry is keyed by the template's source, so an edited
        # template is compiled again.
        bytecode_cache=_bytecode_cache(),
    )
    env.filters["bytes"] = human_bytes
    env.filters["num"] = number
    env.filters["code"] = code_segments
    return env


# --- formatting -------------------------------------------------------------------------------

def human_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def number(n: int | float | None, empty: str = "–") -> str:
    if n is None:
        return empty
    return f"{n:,}" if isinstance(n, int) else f"{n:,.1f}"


def code_segments(text: str) -> list[tuple[bool, str]]:
    """Split documentation text on backticks: [(is_code, text)], rendered as text and <code>."""
    parts = text.split("`")
    return [(i % 2 == 1, part) for i, part in enumerate(parts) if part]


# --- the declared template context ----------------------------------------------------------------

@dataclass(frozen=True)
class DocPart:
    label: str                          # "", "What is wrong:", ...
    segments: list[tuple[bool, str]]


@dataclass(frozen=True)
class ReasonGroup:
    """One kind of finding that decides the verdict: its check, where it is found, what the tool offers."""

    title: str                          # "Needs a decision", "Repaired by the plan", "Debt"
    items: list[str]                    # one line per check: what, where, how many
    choices: list[str] = field(default_factory=list)       # what the tool offers, once for the kind


@dataclass(frozen=True)
class VerdictView:
    """The verdict (auditor/scan/verdict.py's `Verdict`) as the report's verdict box shows it."""

    ready: bool                         # not "Needs a decision"
    headline: str                       # one sentence
    groups: list[ReasonGroup]           # what decides the state, by kind: each kind (and its choices) once
    state: str = "needs-decision"       # auditor.verdict.State values
    label: str = "Needs a decision"
    totals: list[str] = field(default_factory=list)          # the plan in one line (reports/totals.py)
    accepted: list[str] = field(default_factory=list)        # accepted findings, with their reasons
    warnings: list[str] = field(default_factory=list)        # stale or expired acceptances
    baseline: dict | None = None        # {"new": [...], "known": n, "gone": [...]} with a baseline
    judged: Verdict | None = None       # the verdict behind it
    tone: str = "error"                 # ok | warning | error: the box's colour
    to_done: list[str] = field(default_factory=list)         # with the bridge on: the way to done


@dataclass(frozen=True)
class PlanStep:
    number: int
    id: str
    description: str
    lock: str
    lock_level: str                     # "high" | "medium" | "low" | "none", for styling next to the text
    tables: list[tuple[str, int | None]]
    rewrites: bool
    transactional: bool
    depends_on: list[str]
    sql: str
    done: bool


@dataclass(frozen=True)
class PlanView:
    steps: list[PlanStep]
    server_version_num: int | None
    server_version: str                 # as PostgreSQL spells it (18.6), "" when the plan does not say
    options: list[str]                  # the fix options as their flags ("--include users")
    exclusive_steps: int
    rewriting_steps: int
    concurrent_steps: int
    rewritten_bytes: int
    numbers: dict[str, str]             # step id -> "#n", for "after step"
    notes: list[str] = field(default_factory=list)   # the plan's notes (what it leaves out, and why)
    proposed: bool = False              # the plan `fix` would make (a scan's), not the one that ran


@dataclass(frozen=True)
class CheckSection:
    id: str
    title: str                          # the check's description
    severity: str
    status: str
    summary: str                        # first paragraph of the docstring
    doc: list[DocPart]
    findings: list[Finding]
    total_rows: int | None
    total_keys: int | None
    samples_file: str
    steps: list[PlanStep]
    repair: list[str] = field(default_factory=list)   # per finding: its repairing steps, acceptance, baseline


@dataclass(frozen=True)
class SeverityGroup:
    severity: str
    title: str
    count: int                          # findings
    checks: list[CheckSection]


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    text: str                           # the value as people read it
    x: float
    y: float
    width: float
    height: float
    cls: str = ""


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    caption: str
    kind: str                           # "hbar" | "stacked"
    width: int
    height: int
    bars: list[Bar]
    labels: list[tuple[float, float, str]]   # (x, y, text) axis labels
    ticks: list[tuple[float, str]]           # (position, text) value axis
    legend: list[tuple[str, str]]            # (css class, text)
    columns: list[str]                       # the table of numbers: header
    rows: list[list[str]]                    # the table of numbers: body (first cell is the row header)
    empty: str = ""                          # shown instead of the chart when there is nothing to draw


@dataclass(frozen=True)
class Comparison:
    before_generated_at: str
    after_generated_at: str
    rows: list[dict]
    fixed: int
    remaining: int
    new: int
    other_database: str | None = None   # the before scan's database, when it is not the same one


@dataclass(frozen=True)
class ReportContext:
    title: str
    database: str
    server_version: str
    generated_at: str
    settings: list[tuple[str, str]]
    verdict: VerdictView
    inventory: list
    groups: list[SeverityGroup]
    passed: list[CheckSection]
    other_checks: list                   # CheckResult rows: every check with its status
    charts: list[Chart]
    plan: PlanView | None
    comparison: Comparison | None
    notes: list[str] = field(default_factory=list)
    plan_section: Markup | None = None   # the plan section's HTML (`plan_section`), when there is a plan
    bridge: str | None = None            # the cutover bridge's line (auditor/bridge_state.py), when installed
    backup: str | None = None            # after fix --apply: the backup taken before the first change


# --- building the context ---------------------------------------------------------------------------

def documentation(check_id: str) -> tuple[str, list[DocPart]]:
    cls = next((c for c in REGISTRY if c.id == check_id), None)
    if cls is None:
        return "", []
    text = cls.documentation()
    first, _, rest = text.partition("\n\n")
    rest = " ".join(line.strip() for line in rest.splitlines() if line.strip())
    pattern = "(" + "|".join(re.escape(label) for label in DOC_LABELS) + ")"
    parts, label = [], ""
    for piece in re.split(pattern, rest):
        if piece in DOC_LABELS:
            label = piece
        elif piece.strip():
            parts.append(DocPart(label, code_segments(piece.strip())))
    return " ".join(first.split()), parts


def verdict_view(result: ScanResult, plan: PlanView | None = None, raw_plan: dict | None = None,
                 baseline: ScanResult | None = None, today: date | None = None,
                 judged: Verdict | None = None) -> VerdictView:
    """The verdict (auditor/scan/verdict.py; `judged` when the caller has it, so that every output of a
    run shows the same one) as the report shows it: state, headline, the plan's totals, what decides it
    grouped by kind (no step ids: those are the plan section's), accepted findings with their reasons,
    warnings, and the baseline's tally."""
    v = judged if judged is not None else judge(result, raw_plan, accept=acceptances_from(result.config),
                                                baseline=baseline, today=today)
    descriptions = {c.check: c.description or c.check for c in result.checks}

    def where(f: Finding) -> str:
        return f"{f.table}.{f.column}" if f.column else f.table

    def by_check(judged_findings: list[Judged]) -> dict[str, list[Judged]]:
        out: dict[str, list[Judged]] = {}
        for j in judged_findings:
            out.setdefault(j.finding.check, []).append(j)
        return out

    def line(check: str, js: list[Judged]) -> str:
        counted = count_text([j.finding for j in js])
        return (f"{descriptions.get(check, check)} ({check}): {', '.join(where(j.finding) for j in js)}"
                + (f" ({counted})" if counted != "–" else ""))

    groups: list[ReasonGroup] = []
    if v.state is State.NEEDS_DECISION:
        # one group per kind of choice: the same choices are offered once, for every finding they concern
        kinds: dict[tuple[str, ...], list[Judged]] = {}
        for j in v.undecided:
            kinds.setdefault(j.choices, []).append(j)
        for offered, js in kinds.items():
            groups.append(ReasonGroup("Needs a decision", [line(c, cj) for c, cj in by_check(js).items()],
                                      list(offered)))
        if v.failed_checks:
            groups.append(ReasonGroup("Could not be verified", [f"{c.check}: {c.reason}" for c in v.failed_checks],
                                      ["run the scan again (with a longer --timeout)"]))
    elif v.state is State.READY_ONCE_FIX:
        repaired = [j for j in v.findings if j.is_error and j.accepted is None]
        groups.append(ReasonGroup("Repaired by the plan", [line(c, js) for c, js in by_check(repaired).items()]))
    elif v.state in (State.MIGRATED, State.MIGRATED_BRIDGE_ON):
        debt = [j for j in v.debt if j.accepted is None]
        kinds = {}
        for j in debt:
            kinds.setdefault(j.choices, []).append(j)
        for offered, js in kinds.items():
            groups.append(ReasonGroup("Debt", [line(c, cj) for c, cj in by_check(js).items()], list(offered)))
    accepted = [f"{j.finding.check} on {where(j.finding)}: {j.finding.message} — accepted: {j.accepted.reason}"
                + (f" (until {j.accepted.until})" if j.accepted.until else "") for j in v.accepted]
    baseline_view = None
    if v.has_baseline:
        baseline_view = {"new": [f"{j.finding.check} on {where(j.finding)}: {j.finding.message}"
                                 for j in v.findings if j.baseline == "new"],
                         "known": sum(1 for j in v.findings if j.baseline == "known"),
                         "gone": [f"{f.check} on {where(f)}: {f.message}" for f in v.gone]}
    return VerdictView(ready=v.state.good, headline=v.headline, groups=groups, state=v.state.value, label=v.label,
                       totals=plan_totals(result, raw_plan, human_bytes),
                       accepted=accepted, warnings=list(v.warnings), baseline=baseline_view,
                       judged=v, tone=v.state.tone, to_done=list(v.to_done))


def lock_level(lock: str) -> str:
    lock = (lock or "none").upper()
    if lock in ("ACCESS EXCLUSIVE", "EXCLUSIVE"):
        return "high"
    if lock in ("SHARE ROW EXCLUSIVE", "SHARE", "SHARE UPDATE EXCLUSIVE"):
        return "medium"
    if lock == "NONE":
        return "none"
    return "low"


def plan_view(plan: dict, *, proposed: bool = False) -> PlanView:
    steps = []
    for i, s in enumerate(plan.get("steps", []), 1):
        sizes = s.get("table_bytes") or {}
        steps.append(PlanStep(
            number=i, id=str(s.get("id", "")), description=str(s.get("description", "")),
            lock=str(s.get("lock") or "none"), lock_level=lock_level(str(s.get("lock") or "none")),
            tables=[(str(t), sizes.get(t)) for t in s.get("tables", [])], rewrites=bool(s.get("rewrites")),
            transactional=bool(s.get("transactional", True)), depends_on=[str(d) for d in s.get("depends_on", [])],
            sql=str(s.get("sql", "")), done=bool(s.get("done"))))
    # the options as their flags (fix's plan.json says them so); another plan's as name=value
    flags = plan.get("option_flags")
    options = ([str(f) for f in flags] if isinstance(flags, list)
               else [f"{k}={v}" for k, v in (plan.get("options") or {}).items()])
    return PlanView(
        steps=steps, server_version_num=plan.get("server_version_num"), options=options,
        server_version=version_text(num) if isinstance(num := plan.get("server_version_num"), int) else "",
        exclusive_steps=sum(1 for s in steps if s.lock_level == "high"),
        rewriting_steps=sum(1 for s in steps if s.rewrites),
        concurrent_steps=sum(1 for s in steps if not s.transactional),
        rewritten_bytes=sum(b or 0 for s in steps if s.rewrites for _, b in s.tables),
        numbers={s.id: f"#{s.number}" for s in steps}, notes=[str(n) for n in plan.get("notes") or []],
        proposed=proposed)


def steps_for(check_id: str, findings: list[Finding], plan: PlanView | None, raw: dict | None,
              parents: dict[str, str] | None = None) -> list[PlanStep]:
    """The planned steps that repair a check's findings: those that declare it (`repairs`) for the
    finding's table (auditor/scan/verdict.py, `repairing_steps`), in plan order."""
    if plan is None or raw is None:
        return []
    wanted = {s["id"] for f in findings for s in repairing_steps(f, raw, parents)}
    return [s for s in plan.steps if s.id in wanted]


def repair_text(j: Judged | None, numbers: dict[str, str]) -> str:
    """What the report says next to a finding: which steps repair it, or its acceptance, or its decision."""
    if j is None:
        return ""
    parts = []
    if j.accepted is not None:
        parts.append(f"accepted: {j.accepted.reason}" + (f" (until {j.accepted.until})" if j.accepted.until else ""))
    if j.steps:
        parts.append("repaired by step" + ("s " if len(j.steps) != 1 else " ")
                     + ", ".join(numbers.get(s, s) for s in j.steps))
    elif j.is_error and j.accepted is None:
        parts.append("no step repairs it: needs a decision")
    if j.baseline:
        parts.append(f"{j.baseline} (baseline)")
    return "; ".join(parts) or "–"


def check_sections(result: ScanResult, plan: PlanView | None, raw_plan: dict | None,
                   judged: dict[int, Judged] | None = None) -> list[CheckSection]:
    by_check: dict[str, list[Finding]] = {}
    for f in result.findings:
        by_check.setdefault(f.check, []).append(f)
    sections = []
    for c in result.checks:
        findings = by_check.get(c.check, [])
        summary, doc = documentation(c.check)
        rows = [f.rows for f in findings if f.rows is not None]
        keys = [f.keys for f in findings if f.keys is not None]
        sections.append(CheckSection(
            id=c.check, title=c.description or c.check, severity=c.severity.value, status=c.status.value,
            summary=summary, doc=doc, findings=findings,
            total_rows=sum(rows) if rows else None, total_keys=sum(keys) if keys else None,
            samples_file=samples_file(c.check),
            steps=steps_for(c.check, findings, plan, raw_plan, partition_parents(result)),
            repair=[repair_text((judged or {}).get(id(f)), plan.numbers if plan else {}) for f in findings]))
    return sections


def severity_groups(sections: list[CheckSection]) -> list[SeverityGroup]:
    groups = []
    for sev in Severity:
        failing = [s for s in sections if s.findings and s.severity == sev.value]
        if failing:
            groups.append(SeverityGroup(sev.value, SEVERITY_TITLES[sev], sum(len(s.findings) for s in failing),
                                        failing))
    return groups


# --- charts --------------------------------------------------------------------------------------

def nice_max(value: float) -> float:
    if value <= 0:
        return 1
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover


def tick_values(top: float) -> list[float]:
    """Evenly spaced round values from 0 to `top` (a nice_max): 4, 5 or 2 intervals, whichever divides it."""
    for parts in (4, 5, 2):
        if top % parts == 0 and (top // parts) >= 1:
            return [top * i / parts for i in range(parts + 1)]
    return [0, top]


def hbar_chart(cid: str, title: str, caption: str, items: list[tuple[str, float, str]],
               columns: list[str], rows: list[list[str]], empty: str, cls: str = "", fmt=None) -> Chart:
    fmt = fmt or (lambda v: number(int(v)))
    label_w, bar_w, row_h, top = 300, 380, 28, 8
    top_value = nice_max(max((v for _, v, _ in items), default=0))
    bars: list[Bar] = []
    labels: list[tuple[float, float, str]] = []
    for i, (label, value, text) in enumerate(items):
        y = top + i * row_h
        width = bar_w * value / top_value if top_value else 0
        bars.append(Bar(label, value, text, label_w, y + 4, max(width, 1 if value else 0), row_h - 10, cls))
        labels.append((label_w - 8, y + row_h / 2 + 4, label if len(label) <= 44 else "…" + label[-43:]))
    height = top + len(items) * row_h + 24
    ticks = [(label_w + bar_w * v / top_value, fmt(v)) for v in tick_values(top_value)]
    return Chart(cid, title, caption, "hbar", label_w + bar_w + 90, height, bars, labels, ticks, [],
                 columns, rows, "" if items else empty)


def orphan_chart(result: ScanResult) -> Chart:
    status = next((c for c in result.checks if c.check == "orphaned_session_ids"), None)
    counts = {f.table: (f.rows or 0, f.keys or 0) for f in result.findings if f.check == "orphaned_session_ids"}
    names = [t.table for t in result.inventory if not t.is_source]
    names += [t for t in counts if t not in names]
    if status is None or status.status in (Status.SKIPPED, Status.ERROR):
        why = "the orphaned_session_ids check did not run" + (f" ({status.reason})" if status and status.reason else "")
        names = []
    else:
        why = "no key table besides the source table"
    items = [(n, counts.get(n, (0, 0))[0], number(counts.get(n, (0, 0))[0])) for n in names]
    rows = [[n, number(counts.get(n, (0, 0))[0]), number(counts.get(n, (0, 0))[1])] for n in names]
    caption = "Rows whose session id is in neither the master nor the source table."
    if items and not any(v for _, v, _ in items):
        # no bar to draw: a sentence, not an empty 0-1 axis
        caption += " None are left in any table."
        return hbar_chart("chart-orphans", "Orphaned rows per table", caption, [],
                          ["Table", "Orphaned rows", "Unknown sessions"], rows,
                          "No orphaned row is left in any key table.", "orphan")
    return hbar_chart("chart-orphans", "Orphaned rows per table", caption,
                      items, ["Table", "Orphaned rows", "Unknown sessions"], rows, f"Nothing to draw: {why}.", "orphan")


def _week_series(weeks: list[dict]) -> list[dict]:
    """Fill the weeks without any session with zeros, so the time axis is even (at most MAX_WEEKS_DRAWN)."""
    if not weeks:
        return []
    by_week = {w["week"]: w for w in weeks}
    start, end = date.fromisoformat(weeks[0]["week"]), date.fromisoformat(weeks[-1]["week"])
    if (end - start).days // 7 >= MAX_WEEKS_DRAWN:
        start = end - timedelta(weeks=MAX_WEEKS_DRAWN - 1)
    out, day = [], start
    while day <= end:
        key = day.isoformat()
        out.append(by_week.get(key, {"week": key, "registered": 0, "missing_from_master": 0, "orphaned": 0}))
        day += timedelta(weeks=1)
    return out


SESSION_SERIES = (("registered", "Registered in the master", "registered"),
                  ("missing_from_master", "Missing from the master", "missing"),
                  ("orphaned", "Orphaned", "orphan"))


def sessions_chart(result: ScanResult) -> Chart:
    stats = result.stats or {}
    weeks = _week_series(list(stats.get("sessions_by_week") or []))
    tables = stats.get("sessions_by_week_tables") or []
    skipped = stats.get("sessions_by_week_skipped") or []
    column = stats.get("created_at_column", "created_at")
    caption = (f"Each session counted once, in the week (Monday, UTC) of its first row in "
               f"{', '.join(tables) if tables else 'the key tables'} (column {column}).")
    if skipped:
        caption += " Left out: " + "; ".join(skipped) + "."
    if stats.get("sessions_by_week_truncated") or len(weeks) < len(stats.get("sessions_by_week") or []):
        caption += " Only the most recent weeks are shown."
    left, plot_w, plot_h, top = 60, 640, 220, 10
    totals = [sum(w[k] for k, _, _ in SESSION_SERIES) for w in weeks]
    top_value = nice_max(max(totals, default=0))
    slot = plot_w / max(len(weeks), 1)
    bar_w = max(min(slot * 0.7, 40), 1)
    bars: list[Bar] = []
    labels: list[tuple[float, float, str]] = []
    every = max(1, len(weeks) // 8)
    shown_year = ""
    for i, w in enumerate(weeks):
        x = left + i * slot + (slot - bar_w) / 2
        y = top + plot_h
        for key, text, cls in SESSION_SERIES:
            h = plot_h * w[key] / top_value
            if w[key]:
                y -= h
                bars.append(Bar(f"week of {w['week']}: {text.lower()}", w[key], number(w[key]), x, y, bar_w, h, cls))
        if i % every == 0:
            # month-day, with the year on the first label and where the year changes
            year = w["week"][:4]
            labels.append((x + bar_w / 2, top + plot_h + 16, w["week"] if year != shown_year else w["week"][5:]))
            shown_year = year
    ticks = [(top + plot_h * (1 - v / top_value), number(int(v))) for v in tick_values(top_value)]
    rows = [[w["week"]] + [number(w[k]) for k, _, _ in SESSION_SERIES] + [number(t)] for w, t in zip(weeks, totals)]
    if not weeks:
        if "sessions_by_week" not in stats:
            why = "this findings.json was written without weekly statistics."
        elif stats.get("sessions_by_week_error"):
            why = f"the weekly count {stats['sessions_by_week_error']}."
        elif not tables:
            why = f"no key table has a usable {column} column."
        else:
            why = "no session with a timestamp was found."
        empty = "Nothing to draw: " + why
    else:
        empty = ""
    return Chart("chart-sessions", "Sessions per week", caption, "stacked", left + plot_w + 10, top + plot_h + 30,
                 bars, labels, ticks, [(cls, text) for _, text, cls in SESSION_SERIES],
                 ["Week (Monday)"] + [text for _, text, _ in SESSION_SERIES] + ["Total"], rows, empty)


def partitions_chart(result: ScanResult) -> Chart:
    parts = list((result.stats or {}).get("partitions") or [])
    def short(p: dict) -> str:
        # the partition without its schema when it lives in its table's schema (the table of numbers has both)
        schema = p["table"].split(".", 1)[0] + "."
        name = p["partition"][len(schema):] if p["partition"].startswith(schema) else p["partition"]
        return name + (" (default)" if p.get("default") else "")

    biggest = max((p["bytes"] for p in parts), default=0)
    unit, unit_name = 1, "B"
    for name in ("kB", "MB", "GB", "TB"):
        if biggest >= unit * 1024:
            unit, unit_name = unit * 1024, name
    # drawn in whole units (kB, MB...) so that the axis reads 0, 100 kB, 200 kB rather than decimal bytes
    items = [(short(p), p["bytes"] / unit, human_bytes(p["bytes"])) for p in parts]
    rows = [[p["partition"], p["table"], p.get("bound", ""), human_bytes(p["bytes"]), number(p.get("rows"), "?")]
            for p in parts]
    partitioned = [t for t in result.inventory if t.kind == "partitioned"]
    why = ("no key table is partitioned." if not partitioned and "partitions" in (result.stats or {})
           else "this findings.json was written without partition statistics.")
    return hbar_chart("chart-partitions", "Partition sizes",
                      "On-disk size of each leaf partition of the partitioned key tables (indexes and TOAST included).",
                      items, ["Partition", "Table", "Bound", "Size", "Rows"], rows, f"Nothing to draw: {why}",
                      "partition",
                      fmt=lambda v: f"{v:g} {unit_name}" if v else "0")


def _safe(make, result: ScanResult) -> Chart:
    """A chart from a hand-edited or foreign findings.json with malformed statistics: a note, not a crash."""
    try:
        return make(result)
    except (KeyError, TypeError, ValueError, AttributeError):
        name = make.__name__.replace("_chart", "")
        return Chart(f"chart-{name}", name.capitalize(), "", "hbar", 0, 0, [], [], [], [], [], [],
                     "Nothing to draw: the statistics in this findings.json are malformed.")


# --- comparison ------------------------------------------------------------------------------------

def comparison(before: ScanResult, after: ScanResult) -> Comparison:
    def tally(result: ScanResult) -> dict[str, tuple[str, int, int | None]]:
        out = {}
        for c in result.checks:
            fs = [f for f in result.findings if f.check == c.check]
            rows = ([f.rows for f in fs if f.rows is not None]
                    + [f.keys for f in fs if f.rows is None and f.keys is not None])
            out[c.check] = (c.status.value, len(fs), sum(rows) if rows else None)
        return out

    b, a = tally(before), tally(after)
    severity = {c.check: c.severity.value for c in before.checks + after.checks}
    titles = {c.check: c.description or c.check for c in before.checks + after.checks}
    order = [c.check for c in after.checks] + [c.check for c in before.checks if c.check not in a]
    rows = []
    for check in order:
        bs, bn, br = b.get(check, ("not run", 0, None))
        as_, an, ar = a.get(check, ("not run", 0, None))
        if bn and not an and as_ in ("pass", "skipped"):
            change = "fixed"            # skipped after: e.g. the key is uuid now, text checks no longer apply
        elif an and not bn:
            change = "new"
        elif an and bn and (an < bn or (ar or 0) < (br or 0)):
            change = "improved"
        elif an and bn and (an > bn or (ar or 0) > (br or 0)):
            change = "worse"
        elif not an and not bn and bs == "skipped" and as_ == "pass":
            change = "passes"           # it could not apply before (e.g. no FK yet), it applies and passes now
        elif bs != as_:
            change = "changed"
        else:
            change = "unchanged"
        rows.append({"check": check, "title": titles[check], "severity": severity[check],
                     "before_status": bs, "after_status": as_, "before_findings": bn, "after_findings": an,
                     "before_count": number(br), "after_count": number(ar), "change": change})
    return Comparison(before.generated_at, after.generated_at, rows,
                      fixed=sum(1 for r in rows if r["change"] == "fixed"),
                      remaining=sum(1 for r in rows if r["after_findings"]),
                      new=sum(1 for r in rows if r["change"] == "new"),
                      other_database=None if before.database.get("name") == after.database.get("name")
                      else str(before.database.get("name")))


# --- entry points -------------------------------------------------------------------------------

@dataclass(frozen=True)
class _PlanOnly:
    plan: PlanView          # all that _plan.html reads of the report's context (StrictUndefined: checked)


def plan_section(plan: dict, *, proposed: bool = False) -> Markup:
    """The report's plan section (`_plan.html`) of `plan` (Plan.to_dict()) alone: the bytes report.html
    shows for it (`proposed`: the plan `fix` would make, as `repair_plan`). It depends on the plan only, so
    a caller that has the plan before the scan ends renders it then (the CLI's scan, on its plan thread
    while the scan's statements run: 250 steps at 365 daily partitions took 0.05-0.1 s after the scan)
    and passes it on (`render_html(plan_section=)`)."""
    view = plan_view(plan, proposed=proposed)
    return Markup(environment().get_template("_plan.html").render(r=_PlanOnly(view)))


def template_context(result: ScanResult, *, plan: dict | None = None, before: ScanResult | None = None,
                     title: str = "Session integrity audit", repair_plan: dict | None = None,
                     baseline: ScanResult | None = None, verdict: Verdict | None = None,
                     backup: str | None = None, rendered_plan: str | None = None) -> ReportContext:
    """`plan` (the plan that runs or ran) and, without it, `repair_plan` (the plan `fix` would make, e.g.
    the scan's) are shown in the plan section and decide the verdict; `verdict`: the run's own, so
    that the report says what its other outputs say. `rendered_plan`: that plan's section already
    rendered (`plan_section(<the plan shown>, proposed=plan is None)`), else it is rendered here."""
    matching = plan if plan is not None else repair_plan
    pv = plan_view(matching, proposed=plan is None) if matching is not None else None
    section = None
    if matching is not None:
        section = (Markup(rendered_plan) if rendered_plan is not None
                   else plan_section(matching, proposed=plan is None))
    the_verdict = verdict_view(result, pv, matching, baseline, judged=verdict)
    assert the_verdict.judged is not None
    sections = check_sections(result, pv, matching, {id(j.finding): j for j in the_verdict.judged.findings})
    cfg = result.config or {}
    settings = [(label, str(cfg[key])) for key, label in (
        ("key_column", "Session key column"), ("master", "Master table"), ("source", "Source table"),
        ("users", "Users table"), ("schemas", "Schemas")) if key in cfg]
    settings = [(k, v if v != "[]" else "all") for k, v in settings]
    return ReportContext(
        title=title, database=str(result.database.get("name", "?")),
        server_version=str(result.database.get("server_version", "?")), generated_at=result.generated_at,
        settings=settings, verdict=the_verdict, inventory=list(result.inventory),
        groups=severity_groups(sections), passed=[s for s in sections if not s.findings],
        other_checks=list(result.checks),
        charts=[_safe(orphan_chart, result), _safe(sessions_chart, result), _safe(partitions_chart, result)],
        plan=pv, comparison=comparison(before, result) if before is not None else None,
        notes=[str(n) for n in (result.stats or {}).get("notes", [])], bridge=bridge_line(result.stats or {}),
        backup=backup, plan_section=section)


def render_html(result: ScanResult, *, plan: dict | None = None, before: ScanResult | None = None,
                title: str = "Session integrity audit", repair_plan: dict | None = None,
                baseline: ScanResult | None = None, verdict: Verdict | None = None, backup: str | None = None,
                rendered_plan: str | None = None) -> str:
    """The report as one HTML document. `plan`: Plan.to_dict(); `before`: the scan taken before `fix --apply`;
    `repair_plan`: the plan `fix` would make (shown as such when there is no `plan`); `baseline`: an older
    scan whose findings are known (new / known / gone); `verdict`: the run's verdict of `result`;
    `rendered_plan`: the plan section already rendered (`plan_section`)."""
    ctx = template_context(result, plan=plan, before=before, title=title, repair_plan=repair_plan, baseline=baseline,
                           verdict=verdict, backup=backup, rendered_plan=rendered_plan)
    return environment().get_template("report.html").render(r=ctx)


def write_html(result: ScanResult, path: Path, **kw) -> Path:
    path.write_text(render_html(result, **kw), encoding="utf-8")
    return path

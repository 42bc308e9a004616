"""Render a scan (and optionally a plan and a second scan to compare) as one self-contained HTML file."""
from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from yumai_audit.model import ScanResult, Severity, Status


def environment() -> Environment:
    return Environment(
        loader=PackageLoader("yumai_audit.reports", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def verdict(result: ScanResult) -> dict:
    errors = [f for f in result.findings if f.severity is Severity.ERROR]
    failed = [c for c in result.checks if c.status is Status.ERROR]
    if not errors and not failed:
        return {"ready": True, "headline": "Ready: no error-severity finding.", "reasons": []}
    reasons = [f"{f.check}: {f.message}" for f in errors] + [f"{c.check} could not run: {c.reason}" for c in failed]
    return {"ready": False, "headline": f"Blocked by {len(errors) + len(failed)} error(s).", "reasons": reasons}


def render_html(result: ScanResult, *, title: str = "yumai-audit report") -> str:
    template = environment().get_template("report.html")
    return template.render(result=result, verdict=verdict(result), title=title, severities=list(Severity))


def write_html(result: ScanResult, path: Path, **kw) -> Path:
    path.write_text(render_html(result, **kw), encoding="utf-8")
    return path

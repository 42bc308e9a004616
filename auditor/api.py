"""The public Python API: what the CLI calls, usable from scripts and tests."""
from __future__ import annotations

from pathlib import Path

from .config import Config
from .connection import Target, connect, resolve_target
from .model import ScanResult
from .outputs import ensure_dir, write_csv, write_json
from .runner import Progress, run_scan


def scan(target: Target | str | None, config: Config | None = None, progress: Progress | None = None) -> ScanResult:
    """Scan the database read-only and return the result (nothing is written anywhere)."""
    if not isinstance(target, Target):
        target = resolve_target(target)
    with connect(target) as conn:
        return run_scan(conn, config or Config(), progress)


def write_scan(result: ScanResult, out_dir: str | Path) -> dict[str, Path]:
    """Write findings.json, findings.csv, samples-*.csv and report.html into `out_dir`."""
    from yumai_audit.reports.render import write_html

    out = ensure_dir(out_dir)
    paths = {"json": write_json(result, out / "findings.json")}
    csvs = write_csv(result, out)
    paths["csv"] = csvs[0]
    paths["html"] = write_html(result, out / "report.html")
    return paths


def report(findings: str | Path, out_dir: str | Path, *, compare: str | Path | None = None,
           plan: str | Path | None = None) -> tuple[ScanResult, dict[str, Path]]:
    """Render report.html (and findings.csv, samples-*.csv) from a saved findings.json.

    `findings` is the scan reported on (after a fix: the newer scan); `compare` the older scan it
    is compared with, check by check; `plan` a saved plan JSON shown in the plan section.
    """
    from yumai_audit.outputs import read_json, read_plan
    from yumai_audit.reports.render import write_html

    result = read_json(findings)
    before = read_json(compare) if compare is not None else None
    plan_data = read_plan(plan) if plan is not None else None
    out = ensure_dir(out_dir)
    csvs = write_csv(result, out)
    paths = {"csv": csvs[0], "html": write_html(result, out / "report.html", plan=plan_data, before=before)}
    return result, paths

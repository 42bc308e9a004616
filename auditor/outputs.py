"""Writing a scan to files: findings.json (the contract), findings.csv and per-check sample CSVs.

The CSVs are written with the standard csv module, as pandas' `to_csv` writes them (minimal quoting,
"\n" line ends, NULL as empty): importing pandas took longer than the whole scan's SQL at small scale
and a quarter of it at scale 50. `findings_frame` still gives the findings as a pandas DataFrame."""
from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from .errors import AuditError
from .model import ScanResult

CSV_COLUMNS = ["check", "severity", "table", "column", "rows", "keys", "references", "sample", "message"]


def ensure_dir(path: str | Path) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AuditError(f"cannot create output directory {out}: {exc.strerror}") from None
    return out


LOCK_FILE = ".yumai-audit.lock"


class OutputInUse(AuditError):
    """Another yumai-audit process is writing into the same output directory."""


@contextlib.contextmanager
def out_lock(out: Path) -> Iterator[Path]:
    """Hold `out` for one run: an exclusive flock on `out/.yumai-audit.lock`, taken before anything is
    written there, released when the run ends or its process dies (no stale lock). A second run
    with the same directory is refused at once, before it writes anything."""
    path = out / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise AuditError(f"cannot write into {out}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            raise OutputInUse(f"another yumai-audit run is writing into {out}"
                              + (f" (process {holder})" if holder.isdigit() else "")
                              + "; wait for it to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield path
    finally:
        os.close(fd)


def check_writable_file(path: str | Path, what: str) -> Path:
    """Refuse, before any work, a file path that cannot be written: a directory, a missing or non-directory parent."""
    file = Path(path)
    if file.is_dir():
        raise AuditError(f"{what} {file}: is a directory, not a file")
    parent = file.parent if str(file.parent) else Path(".")
    if not parent.is_dir():
        raise AuditError(f"{what} {file}: {parent} is not an existing directory")
    return file


def write_text(path: Path, text: str) -> Path:
    """Write a file; failing to is one AuditError line that names the file."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise AuditError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def write_json(result: ScanResult, path: Path, verdict=None) -> Path:
    """findings.json, with its `verdict` key (`verdict`: the scan's, when judged; else judged on its own)."""
    from .scan.formats import findings_json

    return write_text(path, findings_json(result, verdict))


def load_json(path: str | Path, what: str):
    """A JSON document from a file; a missing or unreadable file is an AuditError naming `what` it should be."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AuditError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise AuditError(f"{path}: not a {what} file ({exc})") from None


def write_formats(result: ScanResult, out: Path, verdict=None) -> dict[str, Path]:
    """junit.xml, results.sarif and summary.md beside findings.json (`verdict`: the scan's, when judged)."""
    from .scan.formats import FILES, RENDERERS

    return {fmt: write_text(out / name, RENDERERS[fmt](result, verdict)) for fmt, name in FILES.items()}


def append_step_summary(result: ScanResult, verdict=None) -> Path | None:
    """In a GitHub Actions job ($GITHUB_STEP_SUMMARY set): append the Markdown summary to the job's summary."""
    import os

    from .scan.formats import markdown

    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    try:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(markdown(result, verdict))
    except OSError as exc:
        raise AuditError(f"cannot append to $GITHUB_STEP_SUMMARY ({target}): {exc.strerror or exc}") from None
    return Path(target)


def read_json(path: str | Path) -> ScanResult:
    data = load_json(path, "findings.json")
    if not isinstance(data, dict) or data.get("version") != 1 or "findings" not in data:
        raise AuditError(f"{path}: not a findings.json file (version 1)")
    try:
        return ScanResult.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise AuditError(f"{path}: malformed findings.json ({exc})") from None


def read_plan(path: str | Path) -> dict:
    """A plan saved as JSON (`Plan.to_dict()`): {"steps": [...], ...}."""
    data = load_json(path, "plan JSON")
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list) or not all(
            isinstance(s, dict) for s in data["steps"]):
        raise AuditError(f"{path}: not a plan JSON file (no list of steps)")
    return data


def _finding_rows(result: ScanResult) -> list[dict]:
    # the sample as a JSON array: an empty or padded key (exactly what a malformed key can be) survives
    return [{**f.to_dict(), "sample": json.dumps(f.sample, ensure_ascii=False)} for f in result.findings]


def findings_frame(result: ScanResult):
    """The findings as a pandas DataFrame (the columns of findings.csv)."""
    import pandas as pd

    frame = pd.DataFrame(_finding_rows(result), columns=CSV_COLUMNS)
    return frame.astype({"rows": "Int64", "keys": "Int64"})


def _write_rows(path: Path, columns: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if row.get(c) is None else row.get(c) for c in columns] for row in rows])


def write_csv(result: ScanResult, out: Path) -> list[Path]:
    """findings.csv, one row per finding, and samples-<check>.csv per failing check (keys only)."""
    written = [out / "findings.csv"]
    _write_rows(written[0], CSV_COLUMNS, _finding_rows(result))
    by_check: dict[str, list[dict]] = {}
    for f in result.findings:
        for value in f.sample:
            by_check.setdefault(f.check, []).append(
                {"table": f.table, "column": f.column, "sample_of": f.details.get("sample_of", "session id"),
                 "value": value})
    for check, rows in by_check.items():
        path = out / f"samples-{re.sub(r'[^a-z0-9_]', '_', check)}.csv"
        _write_rows(path, ["table", "column", "sample_of", "value"], rows)
        written.append(path)
    return written

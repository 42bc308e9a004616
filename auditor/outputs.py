"""Writing a scan to files: findings.json (the contract), findings.csv and per-check sample CSVs (from the
scan's DataFrames, auditor/frames.py), the CI formats beside them."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from .errors import AuditError
from .model import ScanResult
from .scan.formats import FILES, RENDERERS, findings_json, markdown


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
    return {fmt: write_text(out / name, RENDERERS[fmt](result, verdict)) for fmt, name in FILES.items()}


def append_step_summary(result: ScanResult, verdict=None) -> Path | None:
    """In a GitHub Actions job ($GITHUB_STEP_SUMMARY set): append the Markdown summary to the job's summary."""
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


def samples_file(check: str) -> str:
    """The sample file of a check: samples-<check>.csv, any character other than [a-z0-9_] as `_`."""
    return f"samples-{re.sub(r'[^a-z0-9_]', '_', check)}.csv"


"""A scan as pandas DataFrames: its findings, the sample keys, the sessions per week and the partitions.

findings.csv and samples-<check>.csv are written from these frames (`write_csv`). The module imports
pandas when it is imported itself, and nothing else imports it before a frame or a CSV is asked for:
the CLI's `--help` and a scan's SQL do not wait for pandas.

Text columns are pandas' `string` dtype (missing: <NA>), counts `Int64` where a count can be missing
(a finding without rows, a partition whose count timed out) and `int64` where it cannot, `severity` an
ordered categorical (error < warning < info, so sorting puts errors first), `week` a datetime (the Monday).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .model import ScanResult, Severity
from .outputs import samples_file

FINDING_COLUMNS = ["check", "severity", "table", "column", "rows", "keys", "references", "sample", "message"]
SAMPLE_COLUMNS = ["check", "table", "column", "sample_of", "value"]
WEEK_COLUMNS = ["week", "registered", "missing_from_master", "orphaned"]
PARTITION_COLUMNS = ["table", "partition", "bound", "default", "bytes", "rows"]

TEXT = pd.StringDtype()
SEVERITY = pd.CategoricalDtype([s.value for s in Severity], ordered=True)


def _frame(rows: list[dict], dtypes: dict[str, object]) -> pd.DataFrame:
    """`rows` as a frame with exactly these columns, in this order and of these dtypes (also when empty)."""
    columns = list(dtypes)
    frame = pd.DataFrame([[row.get(c) for c in columns] for row in rows], columns=columns, dtype=object)
    return frame.astype(dtypes)


def findings_frame(result: ScanResult) -> pd.DataFrame:
    """One row per finding, the columns of findings.csv. `sample` is the finding's sample keys as a JSON
    array (text), so that an empty or padded key survives in the CSV; `samples_frame` has one row per key."""
    rows = [{**f.to_dict(), "sample": json.dumps(f.sample, ensure_ascii=False)} for f in result.findings]
    return _frame(rows, {"check": TEXT, "severity": SEVERITY, "table": TEXT, "column": TEXT, "rows": "Int64",
                         "keys": "Int64", "references": TEXT, "sample": TEXT, "message": TEXT})


def samples_frame(result: ScanResult) -> pd.DataFrame:
    """One row per sample key of every finding, in the findings' order: the check, where it was found,
    what the key is a sample of (`session id`, or e.g. `primary key` for rows without one) and the key."""
    rows = [{"check": f.check, "table": f.table, "column": f.column,
             "sample_of": f.details.get("sample_of", "session id"), "value": value}
            for f in result.findings for value in f.sample]
    return _frame(rows, dict.fromkeys(SAMPLE_COLUMNS, TEXT))


def weeks_frame(result: ScanResult) -> pd.DataFrame:
    """The report's sessions per week: each session once, in the week (Monday, UTC) of its first row, as
    registered in the master, missing from the master, or orphaned. Only the weeks with a session, oldest
    first (`.set_index("week").asfreq("W-MON", fill_value=0)` fills the others)."""
    weeks = list((result.stats or {}).get("sessions_by_week") or [])
    frame = _frame(weeks, {"week": TEXT, "registered": "int64", "missing_from_master": "int64",
                           "orphaned": "int64"})
    frame["week"] = pd.to_datetime(frame["week"].astype(object), format="%Y-%m-%d")
    return frame


def partitions_frame(result: ScanResult) -> pd.DataFrame:
    """One row per leaf partition of the partitioned key tables: its table, bound, whether it is the default
    partition, size on disk (bytes) and exact rows (<NA> when the count timed out)."""
    parts = list((result.stats or {}).get("partitions") or [])
    return _frame(parts, {"table": TEXT, "partition": TEXT, "bound": TEXT, "default": "bool", "bytes": "int64",
                          "rows": "Int64"})


def write_frame(frame: pd.DataFrame, path: Path) -> Path:
    """The CSV dialect of findings.csv: a header, minimal quoting, "\\n" line ends, a missing value empty."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        frame.to_csv(fh, index=False, lineterminator="\n", na_rep="")
    return path


def write_csv(result: ScanResult, out: Path) -> list[Path]:
    """findings.csv, one row per finding, and samples-<check>.csv per check with sample keys (keys only)."""
    written = [write_frame(findings_frame(result), out / "findings.csv")]
    samples = samples_frame(result)
    for check, rows in samples.groupby("check", sort=False):
        written.append(write_frame(rows[SAMPLE_COLUMNS[1:]], out / samples_file(str(check))))
    return written

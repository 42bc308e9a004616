"""The scan as pandas DataFrames (auditor/frames.py): exact columns and dtypes, a row per finding, per sample
key, per week and per partition; the CSVs written from them, byte for byte; pandas imported only when used."""
from __future__ import annotations

import csv
import subprocess
import sys

import pandas as pd

from yumai_audit import api
from yumai_audit.config import Config
from yumai_audit.demo import build_demo_database
from yumai_audit.frames import write_csv
from yumai_audit.model import Finding, ScanResult, Severity

FINDING_DTYPES = {"check": "string", "severity": "category", "table": "string", "column": "string", "rows": "Int64",
                  "keys": "Int64", "references": "string", "sample": "string", "message": "string"}


def dtypes(frame: pd.DataFrame) -> dict[str, str]:
    return {c: str(t) for c, t in frame.dtypes.items()}


def synthetic() -> ScanResult:
    findings = [
        Finding("orphaned_session_ids", Severity.ERROR, "chatbot.user_interactions", "session_id",
                'msg, with "quotes"', rows=7, keys=3, references="chatbot.session_master", sample=["a", "b"]),
        Finding("null_session_ids", Severity.WARNING, "s.t", None, "multi\nline", sample=["", " x ", 'q"', "é,"],
                details={"sample_of": "primary key"}),
        Finding("x-y", Severity.INFO, "s.u", "c", "", rows=0)]
    return ScanResult(database={}, generated_at="", config={}, checks=[], findings=findings)


def test_frames_of_a_result_have_exact_columns_dtypes_and_values():
    result = synthetic()
    findings = api.findings_frame(result)
    assert dtypes(findings) == FINDING_DTYPES
    assert list(findings["severity"].cat.categories) == ["error", "warning", "info"] and findings["severity"].cat.ordered
    assert findings["rows"].tolist() == [7, pd.NA, 0] and findings["keys"].tolist() == [3, pd.NA, pd.NA]
    assert findings["column"].isna().tolist() == [False, True, False]
    assert findings.sort_values("severity", ascending=False)["check"].tolist() == ["x-y", "null_session_ids",
                                                                                    "orphaned_session_ids"]
    samples = api.samples_frame(result)
    assert dtypes(samples) == dict.fromkeys(["check", "table", "column", "sample_of", "value"], "string")
    assert len(samples) == sum(len(f.sample) for f in result.findings) == 6
    assert samples["value"].tolist() == ["a", "b", "", " x ", 'q"', "é,"]
    assert samples["sample_of"].tolist() == ["session id"] * 2 + ["primary key"] * 4


def test_frames_of_an_empty_result_keep_their_columns_and_dtypes():
    empty = ScanResult(database={}, generated_at="", config={}, checks=[], findings=[])
    assert dtypes(api.findings_frame(empty)) == FINDING_DTYPES and len(api.findings_frame(empty)) == 0
    assert list(api.samples_frame(empty)) == ["check", "table", "column", "sample_of", "value"]
    weeks = api.weeks_frame(empty)
    assert list(weeks) == ["week", "registered", "missing_from_master", "orphaned"] and len(weeks) == 0
    assert pd.api.types.is_datetime64_any_dtype(weeks["week"])
    parts = api.partitions_frame(empty)
    assert dtypes(parts) == {"table": "string", "partition": "string", "bound": "string", "default": "bool",
                             "bytes": "int64", "rows": "Int64"} and len(parts) == 0


def test_the_csvs_are_written_from_the_frames_byte_for_byte(tmp_path):
    """The bytes the csv module wrote before the CSVs came from the frames: minimal quoting, "\\n", NULL empty."""
    paths = write_csv(synthetic(), tmp_path)
    assert [p.name for p in paths] == ["findings.csv", "samples-orphaned_session_ids.csv",
                                       "samples-null_session_ids.csv"]
    assert paths[0].read_bytes().decode() == (
        'check,severity,table,column,rows,keys,references,sample,message\n'
        'orphaned_session_ids,error,chatbot.user_interactions,session_id,7,3,chatbot.session_master,'
        '"[""a"", ""b""]","msg, with ""quotes"""\n'
        'null_session_ids,warning,s.t,,,,,"["""", "" x "", ""q\\"""", ""é,""]","multi\nline"\n'
        'x-y,info,s.u,c,0,,,[],\n')
    assert paths[1].read_bytes().decode() == (
        "table,column,sample_of,value\nchatbot.user_interactions,session_id,session id,a\n"
        "chatbot.user_interactions,session_id,session id,b\n")
    assert paths[2].read_bytes().decode() == (
        'table,column,sample_of,value\ns.t,,primary key,\ns.t,,primary key, x \ns.t,,primary key,"q"""\n'
        's.t,,primary key,"é,"\n')


def test_frames_of_the_demo_scan_match_its_findings_weeks_and_partitions(db, tmp_path):
    build_demo_database(db.conninfo)
    result = api.scan(db.conninfo, Config())
    findings = api.findings_frame(result)
    assert dtypes(findings) == FINDING_DTYPES
    assert len(findings) == len(result.findings) > 0
    assert findings[["check", "table"]].values.tolist() == [[f.check, f.table] for f in result.findings]
    assert findings["rows"].sum() == sum(f.rows or 0 for f in result.findings)
    samples = api.samples_frame(result)
    assert len(samples) == sum(len(f.sample) for f in result.findings)
    orphans = samples[samples["check"] == "orphaned_session_ids"]
    assert orphans.groupby("table").size().to_dict() == {
        "chatbot.recommendations_log": 2, "chatbot.user_feedback": 1, "chatbot.user_interactions": 3}
    # the weekly chart of the demo: 400 sessions missing from the master, 6 orphaned, none registered
    weeks = api.weeks_frame(result)
    assert len(weeks) == len(result.stats["sessions_by_week"]) > 0
    assert weeks[["registered", "missing_from_master", "orphaned"]].sum().to_dict() == {
        "registered": 0, "missing_from_master": 400, "orphaned": 6}
    assert (weeks["week"].dt.day_of_week == 0).all() and weeks["week"].is_monotonic_increasing
    parts = api.partitions_frame(result)
    assert dict(zip(parts["partition"], parts["rows"])) == {
        "chatbot.conversations_2026_08": 1860, "chatbot.conversations_2026_09": 1430,
        "chatbot.conversations_2026_10": 0, "chatbot.conversations_default": 702}
    assert parts["default"].tolist() == [False, False, False, True] and (parts["bytes"] > 0).all()
    # the CSVs of `scan --out` are these frames
    api.write_scan(result, tmp_path)
    with open(tmp_path / "findings.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(findings)
    assert pd.read_csv(tmp_path / "samples-orphaned_session_ids.csv")["value"].tolist() == orphans["value"].tolist()
    # a saved findings.json gives the same frames (the report's statistics are in it)
    saved = api.read_baseline(tmp_path / "findings.json")
    for frame in (api.findings_frame, api.samples_frame, api.weeks_frame, api.partitions_frame):
        pd.testing.assert_frame_equal(frame(saved), frame(result))


def test_help_and_the_cli_import_neither_pandas_nor_sqlalchemy():
    """`yumai-audit --help` (and a command's) stay fast: pandas and SQLAlchemy are imported when used only."""
    code = ("import sys\nfrom yumai_audit.cli import cli\n"
            "for args in (['--help'], ['scan', '--help'], ['fix', '--help'], ['bridge', 'status', '--help']):\n"
            "    try:\n        cli.main(args, prog_name='yumai-audit')\n    except SystemExit as exc:\n"
            "        assert exc.code == 0, (args, exc.code)\n"
            "print(sorted(m for m in ('pandas', 'numpy', 'sqlalchemy') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]"
    frames = subprocess.run([sys.executable, "-c", "import sys\nfrom yumai_audit import api\n"
                             "print('pandas' in sys.modules)\napi.findings_frame\nprint('pandas' in sys.modules)"],
                            capture_output=True, text=True, check=True).stdout
    assert frames.split() == ["False", "True"]   # the API loads pandas with its first frame, not before

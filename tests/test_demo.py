"""The demo database: the scan finds exactly the defects the demo plants."""
import os
import subprocess
import sys

from yumai_audit.api import scan
from yumai_audit.config import Config
from yumai_audit.demo import EXPECTED, build_demo_database


def test_scan_of_demo_database_finds_exactly_the_planted_defects(db):
    build_demo_database(db.conninfo)
    result = scan(db.conninfo, Config())
    counted = {(f.check, f.table, f.column): (f.rows, f.keys) for f in result.findings if (f.check, f.table, f.column) in EXPECTED}
    assert counted == EXPECTED
    by_check = {}
    for f in result.findings:
        by_check.setdefault(f.check, []).append(f)
    assert len(by_check["unconstrained_fk"]) == 8
    assert [f.table for f in by_check["key_type_mismatch"]] == ["chatbot.recommendations_log"]
    assert sorted(f.table for f in by_check["unindexed_fk_columns"]) == [
        "chatbot.conversations", "chatbot.recommendations_log", "chatbot.user_feedback"]
    assert result.exit_code == 1


def test_demo_decisions_load_where_tomllib_is_missing():
    """Python 3.10 has no tomllib: the demo's decisions are read with the tomli fallback of config.py
    (`yumai-audit demo` crashed there with ModuleNotFoundError)."""
    code = ("import sys; sys.modules['tomllib'] = None\n"
            "from yumai_audit.demo import decisions_config\n"
            "print([a.check for a in decisions_config().accept])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['conflicting_session_users']"

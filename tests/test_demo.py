"""The demo database: the scan finds exactly the defects the demo plants."""
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

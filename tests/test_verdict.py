"""The verdict (auditor/scan/verdict.py): states, declared repairs, acceptances, baseline, severity, exit codes.
The first part needs no database; the last part builds purpose-made databases for each state."""
from __future__ import annotations

import dataclasses
import json
from datetime import date

import pytest
from click.testing import CliRunner
from report_fixtures import scan_result

from yumai_audit import api
from yumai_audit.cli import cli
from yumai_audit.config import Acceptance, load_config
from yumai_audit.demo import DECISIONS, FIX_OPTIONS, build_demo_database, decisions_config
from yumai_audit.errors import ConfigError
from yumai_audit.model import Finding, Severity, Status
from yumai_audit.scan.verdict import State, apply_severity, judge, repairing_steps, summary_lines

TODAY = date(2026, 12, 1)
ORPHANS = ("orphaned_session_ids", "chatbot.user_interactions", "session_id")


def step(step_id, tables, repairs, depends_on=()):
    return {"id": step_id, "tables": list(tables), "repairs": list(repairs), "depends_on": list(depends_on),
            "done": False}


def fk_finding(table, column, ref):
    return Finding("unconstrained_fk", Severity.ERROR, table, column, f"{table}.{column} has no FK", references=ref)


def migrated(result):
    for t in result.inventory:
        t.fk_state = "valid"
    return result


# --- states -----------------------------------------------------------------------------------------

def test_each_state_from_hand_built_scans():
    plan = {"steps": [step("orphans:ui", ["chatbot.user_interactions"], ["orphaned_session_ids"])]}
    assert judge(scan_result(blocked=False), today=TODAY).state is State.READY
    assert judge(scan_result(), plan, today=TODAY).state is State.READY_ONCE_FIX
    v = judge(scan_result(), None, today=TODAY)
    assert v.state is State.NEEDS_DECISION and [j.finding.check for j in v.undecided] == ["orphaned_session_ids"]
    assert v.undecided[0].choices[-1].startswith("accept it")
    assert judge(migrated(scan_result()), today=TODAY).state is State.MIGRATED
    assert judge(migrated(scan_result(blocked=False)), today=TODAY).state is State.MIGRATED_CLEAN
    # a warning is never debt, a check that could not finish always needs a decision
    failed = scan_result(blocked=False)
    failed.checks[0].status, failed.checks[0].reason = Status.ERROR, "timed out"
    assert judge(failed, today=TODAY).state is State.NEEDS_DECISION and judge(failed, today=TODAY).exit_code() == 1


def test_exit_codes_follow_the_findings_that_count():
    plan = {"steps": [step("orphans:ui", ["chatbot.user_interactions"], ["orphaned_session_ids"])]}
    assert judge(scan_result(blocked=False), today=TODAY).exit_code() == 0          # a warning only
    v = judge(scan_result(), plan, today=TODAY)
    assert v.exit_code() == 1                # a scan: not applied yet, it counts
    assert v.exit_code(planned=True) == 0    # a dry run of fix: the plan repairs it
    assert judge(scan_result(), None, today=TODAY).exit_code(planned=True) == 1
    accepted = judge(scan_result(), None, accept=[Acceptance("orphaned_session_ids", "known ghosts")], today=TODAY)
    assert accepted.exit_code() == 0 and accepted.state is State.READY


def test_a_session_fk_step_never_passes_for_the_user_fk_of_the_same_table():
    t = "chatbot.conversations"
    plan = {"steps": [
        step("fk-add:c.p1", ["chatbot.conversations_p1", "chatbot.session_master"], ["unconstrained_fk"]),
        step("fk-validate:c.p1", ["chatbot.conversations_p1"], ["unconstrained_fk"], ["fk-add:c.p1"]),
        step("fk-add:c", ["chatbot.session_master"], ["unconstrained_fk"], ["fk-validate:c.p1"]),   # the parent
        step("orphans:ui", ["chatbot.user_interactions"], ["orphaned_session_ids"], ["fk-add:c"]),
    ]}
    parents = {"chatbot.conversations_p1": t}
    session = fk_finding(t, "session_id", "chatbot.session_master.session_id")
    user = fk_finding(t, "user_id", "chatbot.users.id")
    assert [s["id"] for s in repairing_steps(session, plan, parents)] == ["fk-add:c.p1", "fk-validate:c.p1", "fk-add:c"]
    assert repairing_steps(user, plan, parents) == []
    assert repairing_steps(session, plan, {}) == []        # without the partition map, p1 is another table
    orphan = Finding("orphaned_session_ids", Severity.ERROR, t, "session_id", "x")
    assert repairing_steps(orphan, plan, parents) == []      # the check matches, the table does not


# --- acceptances ----------------------------------------------------------------------------------------

def test_acceptance_matching_expiry_and_stale_entries():
    result = scan_result()
    entries = [Acceptance("orphaned_session_ids", "ghost sessions from the 2025 import", table="chatbot.user_feedback"),
               Acceptance("orphaned_session_ids", "reviewed", table="chatbot.user_interactions", column="session_id",
                          until=date(2026, 11, 30)),
               Acceptance("null_session_ids", "anonymous rows")]
    v = judge(result, None, accept=entries, today=TODAY)
    assert [j.finding.check for j in v.accepted] == ["null_session_ids"]
    assert v.warnings == (
        "acceptance of orphaned_session_ids on chatbot.user_feedback matches no finding any more: remove it from "
        "yumai-audit.toml",
        "acceptance of orphaned_session_ids on chatbot.user_interactions.session_id until 2026-11-30 expired on "
        "2026-11-30: it no longer applies")
    assert v.exit_code() == 1
    v = judge(result, None, accept=entries, today=date(2026, 11, 30))       # the last day still applies
    assert sorted(j.finding.check for j in v.accepted) == ["null_session_ids", "orphaned_session_ids"]
    assert v.accepted[0].accepted.reason in ("reviewed", "anonymous rows") and v.exit_code() == 0
    wrong_column = Acceptance("orphaned_session_ids", "x", column="user_id")
    assert judge(result, None, accept=[wrong_column], today=TODAY).accepted == []


# --- baseline ---------------------------------------------------------------------------------------------

def test_baseline_new_known_gone_and_more_rows_is_new():
    old = scan_result()
    old.findings.append(Finding("orphaned_user_ids", Severity.ERROR, "chatbot.user_feedback", "user_id", "1 row",
                                rows=1))
    now = scan_result()
    v = judge(now, None, baseline=old, today=TODAY)
    assert [(j.finding.check, j.baseline) for j in v.findings] == [("orphaned_session_ids", "known"),
                                                                   ("null_session_ids", "known")]
    assert [f.check for f in v.gone] == ["orphaned_user_ids"] and v.exit_code() == 0
    assert v.to_dict()["gone"][0]["table"] == "chatbot.user_feedback"
    worse = scan_result()
    worse.findings[0].rows = 8
    assert judge(worse, None, baseline=old, today=TODAY).findings[0].baseline == "new"
    assert judge(worse, None, baseline=old, today=TODAY).exit_code() == 1
    elsewhere = scan_result(table="chatbot.user_feedback")
    assert judge(elsewhere, None, baseline=old, today=TODAY).findings[0].baseline == "new"


# --- severity ---------------------------------------------------------------------------------------------

def test_severity_override_changes_findings_checks_and_the_exit_code():
    result = apply_severity(scan_result(blocked=False), (("null_session_ids", "error"),))
    assert [f.severity for f in result.findings] == [Severity.ERROR]
    assert next(c for c in result.checks if c.check == "null_session_ids").severity is Severity.ERROR
    assert judge(result, today=TODAY).exit_code() == 1
    down = apply_severity(scan_result(), (("orphaned_session_ids", "warning"),))
    assert judge(down, today=TODAY).exit_code() == 0 and judge(down, today=TODAY).state is State.READY


# --- config ---------------------------------------------------------------------------------------------

def test_config_reads_accept_and_severity(tmp_path):
    path = tmp_path / "yumai-audit.toml"
    path.write_text('[severity]\nunindexed_fk_columns = "error"\n\n[[accept]]\ncheck = "orphaned_user_ids"\n'
                    'table = "chatbot.user_feedback"\nreason = "test users"\nuntil = 2027-01-31\n')
    cfg = load_config(path)
    assert cfg.severity == (("unindexed_fk_columns", "error"),)
    assert cfg.accept == (Acceptance("orphaned_user_ids", "test users", "chatbot.user_feedback", None,
                                     date(2027, 1, 31)),)
    assert cfg.as_dict()["accept"] == [{"check": "orphaned_user_ids", "reason": "test users",
                                        "table": "chatbot.user_feedback", "until": "2027-01-31"}]
    json.dumps(cfg.as_dict())


@pytest.mark.parametrize("text, message", [
    ('[[accept]]\ncheck = "orphaned_user_ids"\n', "reason is required"),
    ('[[accept]]\ncheck = "no_such_check"\nreason = "x"\n', "check must be a check id"),
    ('[[accept]]\ncheck = "orphaned_user_ids"\nreason = "x"\nuntil = "soon"\n', "until must be a date"),
    ('[[accept]]\ncheck = "orphaned_user_ids"\nreason = "x"\nrows = 3\n', "unknown key 'rows'"),
    ('[severity]\norphaned_user_ids = "fatal"\n', "must be one of error, warning, info"),
    ('[severity]\nnope = "error"\n', "unknown check id 'nope'"),
])
def test_bad_accept_or_severity_is_one_config_error(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    res = CliRunner().invoke(cli, ["scan", "--dsn", "postgresql://nobody@127.0.0.1:1/x", "--config", str(path)])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and message.split("'")[0] in res.output


# --- on real databases: each state, the exit codes ------------------------------------------------------

CLEAN_SCHEMA = """
CREATE SCHEMA shop;
CREATE TABLE shop.customers (id int PRIMARY KEY);
CREATE TABLE shop.orders (id int PRIMARY KEY, customer_id int REFERENCES shop.customers(id));
CREATE INDEX ON shop.orders (customer_id);
INSERT INTO shop.customers VALUES (1), (2);
INSERT INTO shop.orders VALUES (1, 1), (2, 2);
"""
# Sessions without users: every error finding is one the migration repairs (no user column, no decision).
NO_USERS = """
CREATE SCHEMA chatbot;
CREATE TABLE chatbot.conversations (id bigserial PRIMARY KEY, session_id uuid, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE chatbot.clicks (id bigserial PRIMARY KEY, session_id uuid);
INSERT INTO chatbot.conversations (session_id) SELECT md5('s' || g)::uuid FROM generate_series(1, 5) g;
INSERT INTO chatbot.clicks (session_id) SELECT md5('s' || g)::uuid FROM generate_series(1, 5) g;
INSERT INTO chatbot.clicks (session_id) VALUES (md5('ghost')::uuid);
"""


def scan_cli(db, tmp_path, *extra):
    return CliRunner().invoke(cli, ["scan", "--dsn", db.conninfo, "--out", str(tmp_path / "scan"), *extra])


def test_ready_on_a_clean_database_without_session_tables(db, tmp_path):
    db.execute(CLEAN_SCHEMA)
    res = scan_cli(db, tmp_path)
    assert res.exit_code == 0, res.output
    assert res.output.startswith("Verdict: Ready. No error finding stands in the way of the cutover.")


def test_ready_once_fix_runs_then_migrated_and_clean(db, tmp_path):
    db.execute(NO_USERS)
    res = scan_cli(db, tmp_path)
    assert res.exit_code == 1, res.output           # not applied yet: the findings count
    assert res.output.startswith("Verdict: Ready once fix runs.")
    assert "(repaired by orphans:chatbot.clicks, settle:chatbot.clicks)" in res.output
    html = (tmp_path / "scan" / "report.html").read_text()
    assert "Ready once fix runs" in html and "repaired by step" in html
    dry = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo])
    assert dry.exit_code == 0, dry.output and dry.output.startswith("Verdict: Ready once fix runs.")
    applied = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--no-backup",
                                       "--out", str(tmp_path / "run")])
    assert applied.exit_code == 0, applied.output
    res = scan_cli(db, tmp_path)
    assert res.exit_code == 0, res.output
    assert res.output.startswith("Verdict: Migrated, bridge on. ")   # the bridge stays until it is removed
    assert CliRunner().invoke(cli, ["bridge", "remove", "--dsn", db.conninfo]).exit_code == 0
    res = scan_cli(db, tmp_path)
    assert res.exit_code == 0, res.output
    assert res.output.startswith("Verdict: Migrated and clean.")
    # a baseline of the scan before: everything there is gone now
    again = scan_cli(db, tmp_path, "--baseline", str(tmp_path / "run" / "before" / "findings.json"))
    assert again.exit_code == 0 and "  baseline: 0 new, 0 known, " in again.output


def test_needs_a_decision_then_migrated_with_debt_then_accepted(db, tmp_path):
    build_demo_database(db.conninfo)
    res = scan_cli(db, tmp_path)
    assert res.exit_code == 1, res.output
    first = res.output.splitlines()[0]
    assert first.startswith("Verdict: Needs a decision. 7 error findings no step of the plan repairs")
    assert "  needs a decision: conflicting_session_users on chatbot.conversations.user_id" in res.output
    assert "    - fix --include users --missing-users null" in res.output
    baseline = tmp_path / "before.json"
    baseline.write_text((tmp_path / "scan" / "findings.json").read_text())
    result = api.apply(db.conninfo, load_config(None), rescan=True)
    assert result.ok and result.verdict.state is State.MIGRATED_BRIDGE_ON and result.verdict.exit_code() == 1
    res = scan_cli(db, tmp_path)
    assert res.exit_code == 1 and res.output.startswith("Verdict: Migrated, bridge on. ")
    assert api.bridge_remove(db.conninfo) == ["chatbot.conversations"]   # registered nothing in the last hour
    res = scan_cli(db, tmp_path)
    assert res.exit_code == 1 and res.output.startswith("Verdict: Migrated. ")
    # against the scan before the migration, what is left is known: exit 0
    known = scan_cli(db, tmp_path, "--baseline", str(baseline))
    assert known.exit_code == 0, known.output
    assert "  baseline: 0 new, 9 known, 14 gone" in known.output, known.output
    # the demo's decisions: users NULL (recorded), the conflicting sessions accepted
    toml = tmp_path / "decisions.toml"
    toml.write_text(DECISIONS)
    assert api.apply(db.conninfo, decisions_config(), rescan=False, options=FIX_OPTIONS).ok
    res = scan_cli(db, tmp_path, "--config", str(toml))
    assert res.exit_code == 0, res.output
    assert " ".join(res.output.split()).startswith(       # the verdict's line is wrapped at 120 columns
        "Verdict: Migrated. Every key table has a validated foreign key to the master; 1 error finding is left as "
        "debt (1 accepted).")
    assert "  accepted: conflicting_session_users on chatbot.conversations.user_id: the master keeps" in res.output


def test_the_terminal_lists_each_kind_of_choice_once():
    """Findings offered the same choices are listed together, the choices once after them."""
    v = judge(scan_result(table="chatbot.a"))
    two = dataclasses.replace(v, findings=v.findings + tuple(
        dataclasses.replace(j, finding=dataclasses.replace(j.finding, table="chatbot.b")) for j in v.undecided))
    lines = summary_lines(two)
    assert [line for line in lines if line.startswith("  needs a decision")] == [
        "  needs a decision: orphaned_session_ids on chatbot.a.session_id: 7 rows in chatbot.a refer to 3 unknown "
        "sessions",
        "  needs a decision: orphaned_session_ids on chatbot.b.session_id: 7 rows in chatbot.a refer to 3 unknown "
        "sessions"]
    assert sum(1 for line in lines if line.startswith("    - accept it")) == 1

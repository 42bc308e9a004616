"""The CLI: exit codes 0 / 1 / 2, one-line errors, outputs, redaction."""
from __future__ import annotations

import csv
import json

from click.testing import CliRunner
from fixtures import BASE, A, B, C, master_with

from yumai_audit.cli import cli
from yumai_audit.demo import build_demo_database

CLEAN = BASE + master_with(A, B, C) + """
DELETE FROM chatbot.conversations WHERE session_id IS NULL;
ALTER TABLE chatbot.conversations ADD FOREIGN KEY (session_id) REFERENCES chatbot.session_master (session_id) ON DELETE CASCADE;
ALTER TABLE chatbot.conversations ADD FOREIGN KEY (user_id) REFERENCES chatbot.users (id);
CREATE INDEX ON chatbot.conversations (session_id);
CREATE INDEX ON chatbot.conversations (user_id);
CREATE INDEX ON chatbot.session_master (user_id);
"""


def invoke(*args, env=None):
    return CliRunner().invoke(cli, list(args), env=env or {})


def one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output + result.stderr
    return lines[0]


def test_clean_database_exits_0(db, tmp_path):
    db.execute(CLEAN)
    result = invoke("scan", "--dsn", db.conninfo, "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "findings.json").read_text())
    assert data["findings"] == []
    assert {c["status"] for c in data["checks"]} <= {"pass", "skipped"}


def test_findings_exit_1_and_write_json_csv_html(db, tmp_path):
    build_demo_database(db.conninfo)
    result = invoke("scan", "--dsn", db.conninfo, "--out", str(tmp_path), "--format", "json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["version"] == 1
    assert set(data["database"]) == {"name", "server_version"}
    assert {"check", "status", "seconds"} <= set(data["checks"][0])
    for f in data["findings"]:
        assert {"check", "severity", "table", "column", "rows", "keys", "references", "sample", "message"} <= set(f)
        assert len(f["sample"]) <= 20
    assert json.loads((tmp_path / "findings.json").read_text())["findings"] == data["findings"]
    with open(tmp_path / "findings.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(data["findings"])
    orphan = next(r for r in rows if r["check"] == "orphaned_session_ids" and r["table"] == "chatbot.user_interactions")
    assert (orphan["rows"], orphan["keys"]) == ("7", "3")
    assert (tmp_path / "report.html").exists()
    assert (tmp_path / "samples-orphaned_session_ids.csv").exists()


def test_database_url_from_environment(db, tmp_path):
    db.execute(CLEAN)
    result = invoke("scan", "--out", str(tmp_path), env={"DATABASE_URL": db.conninfo})
    assert result.exit_code == 0, result.output


def test_unreachable_server_exits_2_with_one_line_and_no_password(tmp_path):
    result = invoke("scan", "--dsn", "postgresql://auditor:s3cr3t-pw@127.0.0.1:1/yumai", "--out", str(tmp_path))
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "cannot connect" in line and "s3cr3t-pw" not in result.output + result.stderr
    assert "***" in line


def test_keyword_dsn_password_is_redacted(tmp_path):
    result = invoke("scan", "--dsn", "host=127.0.0.1 port=1 dbname=yumai user=a password=hunter2pw", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert "hunter2pw" not in result.output + result.stderr
    one_line_error(result)


def test_nothing_to_audit_exits_2(db, tmp_path):
    result = invoke("scan", "--dsn", db.conninfo, "--out", str(tmp_path))
    assert result.exit_code == 2
    assert "nothing to audit" in one_line_error(result)


def test_no_session_column_is_a_normal_scan(db, tmp_path):
    db.execute("CREATE TABLE plain (id int)")
    result = invoke("scan", "--dsn", db.conninfo, "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "findings.json").read_text())
    assert data["findings"] == []
    statuses = {c["check"]: c["status"] for c in data["checks"]}
    assert statuses["orphaned_session_ids"] == statuses["missing_master_rows"] == "skipped"
    assert statuses["invalid_indexes"] == "pass"


def test_bad_dsn_exits_2(tmp_path):
    result = invoke("scan", "--dsn", "mysql://x@y/z", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert "postgresql" in one_line_error(result)


def test_unknown_option_and_check_exit_2(db, tmp_path):
    result = invoke("scan", "--no-such-flag")
    assert result.exit_code == 2
    one_line_error(result)
    db.execute(CLEAN)
    result = invoke("scan", "--dsn", db.conninfo, "--checks", "nope", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert "unknown check 'nope'" in one_line_error(result)


def test_config_file_and_flag_precedence(db, tmp_path):
    db.execute(BASE)
    db.execute("CREATE SCHEMA other; CREATE TABLE other.sessions (session_id uuid PRIMARY KEY)")
    cfg = tmp_path / "yumai-audit.toml"
    cfg.write_text('[yumai-audit]\nmaster = "other.sessions"\nchecks = ["missing_master_rows"]\n')
    result = invoke("scan", "--dsn", db.conninfo, "--config", str(cfg), "--out", str(tmp_path), "--format", "json")
    data = json.loads(result.stdout)
    assert [f["table"] for f in data["findings"]] == ["other.sessions"]
    assert [c["check"] for c in data["checks"]] == ["missing_master_rows"]
    # a flag beats the file
    result = invoke("scan", "--dsn", db.conninfo, "--config", str(cfg), "--master", "chatbot.session_master",
                    "--out", str(tmp_path), "--format", "json")
    assert [f["table"] for f in json.loads(result.stdout)["findings"]] == ["chatbot.session_master"]


def test_bad_config_file_exits_2(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("sample_size = 'many'\n")
    result = invoke("scan", "--config", str(cfg), "--dsn", "postgresql://x@127.0.0.1:1/y")
    assert result.exit_code == 2
    assert "sample_size" in one_line_error(result)


def test_unwritable_output_directory_exits_2(db, tmp_path):
    db.execute(CLEAN)
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = invoke("scan", "--dsn", db.conninfo, "--out", str(blocker / "sub"))
    assert result.exit_code == 2
    one_line_error(result)


def test_demo_runs_on_embedded_server(tmp_path):
    result = invoke("demo", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    before = json.loads((tmp_path / "before" / "findings.json").read_text())
    after = json.loads((tmp_path / "findings.json").read_text())
    assert any(f["check"] == "missing_master_rows" and f["keys"] == 400 for f in before["findings"])
    session_checks = {"missing_master_rows", "orphaned_session_ids", "malformed_session_ids", "key_type_mismatch",
                      "unindexed_fk_columns", "unvalidated_fk"}
    assert [f for f in after["findings"] if f["check"] in session_checks] == []
    assert str(tmp_path / "before" / "report.html") in result.output
    assert str(tmp_path / "report.html") in result.output
    assert (tmp_path / "plan.sql").exists() and (tmp_path / "apply-log.json").exists()
    # its decisions (users NULL, conflicting users accepted) are recorded: Migrated with accepted debt only
    # the bridge is still on (--bridge auto put it on the source table): migrated, not done yet
    words = " ".join(result.output.split())      # the verdict's lines are wrapped at 120 columns
    assert "Verdict: Migrated, bridge on. Every key table has a validated foreign key to the master, but the " \
           "cutover bridge is still on: a new row of chatbot.conversations naming a session the master lacks" \
           in words
    assert "1 error finding is left as debt (1 accepted)." in words
    errors = [(f["check"], f["table"]) for f in after["findings"] if f["severity"] == "error"]
    assert errors == [("conflicting_session_users", "chatbot.conversations")]
    assert 'check = "conflicting_session_users"' in (tmp_path / "yumai-audit.toml").read_text()
    html = (tmp_path / "report.html").read_text()
    assert "Verdict: <span class=\"badge warning\">Migrated, bridge on</span>" in html
    assert "accepted: the master keeps" in html and "bridge remove" in html

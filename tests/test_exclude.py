"""--exclude CHECK,... and table-level exclusion (`exclude_tables`), pg_partman's template tables excluded by
default (issue 15 §1)."""
from __future__ import annotations

import json

import pytest
from test_cli import CLEAN, invoke, one_line_error

from yumai_audit.config import ConfigError, load_config

PARTMAN = """
CREATE SCHEMA partman;
CREATE TABLE partman.template_chatbot_user_interactions (id int, session_id uuid, user_id int);
"""


def test_exclude_checks(db, tmp_path):
    db.execute(CLEAN)
    result = invoke("scan", "--dsn", db.conninfo, "--out", str(tmp_path), "--format", "json",
                    "--exclude", "invalid_indexes,null_session_ids")
    assert result.exit_code == 0, result.output
    ran = {c["check"] for c in json.loads(result.stdout)["checks"]}
    assert "invalid_indexes" not in ran and "null_session_ids" not in ran and "orphaned_session_ids" in ran
    result = invoke("scan", "--dsn", db.conninfo, "--out", str(tmp_path), "--exclude", "nope")
    assert result.exit_code == 2
    assert "unknown excluded check 'nope'" in one_line_error(result)


def test_partman_template_tables_are_excluded_by_default(db, tmp_path):
    db.execute(CLEAN + PARTMAN)
    result = invoke("scan", "--dsn", db.conninfo, "--out", str(tmp_path), "--format", "json")
    data = json.loads(result.stdout)
    assert result.exit_code == 0, result.output
    assert not [f for f in data["findings"] if f["table"].startswith("partman.")]
    assert "partman.template_chatbot_user_interactions" not in {t["table"] for t in data["inventory"]}
    plan = invoke("fix", "--dsn", db.conninfo)
    assert plan.exit_code == 0 and "partman" not in plan.output
    # with the default list emptied, the template table is a key table like any other
    cfg = tmp_path / "c.toml"
    cfg.write_text("exclude_tables = []\n")
    result = invoke("scan", "--dsn", db.conninfo, "--config", str(cfg), "--out", str(tmp_path), "--format", "json")
    tables = {f["table"] for f in json.loads(result.stdout)["findings"]}
    assert "partman.template_chatbot_user_interactions" in tables
    assert "partman.template_chatbot_user_interactions" in invoke("fix", "--dsn", db.conninfo, "--config", str(cfg)).output


def test_exclude_tables_patterns_from_the_config_file(db, tmp_path):
    db.execute(CLEAN + "CREATE TABLE public.legacy_a (session_id uuid); CREATE TABLE public.legacy_b (session_id text);")
    cfg = tmp_path / "c.toml"
    cfg.write_text('exclude_tables = ["public.legacy_*"]\n')
    result = invoke("scan", "--dsn", db.conninfo, "--config", str(cfg), "--out", str(tmp_path), "--format", "json")
    assert result.exit_code == 0, result.output
    assert not [f for f in json.loads(result.stdout)["findings"] if f["table"].startswith("public.legacy")]
    result = invoke("scan", "--dsn", db.conninfo, "--out", str(tmp_path), "--format", "json")
    assert result.exit_code == 1
    assert {"public.legacy_a", "public.legacy_b"} <= {f["table"] for f in json.loads(result.stdout)["findings"]}


def test_the_master_is_never_excluded(db, tmp_path):
    db.execute(CLEAN)
    cfg = tmp_path / "c.toml"
    cfg.write_text('exclude_tables = ["chatbot.*"]\n')
    result = invoke("scan", "--dsn", db.conninfo, "--config", str(cfg), "--out", str(tmp_path), "--format", "json")
    assert result.exit_code == 0, result.output
    inventory = {t["table"] for t in json.loads(result.stdout)["inventory"]}
    assert inventory == {"chatbot.conversations"}   # the source stays; other chatbot tables are excluded


@pytest.mark.parametrize("value", ['"partman.*"', "[1]", '[""]'])
def test_bad_exclude_tables(tmp_path, value):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"exclude_tables = {value}\n")
    with pytest.raises(ConfigError, match="exclude_tables must be a list"):
        load_config(cfg)


def test_prune_counts_the_rows_of_an_excluded_table(db, tmp_path):
    """An excluded table's rows still go with a session's ON DELETE CASCADE: prune's preview counts them."""
    import migrated

    migrated.build(db)
    db.execute("CREATE SCHEMA partman; CREATE TABLE partman.template_log (session_id uuid "
               "REFERENCES chatbot.session_master ON DELETE CASCADE)")
    migrated.add_session(db, 1, start_ago="400 days", ended_ago="399 days", active=False)
    db.execute("INSERT INTO partman.template_log SELECT %s FROM generate_series(1, 3)", (migrated.sid(1),))
    result = invoke("sessions", "prune", "--dsn", db.conninfo, "--older-than", "180d")
    assert result.exit_code == 0, result.output + result.stderr
    assert "  partman.template_log: 3 row(s)" in result.output

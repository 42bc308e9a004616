"""The share of a table a plan may take out of it (auditor/fix/shares.py): a key column whose values are
all of another type is refused before any change, named with its share and the option; raised, it runs;
a cascade's share counts for the table it reaches; the demo's few defects are not refused; the option's
precedence (flag > environment > [fix] in the config file > default)."""
from __future__ import annotations

import pytest
from click.testing import CliRunner
from fixtures import BASE, master_with

from yumai_audit import api
from yumai_audit.cli import cli
from yumai_audit.config import Config, load_config
from yumai_audit.demo import build_demo_database
from yumai_audit.engine.executor import Executor, PreflightFailed
from yumai_audit.errors import ConfigError
from yumai_audit.fix.shares import Share, exceeds, share_text

# a CRM table beside the yumai schema whose session_id holds order numbers: 719 rows of digits
CRM = BASE + master_with() + """
CREATE TABLE chatbot.crm_notes (id serial PRIMARY KEY, session_id varchar(20) NOT NULL, note text);
INSERT INTO chatbot.crm_notes (session_id, note) SELECT (100000 + g)::text, 'call back' FROM generate_series(1, 719) g;
"""
OURS = "('yumai_quarantine', 'yumai_audit')"


def crm(db) -> None:
    db.execute(CRM)


def state(db) -> tuple:
    """What a refused run must leave as it was: the table's rows and type, the tool's schemas, the FKs."""
    return (db.scalar("SELECT count(*) FROM chatbot.crm_notes"),
            db.scalar("SELECT atttypid::regtype::text FROM pg_attribute WHERE attrelid = 'chatbot.crm_notes'::regclass "
                      "AND attname = 'session_id'"),
            db.scalar(f"SELECT count(*) FROM pg_namespace WHERE nspname IN {OURS}"),
            db.scalar("SELECT count(*) FROM pg_constraint WHERE contype = 'f' "
                      "AND connamespace = 'chatbot'::regnamespace"),
            db.scalar("SELECT count(*) FROM pg_class WHERE relnamespace = 'chatbot'::regnamespace"))


# --- no database ---------------------------------------------------------------------------------

def test_the_floor_and_the_share():
    assert not exceeds(10, 10, 5.0)             # at most MIN_ROWS rows are never refused
    assert exceeds(11, 11, 5.0)
    assert not exceeds(50, 1000, 5.0)           # exactly 5%: allowed
    assert exceeds(51, 1000, 5.0)
    assert not exceeds(719, 719, 100.0)
    assert share_text(7, 144) == "4.9" and share_text(1, 8) == "12.5" and share_text(719, 719) == "100.0"
    line = Share("chatbot.crm_notes", 719, 719, ("the quarantine of malformed rows of chatbot.crm_notes",)).line(5.0)
    assert line.startswith("chatbot.crm_notes: 719 of its 719 rows (100.0%) would be taken out or changed "
                           "(the quarantine of malformed rows of chatbot.crm_notes), more than --max-removed-share 5% ")


def test_the_config_file_key_lives_under_fix(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text("[fix]\nmax_removed_share = 12.5\n")
    assert load_config(good).max_removed_share == 12.5
    assert load_config(None).max_removed_share is None
    for text, expected in [("[fix]\nmax_removed_share = 101\n", "from 0 to 100"),
                           ("[fix]\nmax_share = 1\n", "unknown setting 'max_share'"),
                           ("max_removed_share = 1\n", "belongs under [fix]")]:
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("]", r"\]")):
            load_config(bad)


def test_the_option_out_of_range_is_one_line_and_exit_2_before_connecting():
    res = CliRunner().invoke(cli, ["fix", "--dsn", "postgresql://nobody@127.0.0.1:1/none", "--apply", "--yes",
                                   "--max-removed-share", "150"])
    assert res.exit_code == 2, res.output
    assert "--max-removed-share must be from 0 up to 100 percent, not 150.0" in res.output


# --- a key column of another type ------------------------------------------------------------------

def test_a_text_key_of_digits_is_refused_before_any_change(db, tmp_path):
    crm(db)
    before = state(db)
    assert before[:3] == (719, "character varying", 0)
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--out", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    refusal = [ln for ln in res.output.splitlines() if ln.startswith("yumai-audit: error: ")]
    assert refusal == ["yumai-audit: error: chatbot.crm_notes: 719 of its 719 rows (100.0%) would be taken out or "
                       "changed (719 by the quarantine of malformed rows of chatbot.crm_notes), more than "
                       "--max-removed-share 5% allows: a step that takes that much of a table is most often a "
                       "configuration error (the key column, the master, the source table); check it, or raise "
                       "--max-removed-share (or [fix] max_removed_share in yumai-audit.toml) to allow it"]
    assert "Traceback" not in res.output
    assert state(db) == before                     # no row moved, no type changed, no schema, FK or table made
    assert not list((tmp_path / "run").glob("*.json")) and not list((tmp_path / "run").glob("*.dump"))


def test_the_preflight_counts_again_right_before_the_first_change(db):
    """Rows written after the plan was made (none then: nothing to refuse) meet the preflight's own count,
    right before the first change: the same line, nothing changed."""
    db.execute(CRM.split("INSERT INTO chatbot.crm_notes")[0])
    plan = api.plan(db.conninfo, Config())
    assert plan.shares == [] and plan.refused() == []
    db.execute("INSERT INTO chatbot.crm_notes (session_id) SELECT (100000 + g)::text FROM generate_series(1, 719) g")
    before = state(db)
    with pytest.raises(PreflightFailed) as exc:
        Executor(api.resolve_target(db.conninfo), plan).run()
    line = Share("chatbot.crm_notes", 719, 719, ("719 by the quarantine of malformed rows of chatbot.crm_notes",))
    assert str(exc.value) == "preflight: " + line.line(5.0)
    assert state(db) == before


def test_the_dry_run_shows_the_refusal(db):
    crm(db)
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo])
    lines = res.output.splitlines()
    assert "    REFUSED chatbot.crm_notes: 719 of 719 rows (100.0%): 719 by the quarantine of malformed rows of " \
           "chatbot.crm_notes" in lines
    assert any(ln.startswith("  fix --apply refuses: chatbot.crm_notes: 719 of its 719 rows (100.0%)") for ln in lines)
    assert state(db)[0] == 719


def test_raised_it_proceeds_and_every_row_is_kept_or_quarantined(db, tmp_path):
    crm(db)
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--no-backup",
                                   "--max-removed-share", "100", "--out", str(tmp_path / "run")])
    assert res.exit_code in (0, 1), res.output
    assert "yumai-audit: error" not in res.output
    assert db.scalar("SELECT count(*) FROM chatbot.crm_notes") == 0
    assert db.scalar("SELECT count(*) FROM yumai_quarantine.chatbot__crm_notes WHERE yumai_reason = 'malformed'") == 719


def test_flag_over_environment_over_config_file_over_default(db, tmp_path, monkeypatch):
    crm(db)
    toml = tmp_path / "fix.toml"   # not ./yumai-audit.toml, which every run would read
    toml.write_text("[fix]\nmax_removed_share = 100\n")

    def refused(*args: str) -> bool:
        res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, *args])
        assert "Traceback" not in res.output, res.output
        return "  fix --apply refuses: chatbot.crm_notes" in res.output

    assert refused()                                        # default 5
    assert not refused("--config", str(toml))               # the file's 100
    monkeypatch.setenv("YUMAI_MAX_REMOVED_SHARE", "50")
    assert refused("--config", str(toml))                   # the environment's 50 over the file's 100
    assert not refused("--config", str(toml), "--max-removed-share", "100")   # the flag over both


# --- what foreign keys reach -----------------------------------------------------------------------

CASCADE = BASE + master_with() + """
CREATE TABLE chatbot.user_feedback (id int PRIMARY KEY, session_id uuid, rating int);
INSERT INTO chatbot.user_feedback SELECT g, CASE WHEN g <= 2 THEN '00000000-0000-4000-8000-0000000000f1'::uuid
    ELSE '00000000-0000-4000-8000-00000000000a'::uuid END, 5 FROM generate_series(1, 100) g;
CREATE TABLE chatbot.feedback_votes (id int PRIMARY KEY, feedback_id int REFERENCES chatbot.user_feedback (id)
    ON DELETE CASCADE);
INSERT INTO chatbot.feedback_votes SELECT g, 1 + g % 40 FROM generate_series(1, 80) g;
CREATE TABLE chatbot.feedback_tags (id int PRIMARY KEY, feedback_id int REFERENCES chatbot.user_feedback (id)
    ON DELETE SET NULL);
INSERT INTO chatbot.feedback_tags SELECT g, 1 + g % 50 FROM generate_series(1, 300) g;
"""


def test_a_cascade_counts_for_the_table_it_reaches_largest_share_first(db):
    """2 orphans of 100 feedback rows (2%, and under the 10-row floor) take 4 of 80 votes by CASCADE (5%: the
    limit) and change 12 of 300 tags by SET NULL (4%); with a limit of 3% the votes and the tags are refused."""
    db.execute(CASCADE)
    plan = api.plan(db.conninfo, Config())
    assert [(s.table, s.rows, s.total) for s in plan.shares] == [
        ("chatbot.feedback_votes", 4, 80), ("chatbot.feedback_tags", 12, 300), ("chatbot.user_feedback", 2, 100)]
    assert plan.refused() == []
    strict = api.plan(db.conninfo, Config(), options=api.FixOptions(max_removed_share=3))
    assert [line.split(":")[0] for line in strict.refused()] == ["chatbot.feedback_tags"]   # 4 votes: the floor
    assert "(12 by ON DELETE SET NULL/DEFAULT from the quarantine of orphaned rows of chatbot.user_feedback)" \
        in strict.refused()[0]
    with pytest.raises(PreflightFailed, match="^chatbot.feedback_tags: 12 of its 300 rows"):
        api.apply(db.conninfo, Config(), options=api.FixOptions(max_removed_share=3), rescan=False)
    assert db.scalar("SELECT count(*) FROM chatbot.feedback_tags WHERE feedback_id IS NULL") == 0
    assert db.scalar("SELECT count(*) FROM chatbot.user_feedback") == 100


# --- the demo ----------------------------------------------------------------------------------------

def test_the_demo_database_is_not_refused_and_lists_its_shares_largest_first(db):
    build_demo_database(db.conninfo)
    plan = api.plan(db.conninfo, api.demo_config(), options=api.FixOptions(include=("users",), missing_users="null"))
    assert [(s.table, s.rows, s.total) for s in plan.shares] == [
        ("chatbot.recommendations_log", 7, 144),    # 3 malformed + 4 orphaned: 4.9%, under 5%
        ("chatbot.user_feedback", 3, 82),           # 2 orphaned + 1 user id set NULL
        ("chatbot.user_interactions", 7, 211),
        ("chatbot.conversations", 3, plan.shares[-1].total)]
    assert plan.refused() == []

"""One function makes the migration's plan (fix/make.py): `fix --sql` and `fix --apply` write the same
script, and `--apply` confirms, writes and runs the very plan object it was given. Real PostgreSQL."""
from __future__ import annotations

from click.testing import CliRunner

from yumai_audit import api
from yumai_audit.cli import cli
from yumai_audit.config import Config
from yumai_audit.demo import build_demo_database


def test_fix_sql_then_fix_apply_write_byte_identical_scripts(db, tmp_path):
    build_demo_database(db.conninfo)
    dry = tmp_path / "dry.sql"
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--sql", str(dry)])
    assert res.exit_code == 1, res.output
    applied, out = tmp_path / "applied.sql", tmp_path / "out"
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--no-backup",
                                   "--sql", str(applied), "--out", str(out)])
    assert res.exit_code in (0, 1), res.output
    assert db.scalar("SELECT to_regclass('chatbot.session_master') IS NOT NULL") is True
    assert dry.read_bytes() == applied.read_bytes() == (out / "plan.sql").read_bytes()


def test_apply_confirms_writes_and_runs_the_plan_it_is_given(db, tmp_path):
    build_demo_database(db.conninfo)
    plan = api.plan(db.conninfo, Config())
    confirmed = []
    result = api.apply(db.conninfo, Config(), plan=plan, rescan=False, out_dir=tmp_path,
                       confirm=lambda p, _before: confirmed.append(p))
    assert confirmed == [plan] and confirmed[0] is plan and result.plan is plan
    assert (tmp_path / "plan.sql").read_bytes() == api.plan_script(plan).encode()
    assert result.ok and db.scalar("SELECT to_regclass('chatbot.session_master') IS NOT NULL") is True

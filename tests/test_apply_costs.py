"""The apply's fixed costs without trading a guarantee: its session runs without JIT, and a step's
journal end is committed by the step's own transaction (done and journaled at once)."""
from __future__ import annotations

import threading

import pytest

from yumai_audit import api
from yumai_audit.config import Config
from yumai_audit.demo import build_demo_database


def test_every_step_runs_without_jit_and_journals_its_end_in_its_own_transaction(db):
    build_demo_database(db.conninfo)
    jit: dict[str, str] = {}

    def hook(step, conn):
        jit[step.id] = conn.execute("SHOW jit").fetchone()[0]

    result = api.apply(db.conninfo, Config(), rescan=False, step_hook=hook)
    assert result.ok
    assert len(jit) >= 20
    assert set(jit.values()) == {"off"}, jit
    # the master's table was created by step "master": the same transaction wrote the step's journal end (its
    # primary key's pg_class row: the table's own is rewritten when its user FK is added, after the backfill)
    created = db.scalar("SELECT xmin::text FROM pg_class WHERE oid = 'chatbot.session_master_pkey'::regclass")
    ended = db.fetchall("SELECT xmin::text, outcome FROM yumai_audit.journal WHERE step = 'master'")
    assert ended == [(created, "done")]
    # and every transactional step that ran has exactly one entry, done
    transactional = {s.id for s in result.plan.steps if s.transactional and not s.kind.inspects}
    rows = db.fetchall("SELECT step, outcome, count(*) FROM yumai_audit.journal GROUP BY step, outcome")
    done = {step for step, outcome, n in rows if outcome == "done" and n == 1}
    assert transactional & set(result.changed) <= done


def test_the_report_before_is_rendered_beside_the_first_steps_and_is_whole_however_the_run_ends(db, tmp_path):
    """Its findings.json is written before the first change; its CSV and HTML (0.4 s of rendering at 365 daily
    partitions, pandas' import included) on a thread while the first steps run, joined before apply returns or
    raises."""
    build_demo_database(db.conninfo)
    seen: dict[str, object] = {}

    def hook(step, conn):
        if not seen:    # the first step: the findings are there already
            seen["findings"] = (tmp_path / "ok" / "before" / "findings.json").is_file()
            seen["threads"] = sorted(t.name.split("_")[0] for t in threading.enumerate())

    result = api.apply(db.conninfo, Config(), out_dir=tmp_path / "ok", step_hook=hook)
    assert result.ok
    assert seen["findings"] is True
    assert "report-before" in seen["threads"]         # before the change: rendered ahead of the first step
    for name in ("findings.json", "findings.csv", "report.html", "summary.md"):
        assert (tmp_path / "ok" / "before" / name).stat().st_size > 0
    assert not [t for t in threading.enumerate() if t.name.startswith("report-before")]


def test_a_run_that_fails_at_its_first_step_raises_its_own_error_with_the_report_before_whole(db, tmp_path):
    build_demo_database(db.conninfo)

    def fail(step, conn):
        raise RuntimeError("stopped at the first step")

    with pytest.raises(Exception, match="stopped at the first step"):
        api.apply(db.conninfo, Config(), out_dir=tmp_path, step_hook=fail)
    for name in ("findings.json", "findings.csv", "report.html", "summary.md"):
        assert (tmp_path / "before" / name).stat().st_size > 0
    assert not [t for t in threading.enumerate() if t.name.startswith("report-before")]

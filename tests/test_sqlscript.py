"""`fix --sql` is what `fix --apply` runs: both come from `steps.step_block`, and psql can run the script."""
from __future__ import annotations

import shutil
import subprocess

import psycopg
import pytest
from recording import RecordingCursor, RecordingExecutor

from yumai_audit import api
from yumai_audit.config import Config
from yumai_audit.connection import resolve_target
from yumai_audit.demo import build_demo_database
from yumai_audit.engine.sqlscript import render_block, render_script
from yumai_audit.engine.steps import Kind, run_settings, step_block
from yumai_audit.fix.ops.backfill import ROWS_PER_SESSION


def test_the_script_holds_exactly_what_the_executor_sends(db):
    build_demo_database(db.conninfo)
    target = resolve_target(db.conninfo)
    plan = api.plan(target, Config(), options=api.FixOptions(batch_size=2))
    script = render_script(plan)
    RecordingCursor.sent = []
    result = RecordingExecutor(target, plan).run()
    ran = {o.step for o in result.outcomes if o.outcome == "done"}
    sent = RecordingCursor.sent
    opts = plan.options
    checked = 0
    for step in plan.steps:
        block = step_block(step, opts.lock_timeout, opts.batch_size)
        assert "\n".join(render_block(block, step)) in script    # the script shows this block ...
        if step.id not in ran:   # a check, or a step whose guard said done when its turn came
            continue
        statements = [s.as_string(None) for s in block.statements]
        runs = [i for i in range(len(sent)) if sent[i:i + len(statements)] == statements]
        assert runs, step.id                                     # ... and the executor sent it as it is
        if step.kind is Kind.BATCHED:
            # batches of 2 sessions: the same block again, until a batch is short (a walk: until its end test,
            # sent last in each batch, says the walk has ended)
            if len(runs) == 1 and block.until is not None:
                # a partition's walk ends with the batch that reaches its last key: one, when the partition holds
                # fewer rows than a batch reads (auditor/fix/ops/backfill.py: ROWS_PER_SESSION a session of the batch)
                assert db.scalar(f"SELECT count(*) FROM {step.tables[0]}") < ROWS_PER_SESSION * 2, step.id
            else:
                assert len(runs) >= 2, step.id
            if block.until is not None:
                assert all(sent[i + len(statements)] == block.until.as_string(None) for i in runs), step.id
        checked += 1
    assert checked == len(ran) > 20
    for setting in run_settings(plan.server_version_num):
        assert setting.as_string(None) + ";" in script
        assert setting.as_string(None) in sent


@pytest.mark.skipif(shutil.which("psql") is None, reason="needs the psql client (on CI: Debian's postgresql-client)")
def test_psql_runs_the_script_to_the_same_end_as_apply(db, pg_server):
    build_demo_database(db.conninfo)
    target = resolve_target(db.conninfo)
    plan = api.plan(target, Config(), options=api.FixOptions(batch_size=3))
    path = "plan.sql"
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_script(plan))
    done = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db.conninfo, "-f", path],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # the script's batched backfill registered every session; a new plan finds every step done
    again = api.plan(target, Config())
    assert again.pending == []
    with psycopg.connect(db.conninfo) as conn:
        missing = conn.execute(
            "SELECT count(DISTINCT c.session_id) FROM chatbot.conversations c WHERE c.session_id IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM chatbot.session_master m WHERE m.session_id = c.session_id)").fetchone()[0]
    assert missing == 0

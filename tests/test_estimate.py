"""The dry run's estimate (auditor/fix/estimate.py): from the plan's steps and the key tables' estimated rows."""
from __future__ import annotations

from test_planner import plan_for

from yumai_audit.fix.estimate import SECONDS_PER_ROW, SECONDS_PER_STEP, WAL_BYTES_PER_ROW, WAL_BYTES_PER_STEP, Estimate


def test_the_estimate_grows_with_steps_and_rows():
    e = Estimate.of(100, 1_000_000)
    assert e.seconds == 100 * SECONDS_PER_STEP + 1_000_000 * SECONDS_PER_ROW
    assert e.wal_bytes == 100 * WAL_BYTES_PER_STEP + 1_000_000 * WAL_BYTES_PER_ROW
    assert Estimate.of(200, 1_000_000).seconds > e.seconds < Estimate.of(100, 2_000_000).seconds


def test_the_plan_shows_its_estimate():
    plan = plan_for()
    changes = sum(not s.kind.inspects for s in plan.steps)
    assert plan.estimate["steps"] == changes
    assert plan.to_dict()["estimate"] == plan.estimate
    assert [n for n in plan.notes if n.startswith("estimate: the apply takes about ")] == [
        Estimate.of(changes, plan.estimate["rows"]).note()]

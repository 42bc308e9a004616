"""What a step repairs names checks of the registry: every id a planner can declare, and every id of a
whole plan's steps (no database)."""
from __future__ import annotations

import pytest
from test_planner import plan_for

from yumai_audit.checks import CHECK_IDS
from yumai_audit.fix import schema_plan, session_plan, users_plan
from yumai_audit.fix.ops import foreign_key, index


@pytest.mark.parametrize("module", [session_plan, users_plan, schema_plan, index, foreign_key], ids=lambda m: m.__name__)
def test_every_declared_repair_is_a_registered_check(module):
    declared = {name: ids for name, ids in vars(module).items() if name.startswith("REPAIRS")}
    assert declared or module in (schema_plan, users_plan)
    assert {name: [i for i in ids if i not in CHECK_IDS] for name, ids in declared.items()} == \
        {name: [] for name in declared}


def test_every_step_of_a_plan_repairs_registered_checks_only():
    plan = plan_for()
    named = {i for s in plan.steps for i in s.repairs}
    assert named and named - set(CHECK_IDS) == set()

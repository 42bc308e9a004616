"""What a step repairs names checks of the registry: every id a planner can declare, and every id of a
whole plan's steps (no database)."""
from __future__ import annotations

import importlib
import pkgutil

import pytest
from test_planner import plan_for

from yumai_audit.checks import CHECK_IDS
from yumai_audit.fix import ops, schema_plan, session_plan, users_plan

# every operation of fix/ops/, one module each
OPERATIONS = [importlib.import_module(f"{ops.__name__}.{m.name}") for m in pkgutil.iter_modules(ops.__path__)]


@pytest.mark.parametrize("module", [session_plan, users_plan, schema_plan, *OPERATIONS], ids=lambda m: m.__name__)
def test_every_declared_repair_is_a_registered_check(module):
    declared = {name: ids for name, ids in vars(module).items() if name.startswith("REPAIRS")}
    assert declared or module in (session_plan, schema_plan, users_plan)   # each operation declares its own
    assert {name: [i for i in ids if i not in CHECK_IDS] for name, ids in declared.items()} == \
        {name: [] for name in declared}


def test_every_step_of_a_plan_repairs_registered_checks_only():
    plan = plan_for()
    named = {i for s in plan.steps for i in s.repairs}
    assert named and named - set(CHECK_IDS) == set()

"""The migration linter's (Squawk's) rules that plan.sql breaks on purpose, each with the reason.

`fix --sql` and plan.sql are what a reviewer puts in front of Squawk (`squawk plan.sql`). A statement
that breaks one of its rules deliberately gets, right above it, a comment with the reason and Squawk's
`-- squawk-ignore RULE` line. The table below is the whole list (an operation of fix/ops/ declares its
own entries, `LINT`, next to its builder): a statement matches an entry by its step's `Operation` and
its text; anything else Squawk finds is a real finding (a test runs Squawk on the demo's plan and
expects none).
"""
from __future__ import annotations

import dataclasses

from ..engine.steps import LintException, Step
from .ops import Deliberate, catchup, foreign_key, index, key_type, master
from .ops.backfill import LINT as BACKFILL_LINT

__all__ = ["DELIBERATE", "Deliberate", "with_lint_exceptions"]


DELIBERATE: tuple[Deliberate, ...] = (
    *master.LINT,
    *index.LINT,
    *key_type.LINT,
    *foreign_key.LINT,
    *BACKFILL_LINT,
    *catchup.LINT,
)


def with_lint_exceptions(step: Step) -> Step:
    """`step` carrying the entries of the table above that apply to it (the script writes them)."""
    found = tuple(LintException(d.rules, d.statement, d.reason) for d in DELIBERATE
                  if d.operation == step.operation and d.applies(step))
    return dataclasses.replace(step, lint_exceptions=found) if found else step

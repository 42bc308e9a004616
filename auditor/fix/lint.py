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
import re

from ..engine.steps import LintException, Step
from ..operations import Operation
from .backfill import PROGRESS, STAGING
from .ops import Deliberate, foreign_key, index

__all__ = ["DELIBERATE", "Deliberate", "with_lint_exceptions"]


DELIBERATE: tuple[Deliberate, ...] = (
    Deliberate(("prefer-bigint-over-int",), Operation.CREATE_MASTER,
               re.compile(r"^CREATE TABLE .*\buser_id int\b", re.S),
               "user_id takes the users table's key type (int), so its foreign key matches"),
    *index.LINT,
    Deliberate(("changing-column-type",), Operation.CONVERT_TO_UUID,
               re.compile(r"ALTER COLUMN .* TYPE (uuid|bigint|integer|smallint) USING ", re.S),
               "the text key takes the key type: a rewrite under ACCESS EXCLUSIVE, with its table's size in the plan "
               "and the --apply confirmation; malformed values were quarantined first"),
    *foreign_key.LINT,
    *(Deliberate(("prefer-bigint-over-int",), operation,
                 re.compile(r"^CREATE UNLOGGED TABLE IF NOT EXISTS "
                            + re.escape(f'"{STAGING.schema}"."{STAGING.name}"')),
                 "the backfill's staging table in the tool's schema: its columns copy the source's types (an int "
                 "user column stays int, as the master's user_id), and `walk` numbers a plan's walks")
      for operation in (Operation.CREATE_MASTER, Operation.BACKFILL)),
    Deliberate(("ban-drop-table",), Operation.CATCHUP,
               re.compile(r"^DROP TABLE IF EXISTS " + re.escape(f'"{PROGRESS.schema}"."{PROGRESS.name}"')),
               "the backfill's own bookkeeping in the tool's schema, never the application's: once the catch-up "
               "has registered every session, the walks' positions are moot"),
)


def with_lint_exceptions(step: Step) -> Step:
    """`step` carrying the entries of the table above that apply to it (the script writes them)."""
    found = tuple(LintException(d.rules, d.statement, d.reason) for d in DELIBERATE
                  if d.operation == step.operation and d.applies(step))
    return dataclasses.replace(step, lint_exceptions=found) if found else step

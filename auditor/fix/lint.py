"""The migration linter's (Squawk's) rules that plan.sql breaks on purpose, each with the reason.

`fix --sql` and plan.sql are what a reviewer puts in front of Squawk (`squawk plan.sql`). A statement
that breaks one of its rules deliberately gets, right above it, a comment with the reason and Squawk's
`-- squawk-ignore RULE` line. The table below is the whole list: a statement matches an entry by its
step's `Operation` and its text; anything else Squawk finds is a real finding (a test runs Squawk on
the demo's plan and expects none).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from .backfill import PROGRESS, STAGING
from .steps import Operation, Step


@dataclass(frozen=True)
class Deliberate:
    rules: tuple[str, ...]
    operation: Operation
    statement: re.Pattern               # matched against the rendered statement
    reason: str
    applies: Callable[[Step], bool] = lambda _step: True


DELIBERATE: tuple[Deliberate, ...] = (
    Deliberate(("prefer-bigint-over-int",), Operation.CREATE_MASTER, re.compile(r"^CREATE TABLE .*\buser_id int\b", re.S),
               "user_id takes the users table's key type (int), so its foreign key matches"),
    Deliberate(("require-concurrent-index-creation",), Operation.INDEX_PARENT, re.compile(r"^CREATE INDEX .* ON ONLY ", re.S),
               "ON ONLY the partitioned parent: a catalog entry with no rows (PostgreSQL cannot build it "
               "CONCURRENTLY); each partition's index is built CONCURRENTLY and attached to it"),
    Deliberate(("prefer-robust-stmts",), Operation.INDEX, re.compile(r"^CREATE (UNIQUE )?INDEX CONCURRENTLY \"", re.S),
               "rerunnable: the DROP INDEX CONCURRENTLY IF EXISTS before it removes the invalid leftover of an "
               "interrupted build, which IF NOT EXISTS would keep"),
    Deliberate(("changing-column-type",), Operation.CONVERT_TO_UUID, re.compile(r"ALTER COLUMN .* TYPE uuid USING ", re.S),
               "the text key becomes uuid: a rewrite under ACCESS EXCLUSIVE, with its table's size in the plan "
               "and the --apply confirmation; malformed values were quarantined first"),
    Deliberate(("constraint-missing-not-valid", "adding-foreign-key-constraint"), Operation.FK_ADD,
               re.compile(r"ADD CONSTRAINT .* FOREIGN KEY (?!.*NOT VALID)", re.S),
               "on the partitioned parent after every partition's NOT VALID key was validated: PostgreSQL "
               "before 18 refuses NOT VALID here, and the parent's key attaches the validated ones without a scan",
               lambda step: any(d.startswith("fk-validate:") for d in step.depends_on)),
    *(Deliberate(("prefer-bigint-over-int",), operation,
                 re.compile(r"^CREATE UNLOGGED TABLE IF NOT EXISTS " + re.escape(f'"{STAGING.schema}"."{STAGING.name}"')),
                 "the backfill's staging table in the tool's schema: its columns copy the source's types (an int "
                 "user column stays int, as the master's user_id), and `walk` numbers a plan's walks")
      for operation in (Operation.CREATE_MASTER, Operation.BACKFILL)),
    Deliberate(("require-concurrent-index-creation",), Operation.INDEX, re.compile(r"^CREATE INDEX IF NOT EXISTS ", re.S),
               "a small partition, with its small siblings in one transaction (auditor/fix/partition_groups.py): "
               "SHARE for the milliseconds its rows take, rather than a CONCURRENTLY step each",
               lambda step: len(step.statements) > 1),
    Deliberate(("constraint-missing-not-valid", "adding-foreign-key-constraint"), Operation.FK_ADD,
               re.compile(r"ADD CONSTRAINT .* FOREIGN KEY (?!.*NOT VALID)", re.S),
               "small partitions, a group in one transaction (auditor/fix/partition_groups.py): each key added "
               "validated, its few rows checked at once, after the catch-up that registered their sessions",
               lambda step: len(step.statements) > 1 and not any(d.startswith("fk-validate:") for d in step.depends_on)),
    Deliberate(("ban-drop-table",), Operation.CATCHUP,
               re.compile(r"^DROP TABLE IF EXISTS " + re.escape(f'"{PROGRESS.schema}"."{PROGRESS.name}"')),
               "the backfill's own bookkeeping in the tool's schema, never the application's: once the catch-up "
               "has registered every session, the walks' positions are moot"),
)


def ignore_comments(step: Step, statement: str) -> list[str]:
    """The comment lines to put right above `statement` of `step`: the reason, then Squawk's ignore line."""
    found = [d for d in DELIBERATE
             if d.operation == step.operation and d.statement.search(statement) and d.applies(step)]
    if not found:
        return []
    lines = [f"-- deliberate ({', '.join(d.rules)}): {d.reason}" for d in found]
    lines.append("-- squawk-ignore " + ", ".join(r for d in found for r in d.rules))
    return lines

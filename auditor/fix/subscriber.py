"""The scripts a logical-replication subscriber runs around `fix --apply` (`fix --subscriber-sql FILE`).

Why a subscriber needs them and what they leave out: auditor/fix/replication.py. The statements are the
plan's own: the journal's, and each step's `replica_ddl` (by default its CREATE SCHEMA / CREATE TABLE
IF NOT EXISTS statements), in plan order; the conversions are the CONVERT_TO_UUID steps' ALTER TABLE.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..engine.executor import journal_ddl
from ..operations import Operation
from .plan import MigrationPlan

CREATES = re.compile(r"^CREATE (SCHEMA|TABLE) IF NOT EXISTS ")
CONVERTS = re.compile(r"^ALTER TABLE .* ALTER COLUMN .* TYPE (uuid|bigint|integer|smallint) USING ", re.S)

def _texts(statements) -> list[str]:
    return [s.as_string(None) for s in statements]


def replica_ddl(plan: MigrationPlan) -> list[str]:
    """What a subscriber creates before the apply: the journal, then what each step creates, in plan order."""
    out = _texts(journal_ddl())
    for step in plan.steps:
        if step.replica_ddl is not None:
            out += _texts(step.replica_ddl)
        else:
            out += [t for t in _texts(step.statements) if CREATES.match(t)]
    return list(dict.fromkeys(out))


def conversions(plan: MigrationPlan) -> list[str]:
    """The key columns' conversions to uuid, as the publisher runs them, in plan order."""
    return [t for step in plan.steps if step.operation is Operation.CONVERT_TO_UUID
            for t in _texts(step.statements) if CONVERTS.match(t)]


def after_path(path: str | Path) -> Path:
    """Where the second script goes: beside FILE, `<stem>-after<suffix>`."""
    p = Path(path)
    return p.with_name(f"{p.stem}-after{p.suffix or '.sql'}")


def subscriber_scripts(plan: MigrationPlan, path: str | Path) -> dict[Path, str]:
    """The scripts for each subscriber: FILE before the apply, and, when the plan converts key columns,
    FILE-after once the apply has finished and the subscriber has caught up."""
    before = [
        "-- yumai-audit: run on each logical-replication subscriber BEFORE `fix --apply --subscribers-ready`",
        "-- on the publisher. It creates every schema and table the migration creates there, plain: columns and",
        "-- primary key (the apply finds rows by it); no foreign key, trigger or other index (the apply worker",
        "-- fires none; the publisher enforces them). Until the subscription lists them, they get no changes.",
        "-- Then, after the apply, on each subscriber: ALTER SUBSCRIPTION <name> REFRESH PUBLICATION;",
        "-- (copies the new tables; for publications FOR ALL TABLES and FOR TABLES IN SCHEMA).",
        "BEGIN;", *(t + ";" for t in replica_ddl(plan)), "COMMIT;", ""]
    out = {Path(path): "\n".join(before)}
    converted = conversions(plan)
    if converted:
        out[after_path(path)] = "\n".join([
            "-- yumai-audit: run on each subscriber AFTER `fix --apply` has finished on the publisher and the",
            "-- subscriber has caught up (on the publisher, its slot's confirmed_flush_lsn at or past the",
            "-- pg_current_wal_lsn() taken after the apply). The publisher converted these columns by a table",
            "-- rewrite, which is not replicated; its deletes of the rows that were not uuids are, so the same",
            "-- conversion succeeds here. Each rewrites its table under ACCESS EXCLUSIVE (the apply waits meanwhile).",
            *(f"BEGIN;\n{t};\nCOMMIT;" for t in converted), ""])
    return out

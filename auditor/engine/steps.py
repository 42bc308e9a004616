"""A step is data: what it runs, the lock it takes, what it depends on, how to tell it is done.

The planner builds steps, `sqlscript` renders them as an annotated SQL script and the executor runs
the very same objects. Nothing here connects to a database.
"""
from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from ..pgversion import CLIENT_CONNECTION_CHECK

# A statement as psycopg executes it: an SQL fragment or a composition of fragments (what
# `sql.SQL(...).format(...)` returns); `Connection.execute` takes either, not any `Composable`.
Query = sql.SQL | sql.Composed


class LockMode(enum.IntEnum):
    """PostgreSQL's table lock modes, weakest first, so that "at most X" is a comparison."""

    NONE = 0
    ACCESS_SHARE = 1
    ROW_SHARE = 2
    ROW_EXCLUSIVE = 3
    SHARE_UPDATE_EXCLUSIVE = 4
    SHARE = 5
    SHARE_ROW_EXCLUSIVE = 6
    EXCLUSIVE = 7
    ACCESS_EXCLUSIVE = 8

    @property
    def label(self) -> str:
        """The mode as the documentation spells it ("SHARE ROW EXCLUSIVE"), "none" for NONE."""
        return "none" if self is LockMode.NONE else self.name.replace("_", " ")

    @property
    def pg_locks_mode(self) -> str:
        """The mode as `pg_locks.mode` shows it ("ShareRowExclusiveLock")."""
        return "".join(part.capitalize() for part in self.name.split("_")) + "Lock"

    @classmethod
    def from_pg_locks(cls, mode: str) -> LockMode:
        for m in cls:
            if m is not cls.NONE and m.pg_locks_mode == mode:
                return m
        raise ValueError(f"not a table lock mode: {mode}")

    @property
    def blocks_writers(self) -> bool:
        """Whether the mode conflicts with ROW EXCLUSIVE (what INSERT/UPDATE/DELETE take)."""
        return self >= LockMode.SHARE


class Kind(str, enum.Enum):
    CHANGE = "change"      # runs its statements (in one transaction when transactional)
    BATCHED = "batched"    # runs its statements in a transaction of their own, again and again, until the
                           # last one affects fewer rows than a batch (those before it: LOCK TABLE, no rows),
                           # or, a walk (`Step.until`), until its `until` query says the walk has ended
    CHECK = "check"        # a query whose rows are problems; any row stops the run
    GATE = "gate"          # measures (its first statement); stops the run when that counts a problem,
                           # after running its other statements (Step.stop_message says why)

    @property
    def inspects(self) -> bool:
        """Checks and gates: never "done", no guard; they run each time the run reaches them."""
        return self in (Kind.CHECK, Kind.GATE)


@dataclass(frozen=True)
class LintException:
    """A migration linter's (Squawk's) rules that a statement of a step breaks on purpose, with the
    reason: the script writes both right above the statement that `statement` matches."""

    rules: tuple[str, ...]
    statement: re.Pattern[str]     # matched against the rendered statement
    reason: str


# a gate's stop: the line that explains `count` problems its measure found (`seconds` since the last sweep)
StopMessage = Callable[[int, "float | None"], str]


@dataclass(frozen=True)
class Step:
    id: str
    description: str
    statements: tuple[Query, ...]
    lock: LockMode
    tables: tuple[str, ...]                   # schema.table, catalog spelling, on which `lock` is taken
    depends_on: tuple[str, ...] = ()
    transactional: bool = True
    guard: Query | None = None                # SELECT returning one boolean: true when already done
    rewrites: bool = False
    table_bytes: tuple[tuple[str, int], ...] = ()
    kind: Kind = Kind.CHANGE
    changes: tuple[str, ...] = field(default=())  # tables whose rows or definition the step may change
    target: str = ""                          # the audited table the step is about (a partition's parent)
    column: str = ""                          # the column of `target` it is about, when one
    repairs: tuple[str, ...] = ()             # ids of the checks whose findings on `target` it repairs
    operation: enum.Enum = field(kw_only=True)  # what the step does (auditor/operations.py; never read from its id)
    # a batched step that walks a table: SELECT one boolean, true once the walk has ended (the last query
    # of each batch's transaction; the batches' count of rows then no longer ends the step)
    until: Query | None = None
    # a check run before anything else (guards, the backup, the journal): any row it returns refuses the run
    precondition: bool = False
    # a gate: what its stop says (None: a generic line)
    stop_message: StopMessage | None = field(default=None, compare=False, repr=False)
    # the linter rules its statements break on purpose (auditor/fix/lint.py attaches them)
    lint_exceptions: tuple[LintException, ...] = ()
    # what a logical-replication subscriber must create before this step's changes arrive there
    # (auditor/fix/replication.py); None: the step's own CREATE SCHEMA / CREATE TABLE IF NOT EXISTS
    replica_ddl: tuple[Query, ...] | None = None
    # on demand (a catch-up between a foreign key's NOT VALID and its VALIDATE): the online run does not run it
    # in its turn, only when a later step that names it in `repaired_by` fails on a row that violates the key;
    # that step then runs again, once. Its guard would read the whole table to find the few rows the VALIDATE
    # finds by itself. The script (`fix --sql`) runs it in its turn.
    on_demand: bool = False
    repaired_by: tuple[str, ...] = ()         # on-demand steps that repair what makes this step's key fail

    def __post_init__(self) -> None:
        if self.kind is Kind.BATCHED and not self.statements:
            raise ValueError(f"step {self.id}: a batched step runs at least one statement")
        if self.until is not None and self.kind is not Kind.BATCHED:
            raise ValueError(f"step {self.id}: only a batched step walks (until)")
        if self.on_demand and (self.kind is not Kind.CHANGE or not self.transactional):
            raise ValueError(f"step {self.id}: only a transactional change runs on demand")

    @property
    def takes_lock_timeout(self) -> bool:
        """Every statement of a transactional step runs under `lock_timeout`, with retries: table locks
        that could queue writers, and the row locks of a DELETE or INSERT (a FOR UPDATE on an orphan row
        would otherwise hold the step for as long as its owner likes). CONCURRENTLY steps are watched
        instead (auditor/engine/waits.py)."""
        return self.transactional

    def sql_text(self) -> str:
        """The statements as one script text; composed once per step (a plan's files, its reports and the apply
        log each ask for it: 0.06 s a time for 86 steps at 365 partitions)."""
        text = self.__dict__.get("_sql_text")
        if text is None:
            text = ";\n".join(s.as_string(None) for s in self.statements + ((self.until,) if self.until else ())) + ";"
            object.__setattr__(self, "_sql_text", text)     # not a field: equality, hash and replace() ignore it
        return text

    def to_dict(self, done: bool | None = None) -> dict[str, Any]:
        return {
            "id": self.id, "description": self.description, "lock": self.lock.label,
            "tables": list(self.tables), "table_bytes": dict(self.table_bytes), "rewrites": self.rewrites,
            "transactional": self.transactional, "depends_on": list(self.depends_on),
            "sql": self.sql_text(), "done": bool(done), "kind": self.kind.value,
            "operation": self.operation.value, "target": self.target, "column": self.column,
            "changes": list(self.changes), "repairs": list(self.repairs),
            "on_demand": self.on_demand, "repaired_by": list(self.repaired_by),
        }


# --- what runs: one path for the offline script and the online run ---------------------------------

@dataclass(frozen=True)
class Block:
    """The statements of one step as they are sent: in one transaction when `transactional` (a
    batched step: that transaction again and again, until its last statement affects fewer than
    `repeat_below` rows, or, a walk, until `until`, run last in each batch's transaction, returns
    true), else one by one outside a transaction (CONCURRENTLY). A check's rows are problems."""

    statements: tuple[Query, ...]
    transactional: bool
    repeat_below: int | None = None
    check: bool = False
    gate: bool = False      # a gate: the first statement measures, the others (one transaction) sweep
    until: Query | None = None

    @property
    def batched(self) -> bool:
        return self.repeat_below is not None or self.until is not None


def run_settings(server_version_num: int) -> tuple[Query, ...]:
    """The migration session's settings, before its first step (the script's head, the executor's connect)."""
    out: list[Query] = [sql.SQL("SET statement_timeout = 0"),             # batches and VALIDATE may take long
           sql.SQL("SET idle_in_transaction_session_timeout = 0"),
           # one core for the migration, the others for the application: no parallel scans or index builds
           sql.SQL("SET max_parallel_workers_per_gather = 0"),
           sql.SQL("SET max_parallel_maintenance_workers = 0"),
           # the preflight's and the guards' cost estimates are large (a UNION of every refusal, scans of
           # partitioned tables), which makes the JIT compile for seconds what runs in milliseconds
           sql.SQL("SET jit = off")]
    if server_version_num >= CLIENT_CONNECTION_CHECK:
        # a killed apply's backend notices its client is gone within a second and rolls back
        out.append(sql.SQL("SET client_connection_check_interval = 1000"))
    return tuple(out)


def step_block(step: Step, lock_timeout: float, batch_size: int) -> Block:
    """The one function that turns a step into what is sent: `fix --sql` writes it, `--apply` runs it."""
    if step.kind is Kind.CHECK:
        return Block(step.statements, transactional=True, check=True)
    if step.kind is Kind.GATE:
        return Block(step.statements, transactional=True, gate=True)
    wait = f"{int(lock_timeout * 1000)}ms" if step.takes_lock_timeout else "0"
    if not step.transactional:
        # CONCURRENTLY waits for other transactions, not under lock_timeout (the step's lock is weak)
        return Block((sql.SQL("SET lock_timeout = 0"),) + step.statements, transactional=False)
    batched = step.kind is Kind.BATCHED
    return Block((sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(wait)),) + step.statements,
                 transactional=True, repeat_below=batch_size if batched and step.until is None else None,
                 until=step.until)

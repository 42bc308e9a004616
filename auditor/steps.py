"""A fix step is data: what it runs, the lock it takes, what it depends on, how to tell it is done.

The planner builds steps, `sqlscript` renders them as an annotated SQL script and the executor runs
the very same objects. Nothing here connects to a database.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from psycopg import sql


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
    def from_pg_locks(cls, mode: str) -> "LockMode":
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
    BATCHED = "batched"    # runs its one statement in a transaction of its own until it affects no row
    CHECK = "check"        # a query whose rows are problems; any row stops the run


@dataclass(frozen=True)
class Step:
    id: str
    description: str
    statements: tuple[sql.Composable, ...]
    lock: LockMode
    tables: tuple[str, ...]                   # schema.table, catalog spelling, on which `lock` is taken
    depends_on: tuple[str, ...] = ()
    transactional: bool = True
    guard: sql.Composable | None = None       # SELECT returning one boolean: true when already done
    rewrites: bool = False
    table_bytes: tuple[tuple[str, int], ...] = ()
    kind: Kind = Kind.CHANGE
    changes: tuple[str, ...] = field(default=())  # tables whose rows or definition the step may change
    repairs: tuple[str, ...] = ()             # ids of the checks whose findings this step repairs

    def __post_init__(self):
        if self.kind is Kind.BATCHED and len(self.statements) != 1:
            raise ValueError(f"step {self.id}: a batched step runs exactly one statement")

    @property
    def takes_lock_timeout(self) -> bool:
        """Statements that could queue writers behind them run under `lock_timeout`, with retries."""
        return self.lock.blocks_writers

    def sql_text(self) -> str:
        return ";\n".join(s.as_string(None) for s in self.statements) + ";"

    def to_dict(self, done: bool | None = None) -> dict:
        return {
            "id": self.id, "description": self.description, "lock": self.lock.label,
            "tables": list(self.tables), "table_bytes": dict(self.table_bytes), "rewrites": self.rewrites,
            "transactional": self.transactional, "depends_on": list(self.depends_on),
            "sql": self.sql_text(), "done": bool(done), "kind": self.kind.value,
            "repairs": list(self.repairs),
        }

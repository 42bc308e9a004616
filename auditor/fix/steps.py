"""A fix step is data: what it runs, the lock it takes, what it depends on, how to tell it is done.

The planner builds steps, `sqlscript` renders them as an annotated SQL script and the executor runs
the very same objects. Nothing here connects to a database.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from psycopg import sql

from ..pgversion import CLIENT_CONNECTION_CHECK


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


class Operation(str, enum.Enum):
    """What a step does, independent of its id: the report, the verdict and the API read this."""

    PREFLIGHT = "preflight"                 # a check: reasons not to start
    CREATE_MASTER = "create-master"         # the session master table
    QUARANTINE_MALFORMED = "quarantine-malformed"   # text keys that are not uuids, out to the quarantine
    CONVERT_TO_UUID = "convert-to-uuid"     # ALTER COLUMN ... TYPE uuid (a rewrite)
    INDEX = "index"                         # an index on a table or a partition (CONCURRENTLY)
    INDEX_PARENT = "index-parent"           # the ON ONLY index of a partitioned table
    ATTACH_INDEX = "attach-index"           # a partition's index attached to the parent's
    BACKFILL = "backfill"                   # register sessions in the master
    ORPHANS = "orphans"                     # rows whose session nobody knows: quarantine, register, delete
    CATCHUP = "catchup"                     # backfill and orphans again, right before / after the FK
    FK_ADD = "fk-add"                       # ADD CONSTRAINT ... FOREIGN KEY (NOT VALID, or attaching)
    FK_VALIDATE = "fk-validate"             # VALIDATE CONSTRAINT
    MISSING_USERS = "missing-users"         # rows naming a user that does not exist: set NULL (recorded) or quarantined
    VERIFY = "verify"                       # a check: what the steps were to achieve is there
    BRIDGE = "bridge"                       # the cutover bridge's trigger (auditor/fix/bridge.py)
    CLOSE_IDLE = "close-idle"               # maintenance: idle sessions marked ended (sessions close-idle)
    PRUNE = "prune"                         # maintenance: old sessions deleted with their rows (sessions prune)
    GATE = "gate"                           # --bridge none: stop before the FK while sessions go unregistered


class Kind(str, enum.Enum):
    CHANGE = "change"      # runs its statements (in one transaction when transactional)
    BATCHED = "batched"    # runs its statements in a transaction of their own, again and again, until the
                           # last one affects fewer rows than a batch (those before it: LOCK TABLE, no rows),
                           # or, a walk (`Step.until`), until its `until` query says the walk has ended
    CHECK = "check"        # a query whose rows are problems; any row stops the run
    GATE = "gate"          # measures (its first statement); stops the run when that counts a problem,
                           # after running its other statements (see auditor/fix/bridge.py)

    @property
    def inspects(self) -> bool:
        """Checks and gates: never "done", no guard; they run each time the run reaches them."""
        return self in (Kind.CHECK, Kind.GATE)


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
    target: str = ""                          # the audited table the step is about (a partition's parent)
    column: str = ""                          # the column of `target` it is about, when one
    repairs: tuple[str, ...] = ()             # ids of the checks whose findings on `target` it repairs
    operation: Operation = field(kw_only=True)  # what the step does (never read from its id)
    # a batched step that walks a table: SELECT one boolean, true once the walk has ended (the last query
    # of each batch's transaction; the batches' count of rows then no longer ends the step)
    until: sql.Composable | None = None
    # what a logical-replication subscriber must create before this step's changes arrive there
    # (auditor/fix/replication.py); None: the step's own CREATE SCHEMA / CREATE TABLE IF NOT EXISTS
    replica_ddl: tuple[sql.Composable, ...] | None = None

    def __post_init__(self):
        if self.kind is Kind.BATCHED and not self.statements:
            raise ValueError(f"step {self.id}: a batched step runs at least one statement")
        if self.until is not None and self.kind is not Kind.BATCHED:
            raise ValueError(f"step {self.id}: only a batched step walks (until)")

    @property
    def takes_lock_timeout(self) -> bool:
        """Every statement of a transactional step runs under `lock_timeout`, with retries: table locks
        that could queue writers, and the row locks of a DELETE or INSERT (a FOR UPDATE on an orphan row
        would otherwise hold the step for as long as its owner likes). CONCURRENTLY steps are watched
        instead (auditor/fix/waits.py)."""
        return self.transactional

    def sql_text(self) -> str:
        return ";\n".join(s.as_string(None) for s in self.statements + ((self.until,) if self.until else ())) + ";"

    def to_dict(self, done: bool | None = None) -> dict:
        return {
            "id": self.id, "description": self.description, "lock": self.lock.label,
            "tables": list(self.tables), "table_bytes": dict(self.table_bytes), "rewrites": self.rewrites,
            "transactional": self.transactional, "depends_on": list(self.depends_on),
            "sql": self.sql_text(), "done": bool(done), "kind": self.kind.value,
            "operation": self.operation.value, "target": self.target, "column": self.column,
            "changes": list(self.changes), "repairs": list(self.repairs),
        }


# --- what runs: one path for the offline script and the online run ---------------------------------

@dataclass(frozen=True)
class Block:
    """The statements of one step as they are sent: in one transaction when `transactional` (a
    batched step: that transaction again and again, until its last statement affects fewer than
    `repeat_below` rows, or, a walk, until `until`, run last in each batch's transaction, returns
    true), else one by one outside a transaction (CONCURRENTLY). A check's rows are problems."""

    statements: tuple[sql.Composable, ...]
    transactional: bool
    repeat_below: int | None = None
    check: bool = False
    gate: bool = False      # a gate: the first statement measures, the others (one transaction) sweep
    until: sql.Composable | None = None

    @property
    def batched(self) -> bool:
        return self.repeat_below is not None or self.until is not None


def session_settings(server_version_num: int) -> tuple[sql.Composable, ...]:
    """The migration session's settings, before its first step (the script's head, the executor's connect)."""
    out = [sql.SQL("SET statement_timeout = 0"),             # batches and VALIDATE may take long
           sql.SQL("SET idle_in_transaction_session_timeout = 0"),
           # one core for the migration, the others for the application: no parallel scans or index builds
           sql.SQL("SET max_parallel_workers_per_gather = 0"),
           sql.SQL("SET max_parallel_maintenance_workers = 0")]
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

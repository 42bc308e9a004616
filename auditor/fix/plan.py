"""The plan's data types: the options of `fix`, the ordered steps, and how they are ordered.

Nothing here reads the database or builds SQL: planners (`session_plan`, `schema_plan`) fill a
`Draft` (auditor/fix/draft.py) with steps, `planner.build_plan` orders them into a `Plan`.
"""
from __future__ import annotations

import dataclasses
import graphlib
from dataclasses import dataclass, field

from ..errors import AuditError
from .limits import check_ranges
from .steps import Step

ORPHAN_MODES = ("quarantine", "register", "delete")
INCLUDES = ("schema", "users")   # `fix --include`: what the plan covers beyond the session migration
BRIDGE_MODES = ("auto", "source", "all", "none")   # `fix --bridge` (auditor/fix/bridge.py)
MISSING_USERS_MODES = ("keep", "null", "quarantine")   # `--missing-users`: rows naming a user that does not exist
# `--master-user-delete`: what deleting a user does to the master's sessions of that user
MASTER_USER_DELETE_MODES = ("set-null", "no-action")


class PlanError(AuditError):
    """The migration cannot be planned as asked (bad option, unsupported shape, dependency cycle)."""


def option(flag: str, help: str, **kw):
    """A `fix` option: the field's default and `help` are what `yumai-audit fix --help` shows (the CLI's
    options are made from these fields; choices and ranges are checked once, here, in __post_init__)."""
    default = kw.pop("default")
    return field(default=default, metadata={"flag": flag, "help": help, **kw})


@dataclass(frozen=True)
class FixOptions:
    """How `fix` plans and applies: one typed object for the API and the CLI (`fix --help`)."""

    orphans: str = option("--orphans", "What to do with rows whose session exists nowhere.",
                          default="quarantine", choices=ORPHAN_MODES)
    yes_delete: bool = option("--yes-delete", "Confirm --orphans delete (rows are deleted for good).", default=False)
    active_window_minutes: int = option("--active-window", "Minutes: a session with activity this recent is "
                                        "marked is_active.", default=30)
    batch_size: int = option("--batch-size", "Sessions per backfill transaction (the next slice of the partition's "
                             "walk: registered when the master lacks them).", default=5000)
    lock_timeout: float = option("--lock-timeout", "Seconds to wait for a lock that would hold writers up, "
                                 "before backing off and retrying.", default=2.0)
    wait_timeout: float = option("--wait-timeout", "Seconds an index build (CONCURRENTLY) may wait for other "
                                 "transactions before it is cancelled and the blocking backend named (run again to "
                                 "resume).", default=300.0)
    include: tuple[str, ...] = option(
        "--include", "Also plan `schema`: the implied foreign keys confirmed by data and the partition FK drift; "
        "`users`: an FK from each key table's user column to the users table (index CONCURRENTLY, NOT VALID, "
        "then VALIDATE); both: schema,users. Default: report them only.", default=(),
        choices=INCLUDES, metavar=",".join(INCLUDES))
    missing_users: str = option(
        "--missing-users", "With --include users: rows naming a user that does not exist are kept (no FK for that "
        "column), set NULL (each original recorded in yumai_audit.nulled_user_ids) or quarantined.",
        default="keep", choices=MISSING_USERS_MODES)
    bridge: str = option(
        "--bridge", "Before the first FK, a trigger registers the session of a new row the master lacks: auto, on the "
        "source table and on every key table whose rows show the application writing it before a session's first "
        "message; source, on the source table only; all, on every key table; none (then a gate stops the apply, "
        "exit 1, while the application writes unregistered sessions). See auditor/fix/bridge.py.", default="auto",
        choices=BRIDGE_MODES)
    master_user_delete: str = option(
        "--master-user-delete", "The master the fix creates references the users table: when the application "
        "deletes a user, set-null keeps the delete working (the user's sessions keep every row; the master's "
        "user_id becomes NULL, as for a user that never existed); no-action is the guide's schema (deleting a user "
        "who has sessions fails).", default="set-null", choices=MASTER_USER_DELETE_MODES)
    gate_window: float = option("--gate-window", "With --bridge none: seconds the first gate watches the "
                                "application's writes before the first FK.", default=30.0)

    def __post_init__(self):
        if self.bridge not in BRIDGE_MODES:
            raise PlanError(f"--bridge must be one of {', '.join(BRIDGE_MODES)}, not {self.bridge!r}")
        if not 0 <= self.gate_window < float("inf"):
            raise PlanError("--gate-window must be zero or more seconds")
        if isinstance(self.include, str):
            object.__setattr__(self, "include", tuple(p.strip() for p in self.include.split(",") if p.strip()))
        object.__setattr__(self, "include", tuple(dict.fromkeys(self.include)))
        unknown = [i for i in self.include if i not in INCLUDES]
        if unknown:
            raise PlanError(f"--include must be one of {', '.join(INCLUDES)}, not {unknown[0]!r}")
        if self.missing_users not in MISSING_USERS_MODES:
            raise PlanError(f"--missing-users must be one of {', '.join(MISSING_USERS_MODES)}, not {self.missing_users!r}")
        if self.master_user_delete not in MASTER_USER_DELETE_MODES:
            raise PlanError(f"--master-user-delete must be one of {', '.join(MASTER_USER_DELETE_MODES)}, "
                            f"not {self.master_user_delete!r}")
        if self.orphans not in ORPHAN_MODES:
            raise PlanError(f"--orphans must be one of {', '.join(ORPHAN_MODES)}, not {self.orphans!r}")
        if self.orphans == "delete" and not self.yes_delete:
            raise PlanError("--orphans delete deletes rows for good: add --yes-delete to confirm")
        if self.active_window_minutes < 0:
            raise PlanError("--active-window must be zero or more minutes")
        if self.batch_size < 1:
            raise PlanError("batch size must be at least 1")
        if not 0 < self.lock_timeout < float("inf"):
            raise PlanError("--lock-timeout must be a positive number of seconds")
        check_ranges(self, PlanError)   # auditor/fix/limits.py

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Plan:
    steps: list[Step]
    server_version_num: int
    options: FixOptions
    done: dict[str, bool] = field(default_factory=dict)   # guard values when the plan was made
    notes: list[str] = field(default_factory=list)
    # what each delete of the plan reaches through foreign keys: (graph, predicate now, label, moves?),
    # counted into the notes when the plan is made (api._build_plan, cascade.measure)
    removals: list[tuple] = field(default_factory=list)
    estimate: dict = field(default_factory=dict)    # the apply's seconds and WAL, about (auditor/fix/estimate.py)

    @property
    def pending(self) -> list[Step]:
        return [s for s in self.steps if not s.kind.inspects and not self.done.get(s.id)]

    def step(self, step_id: str) -> Step:
        return next(s for s in self.steps if s.id == step_id)

    def to_dict(self) -> dict:
        return {"steps": [s.to_dict(self.done.get(s.id)) for s in self.steps],
                "server_version_num": self.server_version_num, "options": self.options.to_dict(),
                "notes": list(self.notes), "estimate": dict(self.estimate)}


def order_steps(steps: list[Step]) -> list[Step]:
    """Topological order; among steps ready at the same time, the order they were declared in."""
    by_id = {}
    for s in steps:
        if s.id in by_id:
            raise PlanError(f"two steps have the id {s.id}")
        by_id[s.id] = s
    position = {s.id: i for i, s in enumerate(steps)}
    sorter = graphlib.TopologicalSorter()
    for s in steps:
        missing = [d for d in s.depends_on if d not in by_id]
        if missing:
            raise PlanError(f"step {s.id} depends on unknown step {missing[0]}")
        sorter.add(s.id, *s.depends_on)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        raise PlanError("the fix steps depend on each other in a cycle: " + " -> ".join(cycle)) from None
    out = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        for sid in ready:
            out.append(by_id[sid])
            sorter.done(sid)
    return out



"""The migration's plan types: the options of `fix` and the plan they make.

Nothing here reads the database or builds SQL: planners (`session_plan`, `schema_plan`, `users_plan`) fill a
`Draft` (auditor/fix/draft.py) with steps, `planner.build_plan` orders them into a `MigrationPlan`
(the engine's `Plan`, auditor/engine/plan.py, with what the migration's deletes reach).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..engine.lag import DEFAULT_MAX_REPLICA_LAG
from ..engine.limits import RUN_RANGES, check_ranges
from ..engine.plan import Plan, PlanError
from .cascade import Removal
from .shares import NullOut

__all__ = ["FixOptions", "MigrationPlan", "PlanError", "FIX_RANGES"]

ORPHAN_MODES = ("quarantine", "register", "delete")
INCLUDES = ("schema", "users")   # `fix --include`: what the plan covers beyond the session migration
BRIDGE_MODES = ("auto", "source", "all", "none")   # `fix --bridge` (auditor/fix/ops/bridge.py)
MISSING_USERS_MODES = ("keep", "null", "quarantine")   # `--missing-users`: rows naming a user that does not exist
# `--master-user-delete`: what deleting a user does to the master's sessions of that user
MASTER_USER_DELETE_MODES = ("set-null", "no-action")
# option field -> (flag, lowest, highest, whether the lowest is allowed, unit): see engine/limits.py
FIX_RANGES = {
    "active_window_minutes": ("--active-window", 0, 10 * 366 * 24 * 60, True, "minutes"),   # ten years
    **RUN_RANGES,
    "max_removed_share": ("--max-removed-share", 0, 100, True, "percent"),
}


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
                                 "resume); also the longest a batched step waits for a standby (--max-replica-lag).",
                                 default=300.0)
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
        "exit 3, while the application writes unregistered sessions).", default="auto",
        choices=BRIDGE_MODES)
    master_user_delete: str = option(
        "--master-user-delete", "The master the fix creates references the users table: when the application "
        "deletes a user, set-null keeps the delete working (the user's sessions keep every row; the master's "
        "user_id becomes NULL, as for a user that never existed); no-action is the guide's schema (deleting a user "
        "who has sessions fails).", default="set-null", choices=MASTER_USER_DELETE_MODES)
    gate_window: float = option("--gate-window", "With --bridge none: seconds the first gate watches the "
                                "application's writes before the first FK.", default=30.0)
    max_removed_share: float = option(
        "--max-removed-share", "Percent of a table's rows the plan may take out of it or change (quarantine, "
        "delete, user ids set NULL, and what other tables' ON DELETE actions do with them): more is refused before "
        "any change, naming the table; up to 10 rows of a table are always allowed. Also $YUMAI_MAX_REMOVED_SHARE, "
        "or max_removed_share under [fix] in yumai-audit.toml.", default=5.0, metavar="PCT",
        envvar="YUMAI_MAX_REMOVED_SHARE", config="max_removed_share")
    max_replica_lag: float = option(
        "--max-replica-lag", "Seconds a standby (replay) or a logical slot (confirmed flush) may be behind: between "
        "batches the apply waits, at most --wait-timeout, while one is further behind; 0 turns the throttle off.",
        default=DEFAULT_MAX_REPLICA_LAG)
    subscribers_ready: bool = option(
        "--subscribers-ready", "Logical replication: each subscriber has run the script of --subscriber-sql (the "
        "tables the migration creates); without it the apply refuses while a publication covers a table it "
        "creates or changes, or a logical slot decodes this database.", default=False)

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
            raise PlanError(f"--missing-users must be one of {', '.join(MISSING_USERS_MODES)}, "
                            f"not {self.missing_users!r}")
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
        check_ranges(self, PlanError, FIX_RANGES)   # auditor/engine/limits.py

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def option_flags(options: dict, only: tuple[str, ...] | None = None, lock_timeout_asked: float | None = None
                 ) -> list[str]:
    """`options` (FixOptions.to_dict(), as plan.json has them) as the flags that ask for them: "--include
    users", "--lock-timeout 0.8 (2 asked: capped below deadlock_timeout)"; a flag that is off is left out.
    `only`: the field names to show (default all)."""
    out = []
    for f in dataclasses.fields(FixOptions):
        if "flag" not in f.metadata or f.name not in options or (only is not None and f.name not in only):
            continue
        flag, value = f.metadata["flag"], options[f.name]
        if isinstance(value, bool):
            if value:
                out.append(flag)
            continue
        if isinstance(value, (list, tuple)):
            if value:
                out.append(f"{flag} {','.join(map(str, value))}")
            continue
        text = f"{value:g}" if isinstance(value, float) else str(value)
        if f.name == "lock_timeout" and lock_timeout_asked is not None and lock_timeout_asked != value:
            text += f" ({lock_timeout_asked:g} asked: capped below the server's deadlock_timeout)"
        out.append(f"{flag} {text}")
    return out


@dataclass
class MigrationPlan(Plan):
    """The migration's plan: the engine's `Plan` with its `FixOptions` and what its deletes reach."""

    options: FixOptions
    # each delete of the plan: what it reaches through foreign keys, counted into the notes when the plan
    # is made (fix/make.py, cascade.measure)
    removals: list[Removal] = field(default_factory=list)
    # the null-outs of the plan (fix/shares.py)
    nulled: list[NullOut] = field(default_factory=list)
    # per table, the rows the plan takes out or changes, largest share first (shares.measure)
    shares: list = field(default_factory=list)
    lock_timeout_asked: float | None = None   # --lock-timeout as given, when the plan capped it (fix/make.py)
    estimate: dict = field(default_factory=dict)    # the apply's seconds and WAL, about (fix/estimate.py)

    def options_line(self, only: tuple[str, ...] | None = None) -> str:
        return " ".join(option_flags(self.options.to_dict(), only, self.lock_timeout_asked))

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["lock_timeout_asked"] = self.lock_timeout_asked
        out["option_flags"] = option_flags(self.options.to_dict(), None, self.lock_timeout_asked)
        out["estimate"] = dict(self.estimate)
        return out

    def refused(self) -> list[str]:
        """The refusal lines of the tables the plan would take more than --max-removed-share of."""
        return [s.line(self.options.max_removed_share) for s in self.shares
                if s.over(self.options.max_removed_share)]

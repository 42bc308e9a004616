"""A plan: ordered steps and the options the engine runs them with.

What makes the steps (the migration's planner, a maintenance command) lives elsewhere; the engine
only orders them (`order_steps`), writes them (`sqlscript`) and runs them (`executor`).
"""
from __future__ import annotations

import graphlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import AuditError
from .steps import Step


class PlanError(AuditError):
    """A plan cannot be made as asked (bad option, unsupported shape, dependency cycle)."""


class RunOptions(Protocol):
    """What the engine reads of a plan's options: the migration's `FixOptions` and a maintenance
    command's options both provide it (`to_dict`: the options as the script's head lists them)."""

    @property
    def lock_timeout(self) -> float: ...      # seconds a statement that could queue writers waits for a lock

    @property
    def wait_timeout(self) -> float: ...      # seconds a CONCURRENTLY build may wait for other transactions

    @property
    def batch_size(self) -> int: ...          # rows (sessions) per batch of a batched step

    @property
    def gate_window(self) -> float: ...       # seconds the first gate watches the writes

    @property
    def max_replica_lag(self) -> float: ...   # seconds a standby or logical slot may be behind between batches

    def to_dict(self) -> dict[str, Any]: ...


@dataclass
class Plan:
    steps: list[Step]
    server_version_num: int
    options: RunOptions
    done: dict[str, bool] = field(default_factory=dict)   # guard values when the plan was made
    notes: list[str] = field(default_factory=list)
    title: str = ""                                       # the script's head line (sqlscript.render_script)

    @property
    def pending(self) -> list[Step]:
        return [s for s in self.steps if not s.kind.inspects and not self.done.get(s.id)]

    def step(self, step_id: str) -> Step:
        return next(s for s in self.steps if s.id == step_id)

    def options_line(self, only: tuple[str, ...] | None = None) -> str:
        """The options as the script's head lists them (`only`: those field names); a plan whose options
        are a command's flags says them as flags (fix's MigrationPlan)."""
        return ", ".join(f"{k}={v}" for k, v in self.options.to_dict().items() if only is None or k in only)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": [s.to_dict(self.done.get(s.id)) for s in self.steps],
                "server_version_num": self.server_version_num, "options": self.options.to_dict(),
                "notes": list(self.notes)}


def order_steps(steps: list[Step]) -> list[Step]:
    """Topological order; among steps ready at the same time, the order they were declared in."""
    by_id: dict[str, Step] = {}
    for s in steps:
        if s.id in by_id:
            raise PlanError(f"two steps have the id {s.id}")
        by_id[s.id] = s
    position = {s.id: i for i, s in enumerate(steps)}
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
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

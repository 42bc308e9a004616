"""Where one `fix --apply`'s wall time goes, by category (not a test): the scans before and after, the
plan, the preflight and verify, guards (up front and per step), the journal, each step kind.

    python benchmarks/apply_profile.py --dsn postgresql://postgres@127.0.0.1:5432/a_copy

Times are measured in the client around the functions that talk to the server (so they include the
round trips); the database is migrated by the run (give it a copy). The run is `fix --apply --yes`'s: the
scan before runs on a thread beside the plan (their times overlap, so `rest` can come out below zero), the
plan without the preflight's notes.
"""
from __future__ import annotations

import argparse
import collections
import functools
import time
from collections.abc import Callable
from typing import Any

from yumai_audit import api
from yumai_audit.engine import executor

TOTALS: dict[str, float] = collections.defaultdict(float)
COUNTS: dict[str, int] = collections.defaultdict(int)


def timed(owner: Any, name: str, label: Callable[..., str] | str) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = label(*args, **kwargs) if callable(label) else label
        started = time.monotonic()
        try:
            return original(*args, **kwargs)
        finally:
            TOTALS[key] += time.monotonic() - started
            COUNTS[key] += 1
    setattr(owner, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True)
    args = parser.parse_args()
    import yumai_audit.fix.make as make
    outer = {"scan (before, after)", "plan (catalog, probes, guards, preflight)", "executor (whole)"}
    timed(api, "_live_scan", "scan (before, after)")
    timed(make, "make_plan", "plan (catalog, probes, guards, preflight)")
    timed(executor.Executor, "run", "executor (whole)")
    timed(make, "evaluate_guards", "  plan: guards")
    timed(executor, "evaluate_guards", "  executor: guards up front")
    timed(executor, "run_check", lambda conn, step, *a, **k: "  preflight" if step.precondition else "  verify (checks)")
    for name in ("_journal_start", "_journal_end", "_ensure_journal"):
        timed(executor.Executor, name, "  journal (outside a step's transaction)")
    if hasattr(executor.Executor, "_start_unless_done"):
        timed(executor.Executor, "_start_unless_done",
              lambda self, conn, step: f"  guard + journal start: {step.operation.value}")
    else:
        timed(executor, "evaluate_guard", "  guard, per step")
    timed(executor.Executor, "_run_step", lambda self, conn, step, o: f"  step: {step.operation.value}")
    timed(executor.Executor, "_gate", "  gate")
    started = time.monotonic()
    result = api.apply(args.dsn, preflight_notes=False)   # as `fix --apply --yes`
    wall = time.monotonic() - started
    print(f"ok={result.ok} steps={len(result.plan.steps)} wall {wall:.2f}s")
    for key, seconds in sorted(TOTALS.items(), key=lambda kv: (kv[0].startswith(" "), -kv[1])):
        print(f"{seconds:8.3f}s {COUNTS[key]:5d}x  {key}")
    print(f"{wall - sum(v for k, v in TOTALS.items() if k in outer):8.3f}s rest (files, reports, connections)")

if __name__ == "__main__":
    main()

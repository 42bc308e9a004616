"""Resume-planning benchmark (not a test): how long `fix` takes to plan a run cut off mid-migration.

The state: a generated database (benchmarks/generate.py) whose `fix --apply` was stopped at the
first per-partition CREATE INDEX CONCURRENTLY of chatbot.conversations, so the master exists (empty)
and most partitions have no index on the key yet. Planning the resume (`api.plan`, what a dry `fix`
and the next `--apply` do first) evaluates every step's guard. Timed, alternating runs:

- now: the guards as the planner writes them (auditor/engine/guards.py: counted, planned for the whole result);
- baseline: the same guards written as `SELECT NOT EXISTS (SELECT 1 ... NOT EXISTS ... NOT EXISTS ...)`,
  cut off by statement_timeout after --bound seconds (reported as "> bound").

With --explain, the plan of every data guard, node types only.

    python benchmarks/resume_plan.py --scale 10          # embedded PostgreSQL 18
    python benchmarks/resume_plan.py --dsn postgresql://postgres@127.0.0.1/yumai_bench --scale 10
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import psycopg
from psycopg import sql

from yumai_audit import api
from yumai_audit.config import Config
from yumai_audit.connection import resolve_target
from yumai_audit.fix import planner, registration
from yumai_audit.fix.ops import orphans

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from generate import generate  # noqa: E402


class _Stop(Exception):
    pass


def cut_off(conninfo: str) -> int:
    """Apply until the first per-partition index step of chatbot.conversations; returns steps done."""
    done = []

    def progress(msg):
        if msg.startswith("[") and "] index:chatbot.conversations_" in msg:
            raise _Stop
        if msg.startswith("    ") and ": done in" in msg:
            done.append(msg)

    try:
        api.apply(conninfo, Config(), progress=progress, rescan=False)
    except _Stop:
        return len(done)
    raise SystemExit("resume_plan: the apply finished before the per-partition index phase")


def exists_form(relation, predicate, alias="t"):
    return sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {} {} WHERE {})").format(relation, sql.Identifier(alias), predicate)


def time_plan(conninfo: str, baseline: bool, bound: float) -> float | None:
    """Seconds to plan the resume; None when a guard hit the bound (baseline only)."""
    saved, saved_env = registration.no_rows, os.environ.get("PGOPTIONS")
    if baseline:   # the guards of the backfill, the catch-ups (registration) and the orphans
        registration.no_rows = orphans.no_rows = exists_form
        os.environ["PGOPTIONS"] = f"-c statement_timeout={int(bound * 1000)}"
    t0 = time.monotonic()
    try:
        api.plan(conninfo, Config())
        return time.monotonic() - t0
    except psycopg.errors.QueryCanceled:
        return None
    finally:
        registration.no_rows = orphans.no_rows = saved
        if saved_env is None:
            os.environ.pop("PGOPTIONS", None)
        else:
            os.environ["PGOPTIONS"] = saved_env


def explain(conninfo: str) -> None:
    from yumai_audit.scan.scanner import audit_context

    with psycopg.connect(conninfo, autocommit=True) as conn:
        with conn.transaction():
            ctx = audit_context(conn, Config())
        plan = planner.build_plan(ctx, planner.FixOptions())
        for step in plan.steps:
            if step.guard is None or not step.id.startswith(("orphans:", "backfill:", "catchup:")):
                continue
            try:
                lines = [r[0] for r in conn.execute(sql.SQL("EXPLAIN ") + step.guard).fetchall()]
            except psycopg.Error as exc:
                print(f"  {step.id}: {type(exc).__name__}", flush=True)
                continue
            nodes = [ln.strip().lstrip("-> ").split("  (")[0] for ln in lines]
            joins = [n for n in nodes if "Join" in n or "Nested Loop" in n]
            print(f"  {step.id}: {', '.join(joins) or nodes[0]}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn", help="a database the benchmark may fill (its chatbot schema is replaced; "
                                  "default: a new one on an embedded PostgreSQL)")
    ap.add_argument("--scale", type=int, default=10, help="scale factor of the generated database (default 10)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs of each (alternating; default 3)")
    ap.add_argument("--baseline-runs", type=int, default=1, help="of those, how many also time the baseline (default 1)")
    ap.add_argument("--bound", type=float, default=120.0, help="seconds before a baseline guard is cut off")
    ap.add_argument("--explain", action="store_true", help="print the join nodes of each data guard")
    args = ap.parse_args(argv)
    if args.dsn:
        return run(args, resolve_target(args.dsn).conninfo)
    from yumai_audit.embedded import embedded_server

    with embedded_server() as uri:
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE DATABASE yumai_bench")
        return run(args, resolve_target(uri.replace("/postgres?", "/yumai_bench?")).conninfo)


def run(args, conninfo: str) -> int:
    t0 = time.monotonic()
    generate(conninfo, args.scale, replace=True)
    print(f"generated scale {args.scale} in {time.monotonic() - t0:.1f}s", flush=True)
    print(f"apply cut off after {cut_off(conninfo)} steps, at the first per-partition index of chatbot.conversations", flush=True)
    if args.explain:
        explain(conninfo)
    now, base = [], []
    for run in range(args.runs):
        now.append(time_plan(conninfo, False, args.bound))
        if run < args.baseline_runs:
            base.append(time_plan(conninfo, True, args.bound))

    def show(xs):
        if any(x is None for x in xs):
            done = [x for x in xs if x is not None]
            return f"> {args.bound:.0f} s (cut off in {len(xs) - len(done)} of {len(xs)} runs)"
        return f"best {min(xs):.2f} s, median {statistics.median(xs):.2f} s"

    print(f"plan the resume, now:      {show(now)}", flush=True)
    if base:
        print(f"plan the resume, baseline: {show(base)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

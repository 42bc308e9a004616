"""The cost of inferring implied foreign keys from the data, measured against the same scan without it.

On the generated yumai database (benchmarks/generate.py), runs the scan in-process, alternating:
(a) the scan as shipped; (b) the same scan with the data inference switched off (only the name
rules' probes, as before the inference existed); (c) the scan with pg_stats ignored by the
inference (the worst case: a database never analyzed, where only the probes' first rows prune);
(d) and (e): (a) and (c) without the search for a role column's words in the rows it points at.
Prints best and median of each and the ratios to (b).

    python benchmarks/implied_cost.py --scale 50                  # embedded PostgreSQL 18
    python benchmarks/implied_cost.py --dsn postgresql://postgres@127.0.0.1/yumai_bench --scale 10 --generate
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from generate import SESSIONS_PER_SCALE, generate  # noqa: E402
from psycopg import sql  # noqa: E402
from scan_bench import database  # noqa: E402

from yumai_audit import catalog  # noqa: E402
from yumai_audit.api import scan  # noqa: E402
from yumai_audit.checks import implied  # noqa: E402
from yumai_audit.config import Config  # noqa: E402

IMPLIED_CHECKS = ("unconstrained_fk", "fk_candidate")


def one(conninfo: str, variant: str) -> tuple[float, float, int]:
    patches = []
    if variant == "without inference":
        patches.append(mock.patch.object(implied, "inferences", lambda ctx, others: []))
    if variant.startswith("pg_stats ignored"):
        patches.append(mock.patch.object(catalog, "_column_stats", lambda cur, by_oid: {}))
    if variant.endswith("no role words"):
        patches.append(mock.patch.object(implied.Inference, "_role", lambda *args: sql.SQL("NULL::text")))
    for p in patches:
        p.start()
    try:
        t0 = time.monotonic()
        result = scan(conninfo, Config())
        seconds = time.monotonic() - t0
    finally:
        for p in patches:
            p.stop()
    probes = sum(c.seconds for c in result.checks if c.check in IMPLIED_CHECKS)
    findings = sum(1 for f in result.findings if f.check in IMPLIED_CHECKS)
    return seconds, probes, findings


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn", help="benchmark this database (default: a new one on an embedded PostgreSQL)")
    ap.add_argument("--scale", type=int, default=50, help="scale factor of the generated database (default 50)")
    ap.add_argument("--generate", action="store_true", help="with --dsn: (re)generate the chatbot schema there first")
    ap.add_argument("--runs", type=int, default=3, help="runs of each variant, alternating (default 3)")
    ap.add_argument("--no-progress", dest="progress", action="store_false", help="accepted for symmetry; unused")
    args = ap.parse_args(argv)
    variants = ("as shipped", "without inference", "pg_stats ignored", "as shipped, no role words",
                "pg_stats ignored, no role words")
    times = {v: [] for v in variants}
    with database(args) as conninfo:
        if not args.dsn or args.generate:
            print(f"generating scale {args.scale} ({args.scale * SESSIONS_PER_SCALE:,} sessions)...", file=sys.stderr)
            generate(conninfo, args.scale, replace=True)
        one(conninfo, "as shipped")                     # warm the cache, untimed
        for _ in range(args.runs):
            for v in variants:
                times[v].append(one(conninfo, v))
    base = min(t[0] for t in times["without inference"])
    base_median = statistics.median(t[0] for t in times["without inference"])
    print(f"scale {args.scale}, {args.runs} alternating runs each (whole scan, in-process)")
    for v in variants:
        runs = [t[0] for t in times[v]]
        best, median = min(runs), statistics.median(runs)
        probes = statistics.median(t[1] for t in times[v])
        print(f"  {v:31s} best {best:7.2f} s  median {median:7.2f} s  ratio {best / base:.2f}x best, "
              f"{median / base_median:.2f}x median; implied-FK probes {probes:.2f} s; findings {times[v][0][2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

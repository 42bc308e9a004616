"""Times `yumai-audit scan` against the per-check SQL a user would otherwise write and against the
floor (a count(*) of every key table), in one run on the same server, and checks that both count
the same. Prints the three times, the ratios and the scan's peak RSS.

    python benchmarks/scan_bench.py --scale 50            # embedded PostgreSQL 18, generated database
    python benchmarks/scan_bench.py --dsn postgresql://postgres@127.0.0.1/yumai_bench --scale 50 --generate
    python benchmarks/scan_bench.py --dsn postgresql://... # an existing yumai database, as it is

(a) the scan runs as a separate process (the real CLI: `yumai-audit scan`), so its peak RSS is its
own (getrusage(RUSAGE_SELF) at exit); (b) the per-check queries and (c) the counts run one after
the other on one connection. A first untimed count(*) of every table warms the cache for all three.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from generate import SESSIONS_PER_SCALE, expected, generate, row_counts  # noqa: E402
from per_check_sql import floor_queries, per_check_queries  # noqa: E402

from yumai_audit.api import scan as api_scan  # noqa: E402
from yumai_audit.config import Config  # noqa: E402
from yumai_audit.connection import resolve_target  # noqa: E402
from yumai_audit.runner import audit_context  # noqa: E402

# Runs the CLI in a child process and writes that process's own peak RSS next to its exit code.
_CLI_WITH_RSS = """
import json, resource, sys
from yumai_audit.cli import cli
code = 0
try:
    cli.main(args=sys.argv[2:], prog_name="yumai-audit")
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 1
with open(sys.argv[1], "w") as fh:
    json.dump({"rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "code": code}, fh)
sys.exit(code)
"""


@contextlib.contextmanager
def database(args):
    """The database to benchmark: --dsn as given, or a new one on an embedded server."""
    if args.dsn:
        yield resolve_target(args.dsn).conninfo
        return
    from yumai_audit.embedded import embedded_server

    with embedded_server() as uri:
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE DATABASE yumai_bench")
        yield resolve_target(uri.replace("/postgres?", "/yumai_bench?")).conninfo


def timed(conn, statement):
    t0 = time.monotonic()
    row = conn.execute(statement).fetchone()
    return time.monotonic() - t0, row


def run_scan_cli(conninfo: str, out: Path, progress: bool) -> tuple[float, int, int]:
    rss_file = out / "rss.json"
    cmd = [sys.executable, "-c", _CLI_WITH_RSS, str(rss_file), "scan", "--dsn", conninfo, "--out", str(out / "report"),
           "--format", "json", "--progress" if progress else "--no-progress"]
    t0 = time.monotonic()
    subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None if progress else subprocess.DEVNULL, text=True)
    seconds = time.monotonic() - t0
    info = json.loads(rss_file.read_text())
    if info["code"] not in (0, 1):
        raise SystemExit(f"scan_bench: the scan failed with exit code {info['code']}")
    return seconds, info["rss_kb"], info["code"]


def compare(per_check: dict, findings: list[dict]) -> list[str]:
    """Differences between the per-check counts and the scan's findings (an absent finding is 0)."""
    scanned = {(f["check"], f["table"], f["column"]): (f["rows"], f["keys"]) for f in findings}
    diffs = []
    for key, (rows, keys) in sorted(per_check.items()):
        s_rows, s_keys = scanned.get(key, (0, 0))
        if rows is not None and rows != (s_rows or 0):
            diffs.append(f"{key}: rows {rows} by per-check SQL, {s_rows} by the scan")
        if keys is not None and keys != (s_keys or 0):
            diffs.append(f"{key}: keys {keys} by per-check SQL, {s_keys} by the scan")
    return diffs


def time_fix_apply(conninfo: str, out: Path) -> tuple[float, list[tuple[str, float]]]:
    """Run `yumai-audit fix --apply` (a child process, as a user would) on the generated database, after
    the scan timings since it changes the database; return its wall time and the seconds per step
    from its apply-log.json. No backup: the benchmark's database is thrown away."""
    run = out / "fix"
    cmd = [sys.executable, "-c", "from yumai_audit.cli import main; main()",
           "fix", "--dsn", conninfo, "--apply", "--yes", "--no-backup", "--out", str(run)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.monotonic() - t0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"fix --apply failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    log = json.loads((run / "apply-log.json").read_text())
    return seconds, [(s["step"], float(s["seconds"])) for s in log["steps"] if s["outcome"] == "done"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn", help="benchmark this database (default: a new one on an embedded PostgreSQL)")
    ap.add_argument("--scale", type=int, default=50, help="scale factor of the generated database (default 50)")
    ap.add_argument("--generate", action="store_true",
                    help="with --dsn: (re)generate the chatbot schema there first (drops an existing one)")
    ap.add_argument("--no-progress", dest="progress", action="store_false", help="hide the scan's progress lines")
    args = ap.parse_args(argv)

    with database(args) as conninfo, tempfile.TemporaryDirectory(prefix="yumai-bench-") as tmp:
        generated = not args.dsn or args.generate
        if generated:
            t0 = time.monotonic()
            print(f"generating scale {args.scale} ({args.scale * SESSIONS_PER_SCALE:,} sessions)...", file=sys.stderr)
            generate(conninfo, args.scale, replace=True, say=lambda m: print(f"  {m}", file=sys.stderr))
            print(f"generated in {time.monotonic() - t0:.1f}s", file=sys.stderr)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
            ctx = audit_context(conn, Config())
            floors, checks = floor_queries(ctx), per_check_queries(ctx)
            for _, q in floors:                       # warm the cache, untimed
                conn.execute(q)
            floor_s, rows = 0.0, {}
            for name, q in floors:
                s, row = timed(conn, q)
                floor_s += s
                rows[name] = row[0]
            per_check_s, per_check, slowest = 0.0, {}, []
            for q in checks:
                s, row = timed(conn, q.statement)
                per_check_s += s
                per_check[(q.check, q.table, q.column)] = (row[0], row[1])
                slowest.append((s, f"{q.check} on {q.table}"))
        scan_s, rss_kb, _ = run_scan_cli(conninfo, Path(tmp), args.progress)
        t0 = time.monotonic()
        api_scan(conninfo, Config())                  # the same scan in-process: SQL without start-up and report
        api_s = time.monotonic() - t0
        result = json.loads((Path(tmp) / "report" / "findings.json").read_text())
        # the fix changes the database: only on one the benchmark generated itself
        fix = time_fix_apply(conninfo, Path(tmp)) if generated else None

    total = sum(rows.values())
    print(f"\nPostgreSQL {version}; key tables: {total:,} rows "
          + ", ".join(f"{n.split('.')[-1]} {r:,}" for n, r in rows.items()))
    print(f"(a) yumai-audit scan (CLI, whole process)  {scan_s:8.2f} s")
    print(f"    the same scan via the API, in-process   {api_s:8.2f} s   (no interpreter start-up, no report)")
    print(f"(b) per-check SQL ({len(checks)} queries)          {per_check_s:8.2f} s")
    print(f"(c) floor: count(*) of {len(floors)} key tables      {floor_s:8.2f} s")
    print(f"scan / per-check SQL: {scan_s / per_check_s:.2f}x (API: {api_s / per_check_s:.2f}x)    "
          f"scan / floor: {scan_s / floor_s:.1f}x (API: {api_s / floor_s:.1f}x)")
    print(f"scan peak RSS: {rss_kb / 1024:.0f} MB")
    print("slowest per-check queries: " + "; ".join(f"{n} {s:.2f}s" for s, n in sorted(slowest, reverse=True)[:3]))
    print("scan, seconds per check (a pass shared by several checks counts for each): " + ", ".join(
        f"{c['check']} {c['seconds']:.2f}" for c in result["checks"] if c["seconds"] >= 0.01))
    diffs = compare(per_check, result["findings"])
    if generated:
        want = expected(args.scale)
        got = {(f["check"], f["table"], f["column"]): (f["rows"], f["keys"]) for f in result["findings"]
               if (f["check"], f["table"], f["column"]) in want}
        diffs += [f"{k}: expected {v}, the scan found {got.get(k)}" for k, v in want.items() if got.get(k) != v]
        diffs += [f"{n}: expected {c} rows, counted {rows.get(n)}" for n, c in row_counts(args.scale).items()
                  if rows.get(n) != c]
    errors = [c["check"] for c in result["checks"] if c["status"] == "error"]
    if fix is None:
        print("fix --apply: not run (an existing database given with --dsn is never changed; use --generate)")
    else:
        fix_s, fix_steps = fix
        print(f"fix --apply (CLI, whole process, no backup): {fix_s:.2f} s in {len(fix_steps)} steps; slowest: "
              + ", ".join(f"{step} {s:.2f}" for step, s in sorted(fix_steps, key=lambda x: -x[1])[:10]))
    if diffs or errors:
        print("MISMATCH:\n  " + "\n  ".join(diffs + [f"check {e} ended in error" for e in errors]))
        return 1
    print(f"counts: the scan and the per-check SQL agree on all {len(per_check)} measures"
          + (" and match the generator's expected counts" if generated else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Times `yumai-audit scan` against the per-check SQL a user would otherwise write, alternating the two in
one run, several rounds, before the migration and in a half-done one; checks that both count the same.

    python benchmarks/scan_bench.py --scale 50                      # embedded PostgreSQL 18, varied shape
    python benchmarks/scan_bench.py --dsn postgresql://postgres@127.0.0.1/yumai_bench --scale 50 --generate
    python benchmarks/scan_bench.py --shape generator --scale 50    # generate.py's original shape
    python benchmarks/scan_bench.py --dsn postgresql://... --state as-is   # an existing database, unchanged

Each round runs, in an order that alternates from round to round:
(a) the scan: the real CLI (`yumai-audit scan`, writing its JSON, CSV and HTML report) in a child process,
    timed as a whole process, with that process's own peak RSS (getrusage(RUSAGE_SELF) at exit);
(b) the per-check SQL (`per_check_sql.py`), one query after the other on one connection, in Python;
(c) the same queries as a plain psql script (`psql -X -q -f`), timed as a whole process;
(d) with --before PYTHON, the scan of another installation (e.g. main's), the same way as (a).
The baseline is the faster of (b) and (c), by their best time; the ratio is reported for the best and
the median of the rounds. A first untimed count(*) of every key table warms the cache.

States (--state): `pre` is the database before the migration; `half-done` adds a master with half of the
sessions (user_id REFERENCES users) and user_interactions' foreign key NOT VALID (generate.make_half_done);
`both` (the default) runs `pre` and then `half-done`; `as-is` benchmarks the database as it is.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from generate import (  # noqa: E402
    SESSIONS_PER_SCALE,
    expected,
    generate,
    generate_daily,
    generate_varied,
    make_half_done,
    undo_half_done,
)
from per_check_sql import floor_queries, per_check_queries, script  # noqa: E402

from yumai_audit.config import Config  # noqa: E402
from yumai_audit.connection import resolve_target  # noqa: E402
from yumai_audit.scan.scanner import audit_context  # noqa: E402

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


def run_scan_cli(conninfo: str, out: Path, python: str = sys.executable) -> tuple[float, int, dict]:
    rss_file = out / "rss.json"
    cmd = [python, "-c", _CLI_WITH_RSS, str(rss_file), "scan", "--dsn", conninfo, "--out", str(out / "report"),
           "--format", "json", "--no-progress"]
    t0 = time.monotonic()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.monotonic() - t0
    info = json.loads(rss_file.read_text())
    if info["code"] not in (0, 1):
        raise SystemExit(f"scan_bench: the scan failed with exit code {info['code']}")
    return seconds, info["rss_kb"], json.loads((out / "report" / "findings.json").read_text())


def run_per_check(conninfo: str, queries) -> tuple[float, dict, list]:
    per_check, slowest = {}, []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        t_all = time.monotonic()
        for q in queries:
            t0 = time.monotonic()
            row = conn.execute(q.statement).fetchone()
            slowest.append((time.monotonic() - t0, f"{q.check} on {q.table}"))
            per_check[(q.check, q.table, q.column)] = (row[0], row[1])
        return time.monotonic() - t_all, per_check, slowest


def run_psql(conninfo: str, path: Path) -> float:
    env = {**os.environ, "PGAPPNAME": "per-check-sql"}
    t0 = time.monotonic()
    proc = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-f", str(path)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    seconds = time.monotonic() - t0
    if proc.returncode:
        raise SystemExit(f"scan_bench: psql failed: {proc.stderr.strip()[-300:]}")
    return seconds


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
    """Run `yumai-audit fix --apply` (a child process, as a user would); its wall time and the seconds per
    step from its apply-log.json. No backup: the benchmark's database is thrown away."""
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


def bench_state(conninfo: str, label: str, rounds: int, tmp: Path, want: dict | None = None,
                before: str | None = None) -> dict:
    """Alternate the scan and both per-check baselines for `rounds` rounds; print and return the numbers.
    `before`: the Python of another installation whose scan is timed in the same rotation."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0].split()[0]
        ctx = audit_context(conn, Config())
        floors, queries = floor_queries(ctx), per_check_queries(ctx)
        for _, q in floors:                       # warm the cache, untimed
            conn.execute(q)
        rows = {name: conn.execute(q).fetchone()[0] for name, q in floors}
        psql_file = tmp / f"per_check_{label}.sql"
        psql_file.write_text(script(queries, conn))
    times = {"scan": [], "python": [], "psql": []} | ({"before": []} if before else {})
    rss, findings, per_check, slowest = [], None, None, None
    order = ["scan", "python", "psql"] + (["before"] if before else [])
    for r in range(rounds):
        for what in (order if r % 2 == 0 else order[::-1]):
            if what == "scan":
                seconds, kb, findings = run_scan_cli(conninfo, tmp)
                rss.append(kb)
            elif what == "before":
                seconds, _, _ = run_scan_cli(conninfo, tmp, before)
            elif what == "python":
                seconds, per_check, slowest = run_per_check(conninfo, queries)
            else:
                seconds = run_psql(conninfo, psql_file)
            times[what].append(seconds)
        print(f"  [{label}] round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), file=sys.stderr)
    baseline = min(("python", "psql"), key=lambda k: min(times[k]))
    best = {k: min(v) for k, v in times.items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    diffs = compare(per_check, findings["findings"])
    if want:
        got = {(f["check"], f["table"], f["column"]): (f["rows"], f["keys"]) for f in findings["findings"]}
        diffs += [f"{k}: expected {v}, the scan found {got.get(k)}" for k, v in want.items() if got.get(k) != v]
    errors = [c["check"] for c in findings["checks"] if c["status"] == "error"]
    total = sum(rows.values())
    print(f"\n== {label}: PostgreSQL {version}; {len(rows)} key tables, {total:,} rows; {rounds} rounds; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"   {'':34s} {'best':>8s} {'median':>8s}")
    print(f"   {'(a) yumai-audit scan, whole CLI':34s} {best['scan']:7.2f}s {median['scan']:7.2f}s")
    print(f"   {f'(b) per-check SQL, {len(queries)} queries':34s} {best['python']:7.2f}s {median['python']:7.2f}s")
    print(f"   {'(c) the same as a psql script':34s} {best['psql']:7.2f}s {median['psql']:7.2f}s")
    if before:
        print(f"   {'(d) the scan before (--before)':34s} {best['before']:7.2f}s {median['before']:7.2f}s"
              f"   ({best['before'] / best[baseline]:.2f}x / {median['before'] / median[baseline]:.2f}x)")
    print(f"   scan / per-check SQL (baseline {'(b)' if baseline == 'python' else '(c)'}): best {best['scan'] / best[baseline]:.2f}x, "
          f"median {median['scan'] / median[baseline]:.2f}x;  scan peak RSS {max(rss) / 1024:.0f} MB")
    print("   slowest per-check queries: " + "; ".join(f"{n} {s:.2f}s" for s, n in sorted(slowest, reverse=True)[:3]))
    print("   scan, seconds per check (a statement shared by several checks counts for each): " + ", ".join(
        f"{c['check']} {c['seconds']:.2f}" for c in findings["checks"] if c["seconds"] >= 0.01))
    if diffs or errors:
        print("   MISMATCH:\n     " + "\n     ".join(diffs + [f"check {e} ended in error" for e in errors]))
    else:
        print(f"   counts: the scan and the per-check SQL agree on all {len(per_check)} measures"
              + (" and match the generator's expected counts" if want else ""))
    return {"label": label, "version": version, "best": best, "median": median, "baseline": baseline,
            "rss_mb": max(rss) / 1024, "ok": not (diffs or errors)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn", help="benchmark this database (default: a new one on an embedded PostgreSQL)")
    ap.add_argument("--scale", type=int, default=50, help="scale factor of the generated database (default 50)")
    ap.add_argument("--shape", choices=["varied", "generator", "daily"], default="varied",
                    help="varied (default): generate.py --shape varied, the issue-16 shapes; generator: the original; "
                         "daily: the varied shape's data over --days daily partitions and a default one")
    ap.add_argument("--days", type=int, default=365, help="with --shape daily: the daily partitions (default 365)")
    ap.add_argument("--state", choices=["both", "pre", "half-done", "as-is"], default="both",
                    help="which migration states to run (varied and daily shapes; default both)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per state (default 3)")
    ap.add_argument("--generate", action="store_true",
                    help="with --dsn: (re)generate the schema there first (drops an existing one)")
    ap.add_argument("--before", metavar="PYTHON",
                    help="also time the scan of another installation (its interpreter) in the same rotation")
    ap.add_argument("--fix", action="store_true", help="afterwards, time `fix --apply` on the generated database")
    args = ap.parse_args(argv)
    if args.dsn and not args.generate and args.state in ("both", "half-done"):
        print("scan_bench: an existing database is changed to the half-done state and back (master table, NOT VALID FK)",
              file=sys.stderr)

    results = []
    with database(args) as conninfo, tempfile.TemporaryDirectory(prefix="yumai-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        generated = not args.dsn or args.generate
        if generated:
            t0 = time.monotonic()
            print(f"generating scale {args.scale} ({args.scale * SESSIONS_PER_SCALE:,} sessions, {args.shape})...",
                  file=sys.stderr)
            say = lambda m: print(f"  {m}", file=sys.stderr)  # noqa: E731
            if args.shape == "varied":
                generate_varied(conninfo, args.scale, replace=True, say=say)
            elif args.shape == "daily":
                generate_daily(conninfo, args.scale, args.days, replace=True, say=say)
            else:
                generate(conninfo, args.scale, replace=True, say=say)
            print(f"generated in {time.monotonic() - t0:.1f}s", file=sys.stderr)
        want = expected(args.scale) if generated and args.shape == "generator" else None
        if args.state == "as-is" or args.shape == "generator":
            results.append(bench_state(conninfo, "as is" if args.state == "as-is" else "generator", args.rounds, tmp, want,
                                       args.before))
        else:
            if args.state in ("both", "pre"):
                undo_half_done(conninfo)
                results.append(bench_state(conninfo, "pre-migration", args.rounds, tmp, before=args.before))
            if args.state in ("both", "half-done"):
                make_half_done(conninfo, args.scale)
                results.append(bench_state(conninfo, "half-done", args.rounds, tmp, before=args.before))
        if args.fix and generated:
            fix_s, fix_steps = time_fix_apply(conninfo, tmp)
            print(f"fix --apply (CLI, whole process, no backup): {fix_s:.2f} s in {len(fix_steps)} steps; slowest: "
                  + ", ".join(f"{step} {s:.2f}" for step, s in sorted(fix_steps, key=lambda x: -x[1])[:10]))
    print(f"\nthis process's peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

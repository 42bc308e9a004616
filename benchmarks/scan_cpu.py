"""CPU seconds, not only wall seconds: the scan against the per-check SQL on a server of its own (embedded
PostgreSQL 18, nothing else connected), each run's server CPU (every process of the server, parallel workers
and exited backends included) and its client's (the child process, or this process for the per-check SQL).

    python benchmarks/scan_cpu.py --scale 20 --days 365 [--before /path/to/other/venv/bin/python] [--rounds 3]

On a shared machine the wall times of one run move with the load of others; the CPU seconds a run takes move
much less, and say what the scan costs the server and its own process. The per-check SQL runs with the server's
parallel workers (2 per statement by default), the scan on its two connections without them.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from generate import generate_daily, make_half_done, undo_half_done  # noqa: E402
from per_check_sql import per_check_queries, script  # noqa: E402
from scan_bench import run_per_check, run_psql, run_scan_cli  # noqa: E402

from yumai_audit.config import Config  # noqa: E402
from yumai_audit.connection import resolve_target  # noqa: E402
from yumai_audit.embedded import embedded_server  # noqa: E402
from yumai_audit.scan.scanner import audit_context  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def server_cpu(postmaster: int) -> float:
    """CPU seconds of the server so far: the postmaster with its reaped children, and every live child."""
    def fields(pid: int) -> list[str]:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    f = fields(postmaster)
    total = sum(int(x) for x in f[11:15])        # utime, stime, cutime, cstime
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != postmaster:
            try:
                g = fields(int(entry))
            except OSError:
                continue
            if int(g[1]) == postmaster:              # ppid
                total += int(g[11]) + int(g[12])
    return total / TICK


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(postmaster: int, run) -> tuple[float, float, float]:
    time.sleep(0.3)
    s0, c0, p0, t0 = server_cpu(postmaster), child_cpu(), self_cpu(), time.monotonic()
    run()
    wall = time.monotonic() - t0
    time.sleep(0.3)                                  # the backends exit and are reaped
    return wall, server_cpu(postmaster) - s0, (child_cpu() - c0) + (self_cpu() - p0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=int, default=20)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--before", metavar="PYTHON", help="also the scan of another installation")
    args = ap.parse_args(argv)
    with embedded_server() as uri, tempfile.TemporaryDirectory(prefix="yumai-cpu-") as tmp_dir:
        tmp = Path(tmp_dir)
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE DATABASE yumai_bench")
            data = conn.execute("SHOW data_directory").fetchone()[0]
        postmaster = int(Path(data, "postmaster.pid").read_text().split()[0])
        conninfo = resolve_target(uri.replace("/postgres?", "/yumai_bench?")).conninfo
        generate_daily(conninfo, args.scale, args.days, replace=True, say=lambda m: None)
        for state in ("pre-migration", "half-done"):
            (undo_half_done if state == "pre-migration" else lambda c: make_half_done(c, args.scale))(conninfo)
            with psycopg.connect(conninfo, autocommit=True) as conn:
                queries = per_check_queries(audit_context(conn, Config()))
                psql_file = tmp / "per_check.sql"
                psql_file.write_text(script(queries, conn))
            runs = {"scan": lambda: run_scan_cli(conninfo, tmp),
                    "per-check (python)": lambda q=queries: run_per_check(conninfo, q),
                    "per-check (psql)": lambda f=psql_file: run_psql(conninfo, f)}
            if args.before:
                runs["scan before"] = lambda: run_scan_cli(conninfo, tmp, args.before)
            got: dict[str, list] = {k: [] for k in runs}
            order = list(runs)
            for r in range(args.rounds):
                for name in order if r % 2 == 0 else order[::-1]:
                    got[name].append(measure(postmaster, runs[name]))
            version = psycopg.connect(conninfo).execute("SHOW server_version").fetchone()[0].split()[0]
            print(f"\n== {state}: PostgreSQL {version}, daily, {args.days} partitions, scale {args.scale}, "
                  f"{args.rounds} rounds, load average {os.getloadavg()[0]:.1f}")
            print(f"   {'':22s} {'wall best/median':>18s} {'server CPU s':>14s} {'client CPU s':>14s}")
            for name, xs in got.items():
                walls, servers, clients = zip(*xs)
                print(f"   {name:22s} {min(walls):7.2f} / {statistics.median(walls):5.2f}s "
                      f"{statistics.median(servers):12.2f}s {statistics.median(clients):12.2f}s"
                      f"   (server {' '.join(f'{s:.2f}' for s in servers)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

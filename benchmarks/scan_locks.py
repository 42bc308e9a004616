"""The locks a `yumai-audit scan` holds: pg_locks polled while the CLI runs, the peak per connection and in all.

    python benchmarks/scan_locks.py --dsn postgresql://postgres@127.0.0.1:5432/db [--jobs 2] [--yumai-audit PATH]

Every `--interval` seconds, a connection of its own counts the rows of pg_locks per backend of the scanned
database whose application_name starts with "yumai-audit" (the scan's connections, and the repair plan's that
the CLI opens beside them): the peak of each backend, and the peak of their sum at one poll. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time

import psycopg

POLL = """
SELECT l.pid, a.application_name, count(*)::int, count(*) FILTER (WHERE NOT l.fastpath)::int
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE a.datname = current_database() AND a.application_name LIKE 'yumai-audit%' AND a.pid <> pg_backend_pid()
GROUP BY l.pid, a.application_name
"""


def measure(dsn: str, jobs: int, exe: str, interval: float = 0.01) -> dict:
    peak: dict[int, dict] = {}
    total_peak = 0
    with tempfile.TemporaryDirectory() as out, psycopg.connect(dsn, autocommit=True) as conn:
        started = time.monotonic()
        proc = subprocess.Popen([exe, "scan", "--dsn", dsn, "--jobs", str(jobs), "--out", out, "--format", "json",
                                 "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while proc.poll() is None:
            rows = conn.execute(POLL).fetchall()
            total_peak = max(total_peak, sum(r[2] for r in rows))
            for pid, app, locks, shared in rows:
                p = peak.setdefault(pid, {"application_name": app, "locks": 0, "not_fastpath": 0})
                p["locks"] = max(p["locks"], locks)
                p["not_fastpath"] = max(p["not_fastpath"], shared)
            time.sleep(interval)
        seconds = time.monotonic() - started
        err = proc.stderr.read() if proc.stderr else ""
    return {"jobs": jobs, "exit": proc.returncode, "seconds": round(seconds, 2),
            "peak_per_connection": sorted(peak.values(), key=lambda p: -p["locks"]), "peak_total": total_peak,
            "stderr": err.strip().splitlines()[-3:]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--yumai-audit", default=shutil.which("yumai-audit") or "yumai-audit")
    ap.add_argument("--interval", type=float, default=0.01)
    args = ap.parse_args(argv)
    print(json.dumps(measure(args.dsn, args.jobs, args.yumai_audit, args.interval)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

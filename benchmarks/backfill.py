"""Backfill benchmark (not a test): `fix --apply` on a freshly built database, its backfill steps' seconds.

Builds the database before every run: `generate.py --shape varied` at `--scale` (four monthly partitions
of about 100,000 sessions each at scale 20, a small default one), or, with `--sessions`, the cutover
benchmark's (about 10 messages a session, from 2026-08-01 one session a minute: at 480,000 sessions 3.5M
of the 4.8M messages are in the default partition). Then runs `fix --apply --yes --no-backup` as a
process and reads each backfill step's seconds, rows and batches from its apply-log.json. Several
`--yumai-audit` commands (another checkout's venv, e.g. main's) are run in turn, `--rounds` times.

    python benchmarks/backfill.py --dsn postgresql://postgres@127.0.0.1/yumai_backfill --scale 20 --rounds 3 \\
        --yumai-audit /tmp/venv-main/bin/yumai-audit --yumai-audit yumai-audit
    python benchmarks/backfill.py --dsn postgresql://postgres@127.0.0.1/yumai_backfill --sessions 480000

The database must exist; its schemas chatbot, Analytics, yumai_audit and yumai_quarantine are dropped.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cutover  # noqa: E402
import generate  # noqa: E402

DROP = 'DROP SCHEMA IF EXISTS chatbot, "Analytics", yumai_audit, yumai_quarantine CASCADE'


def build(dsn: str, scale: int, sessions: int | None) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(DROP)
        if sessions is not None:
            conn.execute(cutover.SCHEMA)
            conn.execute(cutover.data(sessions))
            conn.execute("VACUUM ANALYZE")
    if sessions is None:
        generate.generate_varied(dsn, scale, replace=True)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def apply(command: str, dsn: str, batch_size: int) -> tuple[float, list[tuple[str, float, int, int]]]:
    """(the whole apply's seconds, [(backfill step, seconds, rows, batches)])."""
    with tempfile.TemporaryDirectory() as out:
        started = time.monotonic()
        subprocess.run([command, "fix", "--dsn", dsn, "--apply", "--yes", "--no-backup", "--batch-size",
                        str(batch_size), "--out", out], capture_output=True, check=False)
        seconds = time.monotonic() - started
        log = json.loads((Path(out) / "apply-log.json").read_text())
    if not log["ok"]:
        raise SystemExit(f"{command}: fix --apply failed: {log['problems'] or log['steps'][-1]}")
    return seconds, [(s["step"], s["seconds"], s["rows"], s["tries"]) for s in log["steps"]
                     if s["step"].startswith("backfill:") and s["outcome"] == "done"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", required=True, help="the database to build and migrate (must exist)")
    parser.add_argument("--scale", type=int, default=20, help="generate.py --shape varied --scale (default 20)")
    parser.add_argument("--sessions", type=int, help="the cutover benchmark's database with this many sessions instead")
    parser.add_argument("--batch-size", type=int, default=5000, help="fix --apply --batch-size")
    parser.add_argument("--rounds", type=int, default=1, help="run every command this many times, in turn")
    parser.add_argument("--yumai-audit", action="append", dest="commands",
                        help="a yumai-audit command to time (repeatable; default: yumai-audit)")
    args = parser.parse_args()
    totals: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for command in args.commands or ["yumai-audit"]:
            build(args.dsn, args.scale, args.sessions)
            seconds, steps = apply(command, args.dsn, args.batch_size)
            backfill = sum(s for _step, s, _rows, _batches in steps)
            totals.setdefault(command, []).append(backfill)
            print(f"{command}: fix --apply {seconds:.1f} s, backfill steps {backfill:.2f} s")
            for step, s, rows, batches in steps:
                print(f"  {step}: {s:.2f} s, {rows:,} sessions, {batches} batches")
    for command, values in totals.items():
        print(f"{command}: backfill best {min(values):.2f} s, median {statistics.median(values):.2f} s "
              f"of {len(values)}")


if __name__ == "__main__":
    main()

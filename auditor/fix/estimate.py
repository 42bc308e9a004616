"""The dry run's estimate of the apply: its seconds and WAL, from what the plan already knows.

A linear model in two sizes the catalog gives for free: the plan's steps (each costs the executor's own
work, guard, journal and transaction, a few catalog statements) and the rows of the key tables it reads
(estimated rows: the backfill, the index builds, the FK checks, the quarantines and the scans before and
after each read them about once). The constants were fitted on benchmarks/apply_vs_oneshot.py's two
shapes (many rows in few steps; many daily partitions, so many steps over few rows) on PostgreSQL 15 and
18, to fall within 2x of every measured apply there, and refitted when the steps' fixed cost fell and when
the guards that read whole tables went (15 to 12 us a row: the apply at scale 20 had fallen to 12-13 s);
benchmarks/README.md has the runs and compares them. It says "about": a busy server, a cold cache or a long
lock wait move it.
"""
from __future__ import annotations

from dataclasses import dataclass

SECONDS_PER_STEP = 0.025
SECONDS_PER_ROW = 12e-6
WAL_BYTES_PER_STEP = 50_000
WAL_BYTES_PER_ROW = 155


@dataclass(frozen=True)
class Estimate:
    steps: int
    rows: int
    seconds: float
    wal_bytes: int

    @classmethod
    def of(cls, steps: int, rows: int) -> Estimate:
        return cls(steps, rows, steps * SECONDS_PER_STEP + rows * SECONDS_PER_ROW,
                   steps * WAL_BYTES_PER_STEP + rows * WAL_BYTES_PER_ROW)

    def note(self) -> str:
        return (f"estimate: the apply takes about {self.seconds:.0f} s and writes about "
                f"{self.wal_bytes / 2**20:.0f} MB of WAL ({self.steps} steps, {self.rows:,} estimated rows of the "
                "key tables; the scans before and after included)")

    def to_dict(self) -> dict:
        return {"steps": self.steps, "rows": self.rows, "seconds": round(self.seconds, 1), "wal_bytes": self.wal_bytes}

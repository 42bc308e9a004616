"""The ranges run options must lie in, checked when the options are made: before any connection.

Out of range, a value would get partway (PostgreSQL refuses a LIMIT beyond bigint, an interval
beyond its range, a lock_timeout beyond 2^31 ms) or make a wait unbounded in practice: one clear
line (`PlanError`, exit code 2) instead.
"""
from __future__ import annotations

import math

from ..errors import AuditError

Range = tuple[str, float, float, bool, str]

# option field -> (flag, lowest, highest, whether the lowest is allowed, unit): the engine's options
RUN_RANGES: dict[str, Range] = {
    "batch_size": ("--batch-size", 1, 10_000_000, True, "sessions"),
    "lock_timeout": ("--lock-timeout", 0, 3600, False, "seconds"),                           # an hour
    "wait_timeout": ("--wait-timeout", 0, 7 * 24 * 3600, False, "seconds"),                  # a week
    "max_replica_lag": ("--max-replica-lag", 0, 7 * 24 * 3600, True, "seconds"),             # 0: no throttle
}


def out_of_range(options: object, ranges: dict[str, Range] = RUN_RANGES) -> str | None:
    """The first option outside its range, as one line; None when all are in range."""
    for field, (flag, low, high, low_ok, unit) in ranges.items():
        value = getattr(options, field)
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
              and (value >= low if low_ok else value > low) and value <= high)
        if not ok:
            lowest = f"from {low}" if low_ok else f"more than {low}"
            return f"{flag} must be {lowest} up to {high} {unit}, not {value!r}"
    return None


def check_ranges(options: object, error: type[AuditError] = AuditError,
                 ranges: dict[str, Range] = RUN_RANGES) -> None:
    problem = out_of_range(options, ranges)
    if problem:
        raise error(problem)

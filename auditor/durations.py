"""Durations and points in time as the lifecycle commands take them: `30m`, `12h`, `180d`, or an ISO timestamp."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from .errors import ConfigError

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PART = r"\d+\s*[smhdw]"
# one or more parts, each unit at most once and from the largest down (1d12h, 1h30m), as Go and systemd write them
_DURATION = re.compile(rf"^\s*(?:{_PART}\s*)+$")
_PARTS = re.compile(r"(\d+)\s*([smhdw])")
_ORDER = "wdhms"


def parse_duration(text: str, what: str = "duration") -> timedelta:
    """`90s`, `30m`, `12h`, `180d`, `2w`, or parts of them added up (`1h30m`, `1d12h`) -> timedelta;
    anything else (or zero) is a ConfigError."""
    parts = _PARTS.findall(text or "") if _DURATION.match(text or "") else []
    units = [unit for _, unit in parts]
    if not parts or units != sorted(set(units), key=_ORDER.index):
        raise ConfigError(f"{what}: {text!r} is not a duration like 30m, 12h, 180d or 1h30m "
                          "(whole numbers, each with one of w, d, h, m, s, largest first)")
    try:
        total = sum((timedelta(**{_UNITS[unit]: int(value)}) for value, unit in parts), timedelta())
    except OverflowError:
        raise ConfigError(f"{what}: {text!r} is too long") from None
    if total <= timedelta(0):
        raise ConfigError(f"{what}: {text!r} must be longer than zero")
    return total



def duration_text(seconds: float) -> str:
    """About how long, written as `parse_duration` reads it: `45s` below 90 seconds, `12m` below 90
    minutes, `1h30m` (`2h`) above; under a second is `<1s`."""
    if seconds < 0.5:
        return "<1s"
    if seconds < 90:
        return f"{round(seconds)}s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m" if minutes else f"{hours}h"

def parse_since(text: str, now: datetime | None = None, what: str = "--since") -> datetime:
    """An ISO timestamp (naive means UTC) or a duration back from now (`24h`): an aware datetime."""
    if _DURATION.match(text or ""):
        return (now or datetime.now(timezone.utc)) - parse_duration(text, what)
    try:
        moment = datetime.fromisoformat((text or "").strip().replace(" Z", "Z"))
    except ValueError:
        raise ConfigError(f"{what}: {text!r} is neither an ISO timestamp (2026-11-26T08:00+00:00) "
                          "nor a duration like 24h") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)

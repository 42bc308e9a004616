"""Durations and points in time as the lifecycle commands take them: `30m`, `12h`, `180d`, or an ISO timestamp."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from .errors import ConfigError

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")


def parse_duration(text: str, what: str = "duration") -> timedelta:
    """`90s`, `30m`, `12h`, `180d`, `2w` -> timedelta; anything else (or zero) is a ConfigError."""
    match = _DURATION.match(text or "")
    if not match:
        raise ConfigError(f"{what}: {text!r} is not a duration like 30m, 12h or 180d "
                          "(a whole number and one of s, m, h, d, w)")
    value = int(match.group(1))
    if value <= 0:
        raise ConfigError(f"{what}: {text!r} must be longer than zero")
    try:
        return timedelta(**{_UNITS[match.group(2)]: value})
    except OverflowError:
        raise ConfigError(f"{what}: {text!r} is too long") from None


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

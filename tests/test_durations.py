"""Duration and --since parsing (no database)."""
from datetime import datetime, timedelta, timezone

import pytest

from yumai_audit.durations import parse_duration, parse_since
from yumai_audit.errors import ConfigError


@pytest.mark.parametrize("text, expected", [
    ("30m", timedelta(minutes=30)), ("12h", timedelta(hours=12)), ("180d", timedelta(days=180)),
    ("90s", timedelta(seconds=90)), ("2w", timedelta(weeks=2)), (" 7d ", timedelta(days=7)),
    ("1h30m", timedelta(minutes=90)), ("1d12h", timedelta(hours=36)), ("2w1d", timedelta(days=15)),
    ("1h 30m 15s", timedelta(hours=1, minutes=30, seconds=15)), ("0h30m", timedelta(minutes=30)),
])
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "m", "1.5h", "-3d", "0m", "3 days", "10y", "99999999999999d",
                                  "30m1h", "1h1h", "1h30", "0h0m", "1h-30m", "h30m"])
def test_bad_durations(text):
    with pytest.raises(ConfigError):
        parse_duration(text)


def test_since_timestamp_and_relative():
    assert parse_since("2026-10-05T00:00:00+02:00") == datetime(2026, 10, 4, 22, tzinfo=timezone.utc)
    assert parse_since("2026-10-05") == datetime(2026, 10, 5, tzinfo=timezone.utc)
    now = datetime(2026, 11, 26, 12, tzinfo=timezone.utc)
    assert parse_since("24h", now=now) == datetime(2026, 11, 25, 12, tzinfo=timezone.utc)
    assert parse_since("1d12h", now=now) == datetime(2026, 11, 25, 0, tzinfo=timezone.utc)
    with pytest.raises(ConfigError, match="neither an ISO timestamp"):
        parse_since("yesterday")

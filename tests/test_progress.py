"""Progress lines: one line per message; on a terminal the current line shows the time spent so far."""
from __future__ import annotations

import io
import time

from yumai_audit.progress import LiveProgress


def test_progress_off_a_terminal_prints_plain_lines():
    out = io.StringIO()
    with LiveProgress(out, live=False) as progress:
        progress("scanning chatbot.conversations")
        progress("scanned chatbot.conversations in 0.1s")
    assert out.getvalue() == "  scanning chatbot.conversations\n  scanned chatbot.conversations in 0.1s\n"


def test_progress_on_a_terminal_ticks_the_time_spent_on_the_current_table():
    out = io.StringIO()
    progress = LiveProgress(out, live=True, interval=0.02)
    progress("scanning chatbot.conversations")
    deadline = time.monotonic() + 5
    while "\r" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    progress("scanned chatbot.conversations in 0.1s")
    progress.close()
    text = out.getvalue()
    assert text.startswith("  scanning chatbot.conversations")
    assert "\r  scanning chatbot.conversations 0s" in text
    assert text.endswith("\n  scanned chatbot.conversations in 0.1s\n")

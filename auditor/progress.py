"""Progress lines on the terminal: each message of the scan on a line of its own, and on a terminal
the time spent so far on the current one, updated every second ("scanning chatbot.conversations 12s")."""
from __future__ import annotations

import threading
import time
from typing import TextIO


class LiveProgress:
    """A `Progress` callable. Call `close()` when the scan is over (or use it as a context manager)."""

    def __init__(self, stream: TextIO, live: bool, interval: float = 1.0):
        self.stream, self.live, self.interval = stream, live, interval
        self._lock = threading.Lock()
        self._current: str | None = None
        self._since = 0.0
        self._stop = threading.Event()
        self._thread = None
        if live:
            self._thread = threading.Thread(target=self._tick, name="yumai-audit-progress", daemon=True)
            self._thread.start()

    def __call__(self, message: str) -> None:
        with self._lock:
            self._end_line()
            self._current, self._since = message, time.monotonic()
            self.stream.write(f"  {message}" + ("" if self.live else "\n"))
            self.stream.flush()

    def _end_line(self) -> None:
        if self.live and self._current is not None:
            self.stream.write("\n")
        self._current = None

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                if self._current is not None:
                    elapsed = time.monotonic() - self._since
                    if elapsed >= self.interval:
                        self.stream.write(f"\r  {self._current} {elapsed:.0f}s")
                        self.stream.flush()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self._end_line()
            self.stream.flush()

    def __enter__(self) -> LiveProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

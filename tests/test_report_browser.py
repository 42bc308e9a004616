"""The report in a real browser: headless Chromium loads it without console errors and shows the verdict.

Chromium is Debian's `chromium` package (`.ci/run` installs it). Console messages are read from
Chromium's own log (`--enable-logging=stderr --v=0` writes each as a `CONSOLE` line); the DOM after
the page ran is read with `--dump-dom`; a screenshot is saved in the test's temporary folder.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from report_fixtures import plan_dict, scan_result
from yumai_audit.reports.render import write_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed here (CI installs Debian's chromium)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
         "--enable-logging=stderr", "--v=0"]
CONSOLE = re.compile(r":CONSOLE[(:]\d+\)?\]?\s*(.*)")


def chromium(tmp_path: Path, page: Path, *action: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *action, page.as_uri()],
                          capture_output=True, text=True, timeout=120)


def console_messages(stderr: str) -> list[str]:
    return [m.group(1) for m in map(CONSOLE.search, stderr.splitlines()) if m]


def test_console_errors_are_detected(tmp_path):
    """The control: a page that logs an error and throws is caught by the same reading of the log."""
    page = tmp_path / "broken.html"
    page.write_text('<!doctype html><p id="v">x</p><script>console.error("boom"); notDefined();</script>')
    run = chromium(tmp_path, page, "--dump-dom")
    assert run.returncode == 0, run.stderr[-2000:]
    messages = console_messages(run.stderr)
    assert any("boom" in m for m in messages) and any("notDefined" in m for m in messages), run.stderr[-2000:]


def test_report_loads_without_console_errors_and_shows_verdict(tmp_path):
    page = write_html(scan_result(), tmp_path / "report.html", plan=plan_dict(), before=scan_result(blocked=False))
    run = chromium(tmp_path, page, "--dump-dom")
    assert run.returncode == 0, run.stderr[-2000:]
    assert console_messages(run.stderr) == []
    dom = run.stdout
    verdict = re.search(r'<section id="verdict".*?</section>', dom, re.S).group(0)
    text = " ".join(re.sub(r"<[^>]+>", " ", verdict).split())
    assert text.startswith("Verdict: Ready once fix runs Every error finding is repaired by a step of the plan")
    assert dom.count("<svg") == 3

    shot = tmp_path / "report.png"
    run = chromium(tmp_path, page, "--hide-scrollbars", "--window-size=1280,2400", f"--screenshot={shot}")
    assert run.returncode == 0, run.stderr[-2000:]
    assert console_messages(run.stderr) == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000

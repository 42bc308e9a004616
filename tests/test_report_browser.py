"""The report in a real browser: headless Chromium loads it without console errors and shows the verdict.

Chromium is Debian's `chromium` package (`.ci/run` installs it). Console messages are read from
Chromium's own log (`--enable-logging=stderr --v=0` writes each as a `CONSOLE` line); the DOM after
the page ran is read with `--dump-dom`; a screenshot is saved in the test's temporary folder.
"""
from __future__ import annotations

import html
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


def framed(tmp_path: Path, page: Path, width: int) -> Path:
    """A page that shows `page` in a `width` px wide frame and, once it is loaded, writes the frame's
    document width and the widest element outside a scrolling box into its own body. A headless
    window is at least 500 px wide whatever --window-size says: the frame is the phone's screen."""
    probe = (f"var d = this.contentDocument, W = {width}, wide = [];"
             "d.querySelectorAll('body *').forEach(function (e) {"
             "  var r = e.getBoundingClientRect();"
             "  if (r.right > d.documentElement.clientWidth + 1 && !e.closest('.scroll')) wide.push(e.tagName);"
             "});"
             "document.body.setAttribute('data-width', d.documentElement.scrollWidth + '/'"
             " + d.documentElement.clientWidth);"
             "document.body.setAttribute('data-wide', wide.slice(0, 5).join(' '));")
    frame = tmp_path / f"framed-{width}.html"
    frame.write_text(f'<!doctype html><body style="margin:0"><iframe style="width:{width}px;height:2400px;border:0" '
                     f'srcdoc="{html.escape(page.read_text(), quote=True)}" onload="{html.escape(probe)}"></iframe></body>')
    return frame


@pytest.mark.parametrize("width", [390, 1280])
def test_the_before_report_has_no_horizontal_scroll(tmp_path, width):
    """At a phone's 390 px and a laptop's 1280 px the page is no wider than the screen: long table
    names wrap, wide tables scroll inside their own box (document.documentElement.scrollWidth <= width)."""
    long_table = "chatbot.recommendations_log_archive_for_the_marketing_team"
    page = write_html(scan_result(table=long_table), tmp_path / "report.html", plan=plan_dict())
    run = chromium(tmp_path, framed(tmp_path, page, width), "--window-size=1400,2400", "--dump-dom")
    assert run.returncode == 0, run.stderr[-2000:]
    measured = re.search(r'data-width="(\d+)/(\d+)"', run.stdout)
    assert measured, run.stdout[-2000:]
    scroll_width, client_width = int(measured.group(1)), int(measured.group(2))
    assert client_width <= width and scroll_width <= client_width, (scroll_width, client_width,
                                                                    re.search(r'data-wide="([^"]*)"', run.stdout))
    shot = tmp_path / f"report-{width}.png"
    run = chromium(tmp_path, framed(tmp_path, page, width), "--hide-scrollbars", f"--window-size={width},2400",
                   f"--screenshot={shot}")
    assert run.returncode == 0 and shot.stat().st_size > 20_000

"""auditor/terminal.py: long lines wrapped; a shell command wrapped so that it is the same command."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from yumai_audit.terminal import message, shell_wrap, wrap

SQL = "DROP TABLE IF EXISTS " + ", ".join(f'"chatbot"."table_number_{i}"' for i in range(12)) + ";"
COMMAND = f"( echo '{SQL}'; printf '%s|' --file=- /tmp/some/backup-20261207T062835339246Z.dump ) | tr -s ' '"


def test_wrap_keeps_short_lines_and_indents_continuations():
    text = "short\n  " + " ".join(["word"] * 60)
    out = wrap(text, 50).splitlines()
    assert out[0] == "short" and out[1].startswith("  word") and all(line.startswith("      ") for line in out[2:])
    assert max(map(len, out)) <= 50 and " ".join(" ".join(out).split()) == " ".join(text.split())


def test_a_path_longer_than_a_line_is_not_broken():
    path = "/x" * 80
    assert "    " + path in wrap(f"Backup: {path} written", 40).splitlines()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_a_wrapped_command_runs_as_the_command():
    wrapped = shell_wrap(COMMAND, 60)
    assert len(wrapped.splitlines()) > 4 and max(map(len, wrapped.splitlines())) <= 60 + 2
    run = [subprocess.run(["bash", "-c", c], capture_output=True, text=True, check=True).stdout
           for c in (COMMAND, wrapped)]
    # the same words come out: the single-quoted SQL keeps a line break where a space was (same SQL)
    assert run[1].split() == run[0].split() and SQL.split()[-1] in run[1]


def test_a_message_ending_with_a_command_puts_the_command_on_lines_of_its_own():
    out = message("Restore: on a real server fix --apply prints the command, like: " + COMMAND, 80).splitlines()
    assert out[0].endswith("like:") and out[1].startswith("    ( echo 'DROP")
    assert max(map(len, out)) <= 80

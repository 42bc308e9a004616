"""Lines for a terminal: long messages wrapped at WIDTH columns, a shell command wrapped so that it still
runs when pasted (outside quotes a break is ` \\` and a newline; inside single quotes, a bare newline,
which the quoted text keeps; never inside double quotes). A word longer than a line (a path) is not
broken."""
from __future__ import annotations

import textwrap

WIDTH = 120
INDENT = "    "
# where a message ends and the command it shows begins
COMMAND_AFTER = ("Restore with: ", ", like: ")


def wrap(text: str, width: int = WIDTH, indent: str = INDENT) -> str:
    """Each line of `text` longer than `width` wrapped, its continuation lines indented by its own
    indentation plus `indent`."""
    out = []
    for line in text.split("\n"):
        if len(line) <= width:
            out.append(line)
            continue
        lead = line[:len(line) - len(line.lstrip())]
        out.append(textwrap.fill(line.strip(), width, initial_indent=lead, subsequent_indent=lead + indent,
                                 break_long_words=False, break_on_hyphens=False))
    return "\n".join(out)


def shell_wrap(command: str, width: int = WIDTH, indent: str = INDENT) -> str:
    """`command` on lines of at most `width` columns where it can be broken, still the same command."""
    pieces: list[tuple[str, str]] = []   # (text, the break after it: " \\\n" outside quotes, "\n" in '...')
    quote, start = "", 0
    for i, ch in enumerate(command):
        if quote:
            if ch == quote:
                quote = ""
            elif ch == " " and quote == "'":
                pieces.append((command[start:i], "'"))
                start = i + 1
        elif ch in "'\"":
            quote = ch
        elif ch == " ":
            pieces.append((command[start:i], " "))
            start = i + 1
    pieces.append((command[start:], ""))
    lines, line = [], ""
    for i, (text, _after) in enumerate(pieces):
        joint = pieces[i - 1][1] if i else ""
        if line and len(line) + 1 + len(text) + 2 > width:
            lines.append(line + (" \\" if joint == " " else ""))
            line = (indent if joint == " " else "") + text
        else:
            line = f"{line} {text}" if line else text
    lines.append(line)
    return "\n".join(lines)


def message(text: str, width: int = WIDTH) -> str:
    """A progress or result line as the terminal shows it: a command it ends with, shell-wrapped on
    lines of its own; the rest wrapped."""
    for marker in COMMAND_AFTER:
        head, found, command = text.partition(marker)
        if found and len(text) > width:
            return wrap(head + found.rstrip(), width) + "\n" + INDENT + shell_wrap(command, width - len(INDENT)
                                                                                  ).replace("\n", "\n" + INDENT)
    return wrap(text, width)

"""The migration's operations, one module each: its step builder, its guard, the linter rules its
statements break on purpose (`LINT`), the preflight refusals it adds (`refusals`) and the checks it
repairs (`REPAIRS`, named through the check classes), written together.

`Deliberate` (below) is how an operation declares a rule it breaks; fix/lint.py attaches the entries
to the steps, and the engine's script writer puts each reason above its statement.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ...engine.steps import Step
from ...operations import Operation


def _always(_step: Step) -> bool:
    return True


@dataclass(frozen=True)
class Deliberate:
    """Linter rules that the statements of `operation`'s steps matching `statement` break on purpose."""

    rules: tuple[str, ...]
    operation: Operation
    statement: re.Pattern[str]          # matched against the rendered statement
    reason: str
    applies: Callable[[Step], bool] = _always

"""The migration's operations, one module each: its step builder, its guard, the linter rules its
statements break on purpose (`LINT`), the preflight refusals it adds (`refusals`) and the checks it
repairs (`REPAIRS`, named through the check classes), written together.

`Deliberate` (below) is how an operation declares a rule it breaks; fix/lint.py attaches the entries
to the steps, and the engine's script writer puts each reason above its statement. `Needs` is what a
step asks the preflight to check before the first change (an index name it claims, a table it alters
or references, rows it takes out or sets NULL, a column whose type it changes): an operation's
builder makes a `Declared` step that carries them, and fix/preflight.py gathers them from the plan's
steps (`gathered`).
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ...catalog import QualifiedName
from ...engine.steps import Step
from ...operations import Operation
from ..cascade import Removal
from ..ddl import Built
from ..shares import NullOut


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


@dataclass(frozen=True)
class IndexClaim:
    """An index name a step builds: free, or the name of an index on the same table and column."""

    schema: str
    index: str
    table: str
    column: str


@dataclass(frozen=True)
class Needs:
    """What a step asks the preflight to check before the first change."""

    claims: tuple[IndexClaim, ...] = ()          # index names it builds (fix/ops/index.py `refusals`)
    altered: tuple[QualifiedName, ...] = ()      # tables it alters: their owner (and their partitions')
    referenced: tuple[QualifiedName, ...] = ()   # tables its foreign keys reference: REFERENCES
    removals: tuple[Removal, ...] = ()           # rows it deletes, with what its foreign keys reach
    nulled: tuple[NullOut, ...] = ()             # user ids it sets NULL (fix/shares.py)
    retyped: tuple[tuple[QualifiedName, str], ...] = ()   # (table, column) whose type it changes

    def __add__(self, other: Needs) -> Needs:
        return Needs(*(getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)))


@dataclass(frozen=True)
class Declared(Step):
    """A step and what it needs the preflight to check; the engine runs it as any step."""

    needs: Needs = field(default_factory=Needs, kw_only=True, compare=False, repr=False)


def needs_of(step: Step) -> Needs:
    return step.needs if isinstance(step, Declared) else Needs()


def declaring(step: Step, needs: Needs) -> Declared:
    """`step` carrying `needs` too (besides what it declares already)."""
    own = {f.name: getattr(step, f.name) for f in dataclasses.fields(Step) if f.init}
    return Declared(**own, needs=needs_of(step) + needs)


def gathered(steps: Iterable[Step]) -> Needs:
    """Everything the steps need, in their order: each table, removal and null-out once."""
    total = sum((needs_of(s) for s in steps), Needs())
    removals: dict[tuple, Removal] = {}
    for r in total.removals:
        removals.setdefault((r.graph.root, r.label), r)
    nulled: dict[tuple, NullOut] = {}
    for n in total.nulled:
        nulled.setdefault((n.table, n.label), n)
    return Needs(total.claims, tuple(dict.fromkeys(total.altered)), tuple(dict.fromkeys(total.referenced)),
                 tuple(removals.values()), tuple(nulled.values()), tuple(dict.fromkeys(total.retyped)))


def declared(built: Built, needs: Needs) -> Built:
    """What `built` made, each step carrying `needs` too."""
    return Built([declaring(s, needs) for s in built.steps], list(built.last))

"""The shape of a check: a declaration of what to measure and how a measurement becomes findings.

A check never connects, executes or prints. It is of a kind, and each kind offers a handful of hooks:
- `TableCheck`: measured in the one pass the scan makes over each key table it applies to:
  `measures(ctx, target)`, `judge(ctx, target, values)`, `sample(ctx, target, finding)`;
- `CatalogCheck`: judged from the catalog alone: `judge_catalog(ctx)`;
- `ProbeCheck`: over any table, with queries of its own: `probes(ctx)`, `judge_probes(ctx, results)`.
Every check declares `targets(ctx)` (none: skipped, with `skip_reason`); a check may be of two kinds
(`unconstrained_fk` judges the catalog and probes the data).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from psycopg import sql

from yumai_audit.context import AuditContext, KeyTable
from yumai_audit.model import Finding, Severity

USES_KNOWN = "known"
#: The measure reads `kn.in_master` only (TRUE, or NULL when the master lacks the key): the row's key is
#: looked up in the master alone, a hash join the server can run in parallel, without the set of sessions.
USES_MASTER = "master"
USES_USERS = "users"
#: `Measure.over` / `Sample.over`: over the target's rows (the default) or over the set of known
#: sessions `kn` (session_id, in_master, in_source), which the scan builds once (scan/passes.py).
OVER_TABLE = "table"
OVER_SESSIONS = "sessions"
#: Joins of measures over the set: the set also counts the target's rows per session
#: (`predicates.session_rows`), or carries min_user / max_user over every table with a user column.
USES_SESSION_ROWS = "session rows"
USES_SESSION_USERS = "session users"


@dataclass(frozen=True)
class Measure:
    expression: sql.Composable
    joins: frozenset[str] = frozenset()
    over: str = OVER_TABLE


@dataclass(frozen=True)
class Sample:
    """`SELECT [DISTINCT] value FROM <target pass> WHERE predicate ORDER BY value LIMIT n`."""

    value: sql.Composable
    predicate: sql.Composable
    joins: frozenset[str] = frozenset()
    distinct: bool = True
    of: str = "session id"          # what the values are: "session id" or "primary key"
    over: str = OVER_TABLE          # OVER_SESSIONS: one row per session already, use distinct=False


def count_where(predicate: sql.Composable, *joins: str) -> Measure:
    return Measure(sql.SQL("count(*) FILTER (WHERE {})").format(predicate), frozenset(joins))


def count_sessions_where(predicate: sql.Composable, *joins: str) -> Measure:
    """Sessions (one row each in the set `kn`) that satisfy the predicate: a count of distinct keys
    that needs no sort, since the set is already grouped by session."""
    return Measure(sql.SQL("count(*) FILTER (WHERE {})").format(predicate), frozenset({USES_KNOWN, *joins}),
                   OVER_SESSIONS)


def sum_sessions_where(value: sql.Composable, predicate: sql.Composable, *joins: str) -> Measure:
    """The sum of a per-session count over the sessions that satisfy the predicate."""
    return Measure(sql.SQL("coalesce(sum({}) FILTER (WHERE {}), 0)").format(value, predicate),
                   frozenset({USES_KNOWN, *joins}), OVER_SESSIONS)


def count_distinct_where(value: sql.Composable, predicate: sql.Composable, *joins: str) -> Measure:
    return Measure(sql.SQL("count(DISTINCT {}) FILTER (WHERE {})").format(value, predicate), frozenset(joins))


@dataclass(frozen=True)
class Probe:
    """One query of a schema-wide check. `key` is stable and unique per question asked: two checks
    that declare the same key share one execution. `label` names what is probed in progress and errors."""

    key: str
    label: str
    query: sql.Composable


class Check:
    """What every check declares: its id, severity, one-line description (the docstring is its user
    documentation), the tables it applies to (none: the check is skipped, with `skip_reason`). A check
    is of one or more kinds, each a small set of hooks: `TableCheck`, `CatalogCheck`, `ProbeCheck`."""

    id: ClassVar[str]
    severity: ClassVar[Severity]
    description: ClassVar[str]
    skip_reason: ClassVar[str] = "no table it applies to"

    def targets(self, ctx: AuditContext) -> list:
        """What the check applies to (key tables for a `TableCheck`, any tables otherwise)."""
        return list(ctx.key_tables)

    @classmethod
    def documentation(cls) -> str:
        return (cls.__doc__ or "").strip()

    def finding(self, target: KeyTable | None, *, table: str | None = None, column: str | None = None,
                message: str, **kw) -> Finding:
        if not table and target is None:
            raise ValueError(f"{self.id}: a finding names its table or its target")
        return Finding(check=self.id, severity=kw.pop("severity", self.severity),
                       table=table or str(target.name if target is not None else ""),
                       column=column if column is not None else
                       (target.key.name if target else None), message=message, **kw)


class TableCheck(Check):
    """Measured per key table, in the one pass the scan makes over it: `measures` (aggregates; aliases
    `t`, `kn` for the known-session join, `u` for the users join), `judge` (findings from the values),
    `sample` (which keys to show; it must not depend on the finding's numbers)."""

    def targets(self, ctx: AuditContext) -> list[KeyTable]:
        return list(ctx.key_tables)

    def measures(self, ctx: AuditContext, target: KeyTable) -> dict[str, Measure]:
        return {}

    def judge(self, ctx: AuditContext, target: KeyTable, values: dict) -> list[Finding]:
        return []

    def sample(self, ctx: AuditContext, target: KeyTable, finding: Finding | None) -> Sample | None:
        return None

    # incremental scans (watch): the same question over some of the target's rows
    def row_measures(self, ctx: AuditContext, target: KeyTable) -> dict[str, Measure] | None:
        """The measures over the target's rows alone, with `kn` looked up per row: the declared
        measures when they are over the table; None when the check has no row-wise form."""
        declared = self.measures(ctx, target)
        return declared if all(m.over == OVER_TABLE for m in declared.values()) else None

    def row_sample(self, ctx: AuditContext, target: KeyTable) -> Sample | None:
        sample = self.sample(ctx, target, None)
        return sample if sample is None or sample.over == OVER_TABLE else None


class CatalogCheck(Check):
    """Judged from the catalog snapshot alone, no query: `judge_catalog`."""

    def judge_catalog(self, ctx: AuditContext) -> list[Finding]:
        return []


class ProbeCheck(Check):
    """Over any table (not only key tables): `probes` (named queries the scan runs once each; a probe
    two checks declare runs once) and `judge_probes` (all their results at once)."""

    def probes(self, ctx: AuditContext) -> list[Probe]:
        return []

    def judge_probes(self, ctx: AuditContext, results: dict[str, list[tuple]]) -> list[Finding]:
        """`results` maps each probe key that ran to its rows (a probe that failed is absent)."""
        return []


def probes_of(check: Check, ctx: AuditContext) -> list[Probe]:
    return check.probes(ctx) if isinstance(check, ProbeCheck) else []


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def verb(n: int, many: str, one: str) -> str:
    """The verb that agrees with `n` things: verb(1, "have", "has") is "has"."""
    return one if n == 1 else many

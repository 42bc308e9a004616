"""The shape of a check: a declaration of what to measure and how a measurement becomes findings.

A check never connects, executes or prints. It offers:
- `targets(ctx)`: the key tables it applies to (an empty list: the check is skipped, with `skip_reason`);
- `measures(ctx, target)`: aggregate expressions evaluated in the one pass the runner makes over
  the target (aliases `t`, `kn` for the known-session join, `u` for the users join);
- `judge(ctx, target, values)`: findings from the measured values (no finding: the check passed);
- `sample(ctx, target, finding)`: which values to show as the finding's sample (keys only); it must
  not depend on the finding's numbers (the runner may ask with `finding=None` to fetch samples
  in the same pass);
Database-wide checks override `query(ctx)` and `judge_rows(ctx, rows)` instead; catalog checks
override `judge_catalog(ctx)`. Schema-wide checks over any table (not only key tables) declare
`probes(ctx)`: named queries the runner executes once each (a probe shared by two checks runs
once), and judge all their results at once in `judge_probes(ctx, results)`.
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
#: sessions `kn` (session_id, in_master, in_source), which the runner builds once per scan.
OVER_TABLE = "table"
OVER_SESSIONS = "sessions"
#: Joins of measures over the set: the set also counts the target's rows per session
#: (`passes.session_rows`), or carries min_user / max_user over every table with a user column.
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
    id: ClassVar[str]
    severity: ClassVar[Severity]
    description: ClassVar[str]
    #: "table" checks are measured per target; "database" checks run their own query; "catalog" checks
    #: judge the catalog alone.
    scope: ClassVar[str] = "table"
    skip_reason: ClassVar[str] = "no table it applies to"

    def targets(self, ctx: AuditContext) -> list[KeyTable]:
        return list(ctx.key_tables)

    def measures(self, ctx: AuditContext, target: KeyTable) -> dict[str, Measure]:
        return {}

    def judge(self, ctx: AuditContext, target: KeyTable, values: dict) -> list[Finding]:
        return []

    def sample(self, ctx: AuditContext, target: KeyTable, finding: Finding) -> Sample | None:
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

    # catalog checks
    def judge_catalog(self, ctx: AuditContext) -> list[Finding]:
        return []

    # database-wide checks
    def query(self, ctx: AuditContext) -> sql.Composable | None:
        return None

    def judge_rows(self, ctx: AuditContext, rows: list[tuple]) -> list[Finding]:
        return []

    # schema-wide checks (any table): their own queries, judged together
    def probes(self, ctx: AuditContext) -> list[Probe]:
        return []

    def judge_probes(self, ctx: AuditContext, results: dict[str, list[tuple]]) -> list[Finding]:
        """`results` maps each probe key that ran to its rows (a probe that failed is absent)."""
        return []

    @classmethod
    def documentation(cls) -> str:
        return (cls.__doc__ or "").strip()

    def finding(self, target: KeyTable | None, *, table: str | None = None, column: str | None = None,
                message: str, **kw) -> Finding:
        return Finding(check=self.id, severity=kw.pop("severity", self.severity),
                       table=table or str(target.name), column=column if column is not None else
                       (target.key.name if target else None), message=message, **kw)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")

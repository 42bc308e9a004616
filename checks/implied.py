"""Implied foreign keys: columns that look like references, have no constraint, and are confirmed by data.

Shared by `unconstrained_fk` (confirmed: one parent holds at least 99% of the column's distinct
values) and `fk_candidate` (the rest). Name rules, compared case-insensitively:
- `<x>_id` refers to a table named `<x>` or its plural (`s`, `es`, `y` -> `ies`) whose primary key is
  the single column `id`;
- `<anything>_<pk>` or `<pk>` refers to the one table whose single-column primary key is named
  `<pk>` (not for `id`, which nearly every table has: that case is the rule above).
The types must be comparable (integers with integers, text with text, or the same type).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from psycopg import sql

from yumai_audit.catalog import Column, Table
from yumai_audit.config import split_dotted
from yumai_audit.context import AuditContext

from .base import Probe
from .catalog_targets import wanted_references
from .predicates import table_ref

THRESHOLD_PERCENT = 99
_INTEGERS = {"int2", "int4", "int8"}
_TEXTS = {"text", "varchar", "bpchar"}
_KEY_TYPES = _INTEGERS | _TEXTS | {"uuid", "numeric", "citext"}


def comparable(a: Column, b: Column) -> bool:
    if a.typname not in _KEY_TYPES or b.typname not in _KEY_TYPES:
        return False
    return a.typname == b.typname or {a.typname, b.typname} <= _INTEGERS or {a.typname, b.typname} <= _TEXTS


def plurals(word: str) -> set[str]:
    out = {word, word + "s", word + "es"}
    if word.endswith("y") and len(word) > 1:
        out.add(word[:-1] + "ies")
    return out


@dataclass(frozen=True)
class Candidate:
    table: Table
    column: Column
    parent: Table
    rule: str                      # "name" (<x>_id) or "primary key" (<pk>, <anything>_<pk>)

    @property
    def parent_key(self) -> str:
        return self.parent.primary_key[0]

    @property
    def references(self) -> str:
        return f"{self.parent.name}.{self.parent_key}"

    @property
    def key(self) -> str:
        return "implied:" + json.dumps([str(self.table.name), self.column.name, str(self.parent.name), self.parent_key])

    @property
    def is_own_primary_key(self) -> bool:
        return self.table.primary_key == (self.column.name,)


def _ignored(ctx: AuditContext) -> tuple[set, set]:
    tables, columns = set(), set()
    for entry in ctx.config.ignore:
        parts = tuple(split_dotted(entry, "ignore"))
        (tables if len(parts) == 2 else columns).add(parts)
    return tables, columns


def candidates(ctx: AuditContext) -> list[list[Candidate]]:
    """Per unconstrained column that looks like a reference: its candidate parents (one or more)."""
    tables = list(ctx.catalog.tables.values())
    by_name: dict[str, list[Table]] = {}
    by_pk: dict[str, list[Table]] = {}
    for t in tables:
        if len(t.primary_key) == 1:
            by_name.setdefault(t.name.name.lower(), []).append(t)
            by_pk.setdefault(t.primary_key[0].lower(), []).append(t)
    unique_pk = {pk: ts[0] for pk, ts in by_pk.items() if len(ts) == 1 and pk != "id"}
    reported_elsewhere = {(ref.target.name, ref.column) for ref in wanted_references(ctx)}
    ignored_tables, ignored_columns = _ignored(ctx)
    out = []
    for t in tables:
        if (t.name.schema, t.name.name) in ignored_tables:
            continue
        constrained = {c for fk in t.foreign_keys + t.partition_foreign_keys for c in fk.columns}
        for column in t.columns.values():
            name = column.name.lower()
            if (column.name in constrained or (t.name, column.name) in reported_elsewhere
                    or (t.name.schema, t.name.name, column.name) in ignored_columns):
                continue
            found: list[tuple[Table, str]] = []
            if name.endswith("_id") and len(name) > 3:
                for word in sorted(plurals(name[:-3])):
                    found += [(p, "name") for p in by_name.get(word, []) if p.primary_key == ("id",)]
            for pk, parent in unique_pk.items():
                if name == pk or name.endswith("_" + pk):
                    found.append((parent, "primary key"))
            group, seen = [], set()
            for parent, rule in sorted(found, key=lambda f: f[0].name):
                if parent.name in seen or (parent is t and t.primary_key == (column.name,)):
                    continue
                if comparable(column, parent.columns[parent.primary_key[0]]):
                    seen.add(parent.name)
                    group.append(Candidate(t, column, parent, rule))
            if group:
                out.append(group)
    return out


def share_query(c: Candidate, sample_size: int) -> sql.Composable:
    """The column's distinct non-NULL values, how many of them the parent lacks, and a sample of those."""
    child_ref = sql.SQL("ONLY {}" if not c.table.is_partitioned else "{}").format(table_ref(c.table.name))
    parent_ref = sql.SQL("ONLY {}" if not c.parent.is_partitioned else "{}").format(table_ref(c.parent.name))
    return sql.SQL(
        "WITH v AS (SELECT DISTINCT {col} AS k FROM {child} t WHERE {col} IS NOT NULL), "
        "m AS (SELECT v.k FROM v WHERE NOT EXISTS (SELECT 1 FROM {parent} p WHERE {pk} = v.k)) "
        "SELECT (SELECT count(*) FROM v), (SELECT count(*) FROM m), "
        "(SELECT array_agg(s.k::text ORDER BY s.k) FROM (SELECT k FROM m ORDER BY k LIMIT {n}) s)"
    ).format(col=sql.Identifier("t", c.column.name), child=child_ref, parent=parent_ref,
             pk=sql.Identifier("p", c.parent_key), n=sql.Literal(sample_size))


def probes(ctx: AuditContext) -> list[Probe]:
    return [Probe(c.key, f"{c.table.name}.{c.column.name} -> {c.references}", share_query(c, ctx.config.sample_size))
            for group in candidates(ctx) for c in group]


@dataclass(frozen=True)
class Measured:
    candidate: Candidate
    values: int
    missing: int
    sample: tuple[str, ...]

    @property
    def share(self) -> float:
        return (self.values - self.missing) / self.values

    @property
    def confirmed(self) -> bool:
        return (self.values - self.missing) * 100 >= THRESHOLD_PERCENT * self.values

    def as_dict(self) -> dict:
        return {"references": self.candidate.references, "share": round(self.share, 4),
                "values": self.values, "missing": self.missing}


@dataclass(frozen=True)
class Verdict:
    """One column and its measured candidate parents, best first."""

    measured: tuple[Measured, ...]

    @property
    def best(self) -> Measured:
        return self.measured[0]

    @property
    def confirmed(self) -> list[Measured]:
        return [m for m in self.measured if m.confirmed]

    @property
    def is_unconstrained_fk(self) -> bool:
        """Exactly one parent confirmed, and the column is not its table's own primary key."""
        return len(self.confirmed) == 1 and not self.best.candidate.is_own_primary_key

    def details(self) -> dict:
        best = self.best
        out = {"implied": True, "rule": best.candidate.rule, **best.as_dict(), "sample_of": "missing value"}
        if len(self.measured) > 1:
            out["alternatives"] = [m.as_dict() for m in self.measured]
        return out

    def describe(self) -> str:
        return ", ".join(f"{m.candidate.references} ({m.share:.1%})" for m in self.measured)


def verdicts(ctx: AuditContext, results: dict[str, list[tuple]]) -> list[Verdict]:
    """Columns with at least one measured candidate (a column with no non-NULL value proves nothing)."""
    out = []
    for group in candidates(ctx):
        measured = []
        for c in group:
            if c.key not in results:
                continue
            values, missing, sample = results[c.key][0]
            if values:
                measured.append(Measured(c, int(values), int(missing), tuple(sample or ())))
        if measured:
            measured.sort(key=lambda m: (-m.share, m.candidate.parent.name))
            out.append(Verdict(tuple(measured)))
    return out

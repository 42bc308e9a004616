"""Implied foreign keys: columns that reference a single-column key but have no constraint.

Shared by `unconstrained_fk` (confirmed) and `fk_candidate` (the rest). Name rules, compared
case-insensitively on the name's words (split at `_` and camelCase):
- `<x>_id` refers to a table named `<x>` or its plural (`s`, `es`, `y` -> `ies`) whose primary key is
  the single column `id`;
- `<anything>_<pk>` or `<pk>` refers to the one table whose single-column primary key is named
  `<pk>` (not for `id`, which nearly every table has: that case is the rule above);
- only where those find nothing: a self-reference word (`SELF_WORDS`, with or without `id`) refers
  to its own table's key, and a table's name (`customer`, `customer_id`) to that table's key.
A named column is confirmed when one parent holds at least 99% of its distinct values.
The types must be comparable (integers with integers, text with text, or the same type).

Every other column (and the last two rules' columns when the name's table does not hold the values)
is tested against every comparable single-column key (`Inference`): confirmed when all its values
are in exactly one key and that is unlikely by chance (`Evidence.log_chance`), or when names break
the tie, or when the rows it points at in exactly one of those keys, and not the others, carry a
word of its name (`Evidence.role_in`); the README's "Implied foreign keys" states the rule and its
limits.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace

from psycopg import sql

from yumai_audit.catalog import Column, Table, split_dotted
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
    rule: str                      # "name", "primary key", "self", "table name"; "data", "name prefix" (inferred)
    parent_column: str = ""        # the key referenced, when not the parent's primary key (inferred only)

    @property
    def parent_key(self) -> str:
        return self.parent_column or self.parent.primary_key[0]

    @property
    def references(self) -> str:
        return f"{self.parent.name}.{self.parent_key}"

    @property
    def key(self) -> str:
        return "implied:" + json.dumps([str(self.table.name), self.column.name, str(self.parent.name), self.parent_key])

    @property
    def is_own_primary_key(self) -> bool:
        return self.table.primary_key == (self.column.name,)


def _ignored(ctx: AuditContext) -> tuple[set[tuple[str, ...]], set[tuple[str, ...]]]:
    tables: set[tuple[str, ...]] = set()
    columns: set[tuple[str, ...]] = set()
    for entry in ctx.config.ignore:
        parts = tuple(split_dotted(entry, "ignore"))
        (tables if len(parts) == 2 else columns).add(parts)
    return tables, columns


def words(name: str) -> list[str]:
    """A name's words, lower case: `SupportRepId` -> support, rep, id; `ship_via` -> ship, via."""
    return [w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", name)]


def _forms(table: Table) -> set[str]:
    """A table's name, run together, and its singulars: `media_types` -> mediatypes, mediatype."""
    name = "".join(words(table.name.name))
    out = {name}
    if name.endswith("ies"):
        out.add(name[:-3] + "y")
    if name.endswith("es"):
        out.add(name[:-2])
    if name.endswith("s"):
        out.add(name[:-1])
    return out


def _stem(column: str) -> list[str]:
    """The words before a trailing `id`: `manager_id` -> manager; `ReportsTo` -> reports, to."""
    ws = words(column)
    return ws[:-1] if len(ws) > 1 and ws[-1] == "id" else ws


def key_columns(t: Table) -> list[str]:
    """The single-column keys a foreign key may reference: the primary key, valid non-partial unique indexes."""
    out = [t.primary_key[0]] if len(t.primary_key) == 1 else []
    for ix in t.indexes:
        if (ix.unique and ix.valid and not ix.partial and len(ix.columns) == 1 and ix.columns[0]
                and ix.columns[0] not in out):
            out.append(ix.columns[0])
    return out


def _name_rules(t: Table, column: Column, tables: list[Table], by_name, unique_pk) -> list[tuple[Table, str]]:
    name = column.name.lower()
    found: list[tuple[Table, str]] = []
    if name.endswith("_id") and len(name) > 3:
        for word in sorted(plurals(name[:-3])):
            found += [(p, "name") for p in by_name.get(word, []) if p.primary_key == ("id",)]
    for pk, parent in unique_pk.items():
        if name == pk or name.endswith("_" + pk):
            found.append((parent, "primary key"))
    if found:
        return found
    # only where the rules above find nothing (their cases are unchanged)
    stem = _stem(column.name)
    if "_".join(stem) in SELF_WORDS and len(t.primary_key) == 1:
        return [(t, "self")]
    joined = "".join(stem)
    return [(p, "table name") for p in tables if len(p.primary_key) == 1 and joined in _forms(p)]


def candidates(ctx: AuditContext) -> list[list[Candidate]]:
    """Per unconstrained column that looks like a reference by its name: its candidate parents (one or more)."""
    return _columns(ctx)[0]


def _columns(ctx: AuditContext) -> tuple[list[list[Candidate]], list[tuple[Table, Column]]]:
    """The columns named like references (with their parents), and the other unconstrained columns."""
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
    named, others = [], []
    for t in tables:
        if (t.name.schema, t.name.name) in ignored_tables:
            continue
        constrained = {c for fk in t.foreign_keys + t.partition_foreign_keys for c in fk.columns}
        for column in t.columns.values():
            if (column.name in constrained or (t.name, column.name) in reported_elsewhere
                    or (t.name.schema, t.name.name, column.name) in ignored_columns):
                continue
            group, seen = [], set()
            for parent, rule in sorted(_name_rules(t, column, tables, by_name, unique_pk), key=lambda f: f[0].name):
                if parent.name in seen or (parent is t and t.primary_key == (column.name,)):
                    continue
                if comparable(column, parent.columns[parent.primary_key[0]]):
                    seen.add(parent.name)
                    group.append(Candidate(t, column, parent, rule))
            if group:
                named.append(group)
            if not group or all(c.rule in SOFT_RULES for c in group):
                others.append((t, column))
    return named, others


def _ref(t: Table) -> sql.Composed:
    return sql.SQL("ONLY {}" if not t.is_partitioned else "{}").format(table_ref(t.name))


def share_query(c: Candidate, sample_size: int) -> sql.Composed:
    """The column's distinct non-NULL values, how many of them the parent lacks, a sample of those,
    and whether the table has a row at all."""
    return sql.SQL(
        "WITH v AS (SELECT DISTINCT {col} AS k FROM {child} t WHERE {col} IS NOT NULL), "
        "m AS (SELECT v.k FROM v WHERE NOT EXISTS (SELECT 1 FROM {parent} p WHERE {pk} = v.k)) "
        "SELECT (SELECT count(*) FROM v), (SELECT count(*) FROM m), "
        "(SELECT array_agg(s.k::text ORDER BY s.k) FROM (SELECT k FROM m ORDER BY k LIMIT {n}) s), "
        "EXISTS (SELECT 1 FROM {child})"
    ).format(col=sql.Identifier("t", c.column.name), child=_ref(c.table), parent=_ref(c.parent),
             pk=sql.Identifier("p", c.parent_key), n=sql.Literal(sample_size))


def probes(ctx: AuditContext) -> list[Probe]:
    named, others = _columns(ctx)
    out = [Probe(c.key, f"{c.table.name}.{c.column.name} -> {c.references}", share_query(c, ctx.config.sample_size))
           for group in named for c in group]
    return out + [Probe(i.key, f"{i.table.name}.{i.column.name} -> keys of {len(i.parents)} tables", i.query())
                  for i in inferences(ctx, others)]


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
class NamedReference:
    """One column named like a reference and its measured candidate parents, best first."""

    measured: tuple[Measured, ...]
    empty: str = ""              # why nothing in the data can confirm it (no non-NULL value, no row)

    @property
    def best(self) -> Measured:
        return self.measured[0]

    @property
    def confirmed(self) -> list[Measured]:
        return [m for m in self.measured if not self.empty and m.confirmed]

    @property
    def is_unconstrained_fk(self) -> bool:
        """Exactly one parent confirmed, and the column is not its table's own primary key."""
        return len(self.confirmed) == 1 and not self.best.candidate.is_own_primary_key

    def details(self) -> dict:
        best = self.best
        if self.empty:
            out = {"implied": True, "rule": best.candidate.rule, "references": best.candidate.references,
                   "values": 0, "reason": self.empty}
            if len(self.measured) > 1:
                out["alternatives"] = [m.candidate.references for m in self.measured]
            return out
        out = {"implied": True, "rule": best.candidate.rule, **best.as_dict(), "sample_of": "missing value"}
        if len(self.measured) > 1:
            out["alternatives"] = [m.as_dict() for m in self.measured]
        return out

    def describe(self) -> str:
        if self.empty:
            return ", ".join(m.candidate.references for m in self.measured)
        return ", ".join(f"{m.candidate.references} ({m.share:.1%})" for m in self.measured)

    def why_not(self) -> str:
        """Why the column is a candidate only (the message of `fk_candidate`)."""
        best, c = self.best, self.best.candidate
        if self.empty:
            return f"{self.empty}: nothing in the data can confirm it (candidates: {self.describe()})"
        if len(self.confirmed) > 1:
            return f"could reference {len(self.confirmed)} tables: {self.describe()}"
        if self.confirmed:
            return (f"is its table's primary key; {best.share:.1%} of its {best.values} distinct values "
                    f"are in {c.references}")
        why = f"only {best.share:.1%} of its {best.values} distinct values are in {c.references}"
        return why + (f" (candidates: {self.describe()})" if len(self.measured) > 1 else "")


def verdicts(ctx: AuditContext, results: dict[str, list[tuple]]) -> list:
    """Every column with a measured candidate: a `NamedReference` per column named like a reference (one
    with no non-NULL value is a candidate with the reason), an `Inferred` per other column whose
    values some key holds."""
    named, others = _columns(ctx)
    out: list = []
    for group in named:
        measured, rows = [], []
        for c in group:
            if c.key in results:
                values, missing, sample, has_rows = results[c.key][0]
                measured.append(Measured(c, int(values), int(missing), tuple(sample or ())))
                rows.append(has_rows)
        if not measured:
            continue
        if all(m.values == 0 for m in measured):
            reason = "has no non-NULL value" if rows[0] else "its table has no row"
            out.append(NamedReference(tuple(sorted(measured, key=lambda m: m.candidate.parent.name)), reason))
            continue
        measured = [m for m in measured if m.values]
        measured.sort(key=lambda m: (-m.share, m.candidate.parent.name))
        out.append(NamedReference(tuple(measured)))
    by_column = {(v.best.candidate.table.name, v.best.candidate.column.name): i for i, v in enumerate(out)}
    for inference in inferences(ctx, others):
        if inference.key in results:
            judged = inference.judge(results[inference.key][0])
            where = by_column.get((inference.table.name, inference.column.name))
            if judged is None or (where is not None
                                  and (out[where].is_unconstrained_fk or not judged.is_unconstrained_fk)):
                continue     # a softer name rule's verdict stands unless the data confirm another parent
            if where is None:
                out.append(judged)
            else:
                out[where] = judged
    return out


# ---------------------------------------------------------------------------------------------
# Inferred from the data: columns no name rule connects to a table, tested against every key that
# could hold their values.

HEAD_ROWS = 10_000         # the first rows read to rule a parent out before the full pass
MIN_DISTINCT = {"int": 3, "text": 3, "uuid": 1}
CHANCE = 1e-6              # containment this likely by chance is no evidence
CONSISTENT = 1e-3          # values this concentrated in a corner of the parent's keys: a name alone won't do
HEAD_CHANCE = 0.05         # the head's containment at least this likely by chance: no full pass
ROLE_VALUES = 1000         # the rows pointed at are searched for the column's role up to this many distinct values
SOFT_RULES = {"self", "table name"}   # name rules whose column is also tested against every key
SELF_WORDS = {"parent", "manager", "reports_to", "supervisor", "superior", "boss", "mentor", "predecessor",
              "successor", "replaced_by", "replaces", "original"}


def _kind(column: Column) -> str | None:
    if column.typname in _INTEGERS:
        return "int"
    if column.typname in _TEXTS:
        return "text"
    return "uuid" if column.typname == "uuid" else None


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


@dataclass(frozen=True)
class Parent:
    table: Table
    column: str
    named: bool          # a word of the column's name begins the table's name (`ship_via` -> shippers)
    texts: tuple[str, ...] = ()    # its text columns, where the rows pointed at may name the column's role


@dataclass(frozen=True)
class Evidence:
    """What the full pass measured for one parent key (only for a parent the head did not rule out)."""

    candidate: Candidate
    named: bool
    kind: str
    values: int                  # the column's distinct non-NULL values
    low: int | None
    high: int | None
    keys: int | None             # the parent's keys (integers)
    in_range: int | None         # of them, between the column's smallest and largest value
    from_one: int | None         # of them, between min(1, smallest) and the largest value
    # the parent's text column where every row pointed at, and not every other row, has a word of the
    # column's name (`support_rep_id` -> Title 'Sales Support Agent')
    role_in: str | None = None

    @property
    def log_chance(self) -> float | None:
        """ln P(d distinct values drawn from the column's own range, extended down to 1, all fall in the
        parent's keys); None for text (no range to draw from), -inf for uuid."""
        if self.kind == "uuid":
            return -math.inf
        if self.kind != "int":
            return None
        # an integer key's evidence carries its range and counts (`Pass.evidence`)
        assert self.high is not None and self.low is not None and self.from_one is not None
        width = self.high - min(self.low, 1) + 1
        return _log_choose(self.from_one, self.values) - _log_choose(width, self.values)

    @property
    def log_consistency(self) -> float:
        """ln P(d distinct keys drawn from the parent all fall between the column's smallest and largest
        value): small when the values crowd a corner of a much larger key set (1..12 in ids 1..40)."""
        if self.kind != "int":
            return 0.0
        assert self.in_range is not None and self.keys is not None
        return _log_choose(self.in_range, self.values) - _log_choose(self.keys, self.values)

    @property
    def consistent(self) -> bool:
        return self.log_consistency >= math.log(CONSISTENT)

    @property
    def unlikely_by_chance(self) -> bool:
        chance = self.log_chance
        return self.values >= MIN_DISTINCT[self.kind] and (chance is None or chance <= math.log(CHANCE))

    def as_dict(self) -> dict:
        out = {"references": self.candidate.references, "share": 1.0, "values": self.values, "missing": 0}
        chance = self.log_chance
        if chance is not None:
            out["chance"] = float(f"{math.exp(chance):.3g}")
        if self.kind == "int":
            out.update(range=[self.low, self.high], parent_keys=self.keys, keys_in_range=self.in_range,
                       consistency=float(f"{math.exp(self.log_consistency):.3g}"))
        if self.named:
            out["named"] = True
        if self.role_in:
            out["role_in"] = self.role_in
        return out

    # the interface of `Measured`, for the planner
    missing = 0
    sample: tuple = ()


@dataclass(frozen=True)
class Inferred:
    """A column whose every value one or more keys hold, judged by the evidence rule."""

    column: Column
    contained: tuple[Evidence, ...]      # best first
    chosen: Evidence | None              # the parent, when the evidence names exactly one
    by: str = ""                         # "data", "data and name", "name prefix"

    @property
    def best(self) -> Evidence:
        return self.chosen or self.contained[0]

    @property
    def is_unconstrained_fk(self) -> bool:
        return self.chosen is not None

    @property
    def confirmed(self) -> list[Evidence]:
        return [self.chosen] if self.chosen else []

    def details(self) -> dict:
        out = {"implied": True, "rule": self.by or "data", **self.best.as_dict()}
        if len(self.contained) > 1 or not self.chosen:
            out["alternatives"] = [e.as_dict() for e in self.contained]
        return out

    def describe(self) -> str:
        return ", ".join(e.candidate.references for e in self.contained if e is not self.chosen)

    def evidence(self) -> str:
        """Why it is no coincidence, in words."""
        e = self.best
        if self.by == "name prefix":
            return f"and the name points at {e.candidate.parent.name.name}"
        if self.by == "role in rows":
            return (f"and the rows it points at, unlike the others, have a word of its name in "
                    f"{e.candidate.parent.name.name}.{e.role_in}")
        chance = e.log_chance
        if chance is None:
            return "text values of no other key"
        if chance == -math.inf:
            return "uuids"
        tie = " and the name tells it from the others" if self.by == "data and name" else ""
        return f"by chance with probability {math.exp(chance):.1g}{tie}"

    def why_not(self) -> str:
        qualified = [e for e in self.contained if e.unlikely_by_chance]
        if len(qualified) > 1:
            return f"holds only keys of {len(qualified)} tables, no name tells which: {self.describe()}"
        return (f"holds only keys of {self.describe()}, but {self.best.values} distinct values in that "
                "range could be there by chance")

    @property
    def measured(self) -> tuple[Evidence, ...]:
        return self.contained


@dataclass(frozen=True)
class Inference:
    """One column tested against the keys that could hold its values, in one probe."""

    table: Table
    column: Column
    kind: str
    parents: tuple[Parent, ...]
    role: bool = field(default=False)    # its name ends in `id` (a reference to an unnamed table)
    words: tuple[str, ...] = ()          # its name's words but `id`: looked for in the rows it points at

    @property
    def key(self) -> str:
        return "inferred:" + json.dumps([str(self.table.name), self.column.name,
                                         [[str(p.table.name), p.column] for p in self.parents]])

    def role_pattern(self) -> str:
        """A word of the name, at the start of a word of the text (whole words for words under 4 letters)."""
        return r"\m(" + "|".join(w if len(w) >= 4 else w + r"\M" for w in self.words) + ")"

    def _role(self, p: Parent, parent: sql.Composable, pk: sql.Composable, g: sql.Composable) -> sql.Composable:
        """The first of the parent's text columns in which every row the column points at has a word of the
        column's name and some other row a value without it; only for a few distinct values (at least 2)."""
        if not (self.words and p.texts):
            return sql.SQL("NULL::text")
        pattern = sql.Literal(self.role_pattern())
        whens = [sql.SQL(
            "WHEN NOT EXISTS (SELECT 1 FROM v, {parent} p WHERE {pk} = v.k AND ({c} IS NULL OR {c} !~* {pat})) "
            "AND EXISTS (SELECT 1 FROM {parent} p WHERE {c} !~* {pat} "
            "AND NOT EXISTS (SELECT 1 FROM v WHERE v.k = {pk})) "
            "THEN {name}").format(parent=parent, pk=pk, c=sql.Identifier("p", c), pat=pattern, name=sql.Literal(c))
            for c in p.texts]
        return sql.SQL("CASE WHEN g.{g} AND (SELECT n FROM vs) BETWEEN 2 AND {most} THEN CASE {whens} END END").format(
            g=g, most=sql.Literal(ROLE_VALUES), whens=sql.SQL(" ").join(whens))

    def query(self) -> sql.Composed:
        """Per parent: whether the first rows' values are all there (and, for integers, unlikely there
        by chance, unless the name points at it); if so, in the one hashed pass over the column's
        distinct values: whether every value is there and, for integers, how many keys the parent has
        in the column's range, and in which text column the rows pointed at name the column's role.
        An expression whose parent was ruled out is never evaluated."""
        col = sql.Identifier("t", self.column.name)
        child = _ref(self.table)
        gates, outs = [], []
        for i, p in enumerate(self.parents):
            parent, pk = _ref(p.table), sql.Identifier("p", p.column)
            contained = sql.SQL("NOT EXISTS (SELECT 1 FROM h WHERE NOT EXISTS (SELECT 1 FROM {} p WHERE {} = h.k))"
                                ).format(parent, pk)
            if self.kind == "int" and not (p.named or self.role):
                chance = sql.SQL(
                    "(SELECT coalesce(sum(ln((r.kin - i)::float8 / (r.w - i)::float8)), 0) FROM "
                    "(SELECT (SELECT count(*) FROM {parent} p WHERE {pk} BETWEEN least(1, hs.lo) AND hs.hi) AS kin, "
                    "hs.hi::numeric - least(1, hs.lo) + 1 AS w) r, generate_series(0, hs.n - 1) i) <= {limit}"
                ).format(parent=parent, pk=pk, limit=sql.Literal(math.log(HEAD_CHANCE)))
                gate = sql.SQL("CASE WHEN {} THEN {} ELSE false END").format(contained, chance)
            else:
                gate = contained
            g = sql.Identifier(f"g{i}")
            gates.append(sql.SQL("hs.n > 0 AND {} AS {}").format(gate, g))
            outs.append(sql.SQL("g.{g}, CASE WHEN g.{g} THEN NOT EXISTS (SELECT 1 FROM v WHERE NOT EXISTS "
                                "(SELECT 1 FROM {parent} p WHERE {pk} = v.k)) END, {role}").format(
                g=g, parent=parent, pk=pk, role=self._role(p, parent, pk, g)))
            if self.kind == "int":
                outs.append(sql.SQL(
                    "CASE WHEN g.{g} THEN (SELECT count(*) FROM {parent} p) END, "
                    "CASE WHEN g.{g} THEN (SELECT count(*) FROM {parent} p, vs "
                    "WHERE {pk} BETWEEN vs.lo AND vs.hi) END, "
                    "CASE WHEN g.{g} THEN (SELECT count(*) FROM {parent} p, vs "
                    "WHERE {pk} BETWEEN least(1, vs.lo) AND vs.hi) END"
                ).format(g=g, parent=parent, pk=pk))
        any_gate = sql.SQL(" OR ").join(sql.SQL("g.{}").format(sql.Identifier(f"g{i}"))
                                        for i in range(len(self.parents)))
        bounds = (sql.SQL("CASE WHEN {a} THEN (SELECT lo::text FROM vs) END, "
                          "CASE WHEN {a} THEN (SELECT hi::text FROM vs) END")
                  if self.kind == "int" else sql.SQL("NULL::text, NULL::text")).format(a=any_gate)
        bound = sql.SQL("min(k) AS lo, max(k) AS hi" if self.kind == "int" else "NULL AS lo, NULL AS hi")
        return sql.SQL(
            "WITH h AS MATERIALIZED (SELECT DISTINCT s.k FROM (SELECT {col} AS k FROM {child} t "
            "WHERE {col} IS NOT NULL "
            "LIMIT {head}) s), "
            "hs AS MATERIALIZED (SELECT count(*) AS n, {bound} FROM h), "
            "g AS MATERIALIZED (SELECT {gates} FROM hs), "
            "v AS MATERIALIZED (SELECT {col} AS k FROM {child} t WHERE {col} IS NOT NULL GROUP BY 1), "
            "vs AS MATERIALIZED (SELECT count(*) AS n, {bound} FROM v) "
            "SELECT CASE WHEN {a} THEN (SELECT n FROM vs) END, {bounds}, {outs} FROM g"
        ).format(col=col, child=child, head=sql.Literal(HEAD_ROWS), gates=sql.SQL(", ").join(gates), bound=bound,
                 a=any_gate, bounds=bounds, outs=sql.SQL(", ").join(outs))

    def judge(self, row: tuple) -> Inferred | None:
        values, low, high = row[0], row[1], row[2]
        if not values:
            return None
        width = 6 if self.kind == "int" else 3
        contained = []
        for i, p in enumerate(self.parents):
            cells = row[3 + i * width: 3 + (i + 1) * width]
            if not cells[0] or not cells[1]:
                continue
            ints = [int(x) for x in cells[3:]] if self.kind == "int" else [None, None, None]
            contained.append(Evidence(
                Candidate(self.table, self.column, p.table, "data",
                          "" if p.table.primary_key == (p.column,) else p.column),
                p.named, self.kind, int(values), int(low) if low is not None else None,
                int(high) if high is not None else None, ints[0], ints[1], ints[2], role_in=cells[2]))
        if not contained:
            return None
        contained.sort(key=lambda e: (not e.unlikely_by_chance, -e.log_consistency, str(e.candidate.parent.name)))
        qualified = [e for e in contained if e.unlikely_by_chance]
        chosen, by = None, ""
        if len(qualified) == 1:
            chosen, by = qualified[0], "data"
        elif len(qualified) > 1:
            named = [e for e in qualified if e.named]
            roles = [e for e in qualified if e.role_in]
            if len(named) == 1:
                chosen, by = named[0], "data and name"
            elif not named and len(roles) == 1:
                chosen, by = roles[0], "role in rows"
        else:
            named = [e for e in contained if e.named and e.consistent]
            roles = [e for e in contained if e.role_in]
            if len(named) == 1:
                chosen, by = named[0], "name prefix"
            elif not any(e.named for e in contained) and len(roles) == 1 and roles[0].consistent:
                chosen, by = roles[0], "role in rows"
        if (chosen is None and not qualified and not self.role and not any(e.named for e in contained)
                and not any(e.role_in for e in contained)):
            return None            # an integer that happens to lie in some keys: not worth a word
        if chosen is None:
            contained = [e for e in contained if e.consistent] or contained
        if chosen is not None:
            renamed = replace(chosen, candidate=replace(chosen.candidate, rule=by))
            contained = [renamed if e is chosen else e for e in contained]
            chosen = renamed
        return Inferred(self.column, tuple(contained), chosen, by)


def _plausible(ctx: AuditContext, t: Table, column: Column, kind: str, parent: Table, key: str, named: bool) -> bool:
    """The catalog's and pg_stats' verdict before anything is read: could `parent.key` hold the column's
    values? (No statistics: yes, the probe's first rows decide.)"""
    stats = ctx.catalog.column_stats
    cs, ps = stats.get((t.name, column.name)), stats.get((parent.name, key))
    if cs is None:
        return True
    distinct = cs.distinct(t.estimated_rows)
    if parent.estimated_rows > 0 and t.estimated_rows > 0 and distinct > 1.2 * parent.estimated_rows + 10:
        return False
    if kind == "text" and ps is not None and cs.avg_width > 4 * ps.avg_width + 16:
        return False        # long texts (messages, names) do not hold keys
    if kind != "int" or ps is None or None in (cs.low, cs.high, ps.low, ps.high):
        return True
    slack = 0 if parent.estimated_rows <= 30_000 else (ps.high - ps.low) // 100 + 1
    if cs.low < ps.low - slack or cs.high > ps.high + slack:
        return False
    if named or parent.estimated_rows <= 0:
        return True
    # keys dense from 1 hold every small integer: containment would be no evidence
    density = min(1.0, parent.estimated_rows / (ps.high - min(ps.low, 1) + 1))
    return density < 1.0 and distinct * math.log(density) < math.log(0.01)


def inferences(ctx: AuditContext, others: list[tuple[Table, Column]]) -> list[Inference]:
    """The columns no name rule connects to a table, each with the keys that could hold its values."""
    keys = [(p, k) for p in ctx.catalog.tables.values() for k in key_columns(p)]
    out = []
    for t, column in others:
        kind = _kind(column)
        stats = ctx.catalog.column_stats.get((t.name, column.name))
        if (kind is None or column.name in key_columns(t) or (stats is not None and stats.null_frac >= 1.0)):
            continue
        ws = [w for w in words(column.name) if len(w) >= 4]
        role = len(words(column.name)) > 1 and words(column.name)[-1] == "id"
        role_words = tuple(dict.fromkeys(w for w in words(column.name)
                                         if len(w) >= 3 and w != "id" and not w.isdigit()))
        parents = []
        for p, k in keys:
            if (p is t and k == column.name) or _kind(p.columns[k]) != kind:
                continue
            named = any(f.startswith(w) or (len(f) >= 4 and w.startswith(f)) for w in ws for f in _forms(p))
            if _plausible(ctx, t, column, kind, p, k, named or role):
                texts = tuple(c.name for c in p.columns.values() if c.typname in _TEXTS and c.name != k)
                parents.append(Parent(p, k, named, texts))
        if parents:
            out.append(Inference(t, column, kind, tuple(parents), role, role_words))
    return out

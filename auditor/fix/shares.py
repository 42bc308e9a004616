"""How much of each table the plan takes out of it, and the refusal when that is more than a small share.

A step that takes most of a table out of it (a quarantine, a delete, a null-out of user ids, and what
ON DELETE CASCADE / SET NULL / SET DEFAULT of other tables' foreign keys do with them) is a
configuration error far more often than a data error: a key column whose values are all of another
type is "malformed" in every row. So, per table, the rows that the plan's removals take out or change
(each row once, however many steps reach it) are counted against the table's rows, and a table where
that is more than `--max-removed-share` percent (default 5) and more than MIN_ROWS rows is refused:
by `fix` (dry run: shown), before the confirmation of `fix --apply`, and by the preflight right before
the first change (the same query, the same line).

MIN_ROWS: up to that many rows of a table are never refused for their share (1 row of a 10-row table
is a defect, not a configuration error). Pure SQL building here; `measure` runs it.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from psycopg import sql

from ..catalog import QualifiedName
from ..errors import first_line
from ..fk_reach import touched
from ..sqlparts import table_ref
from .orphans_now import Shared

MIN_ROWS = 10              # rows of a table that are never refused for their share
FLAG = "--max-removed-share"
LINE = ("{table}: {rows} of its {total} rows ({pct}%) would be taken out or changed ({how}), more than "
        f"{FLAG} {{limit}}% allows: a step that takes that much of a table is most often a configuration "
        f"error (the key column, the master, the source table); check it, or raise {FLAG} (or [fix] "
        "max_removed_share in yumai-audit.toml) to allow it")


def share_text(rows: int, total: int) -> str:
    """The share as the line shows it, rounded half up to one decimal (as PostgreSQL's round does)."""
    value = Decimal(rows * 100) / Decimal(total) if total else Decimal(0)
    return str(value.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def exceeds(rows: int, total: int, limit: float) -> bool:
    return rows > MIN_ROWS and rows * 100 > limit * total


@dataclass(frozen=True)
class Share:
    """What the plan takes out of (or changes in) one table, as measured when the plan was made."""

    table: str
    rows: int
    total: int
    how: tuple[str, ...]

    @property
    def percent(self) -> str:
        return share_text(self.rows, self.total)

    @property
    def fraction(self) -> float:
        return self.rows / self.total if self.total else 0.0

    def over(self, limit: float) -> bool:
        return exceeds(self.rows, self.total, limit)

    def line(self, limit: float) -> str:
        return LINE.format(table=self.table, rows=self.rows, total=self.total, pct=self.percent,
                           how="; ".join(self.how), limit=f"{limit:g}")

    def summary(self) -> str:
        return f"{self.table}: {self.rows} of {self.total} rows ({self.percent}%): {'; '.join(self.how)}"


@dataclass(frozen=True)
class NullOut:
    """A null-out of the plan: the rows of `table` whose column it sets NULL, as the database is when the
    plan is made (`predicate`, alias t), and what the share's line calls it."""

    table: QualifiedName
    predicate: sql.Composable
    label: str


def _sources(removals, nulled, shared: Shared) -> dict[QualifiedName, list[tuple[str, sql.Composable]]]:
    """Per table, (what takes its rows, a query of their (relid, tid)) for every removal and null-out; the
    orphans of a removal read from the `shared` set."""
    out: dict[QualifiedName, list[tuple[str, sql.Composable]]] = {}
    for removal in removals:
        g, label = removal.graph, removal.label
        for table, kind, rows in touched(g, shared.predicate(removal.orphans, removal.predicate)):
            how = label if table == g.root else (
                f"ON DELETE CASCADE from {label}" if kind == "delete" else f"ON DELETE SET NULL/DEFAULT from {label}")
            out.setdefault(table, []).append((how, rows))
    for n in nulled:
        out.setdefault(n.table, []).append((n.label, sql.SQL("SELECT t.tableoid, t.ctid FROM {} t WHERE {}").format(
            table_ref(n.table), n.predicate)))
    return out


def share_query(removals, nulled) -> sql.Composable | None:
    """One row per table the plan takes rows from: (table, rows taken or changed, rows in all, what takes
    them); None when the plan takes nothing. The orphans of every key table are found first, in one pass
    over the source's keys (fix/orphans_now.py), not once per table."""
    parts = []
    shared = Shared(r.orphans for r in removals)
    for table, sources in _sources(removals, nulled, shared).items():
        rows = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT s.relid, s.tid, {} AS how FROM ({}) s(relid, tid)").format(sql.Literal(how), q)
            for how, q in sources)
        # `how`: what takes the rows, each with its own count, the most first
        parts.append(sql.SQL(
            "(WITH x AS ({rows}) SELECT {name}::text AS tbl, (SELECT count(DISTINCT (x.relid, x.tid)) FROM x) AS n, "
            "(SELECT count(*) FROM {t}) AS total, coalesce((SELECT array_agg(h.n || ' by ' || h.how "
            "ORDER BY h.n DESC, h.how) FROM (SELECT x.how, count(*) AS n FROM x GROUP BY x.how) h), '{{}}') AS how)"
        ).format(name=sql.Literal(str(table)), t=table_ref(table), rows=rows))
    if not parts:
        return None
    return shared.with_(sql.SQL(" UNION ALL ").join(parts))


def refusal(removals, nulled, limit: float) -> list[sql.Composable]:
    """The preflight part: one row (the refusal line) per table the plan would take more than `limit`
    percent (and more than MIN_ROWS rows) of."""
    query = share_query(removals, nulled)
    if query is None or limit >= 100:
        return []
    template = LINE.replace("%", "%%").format(table="%s", rows="%s", total="%s", pct="%s", how="%s",
                                              limit=f"{limit:g}")
    return [sql.SQL(
        "SELECT format({}, s.tbl, s.n, s.total, round(s.n * 100.0 / s.total, 1), array_to_string(s.how, '; ')) "
        "FROM ({}) s WHERE s.n > {} AND s.n * 100 > {} * s.total").format(
        sql.Literal(template), query, sql.Literal(MIN_ROWS), sql.Literal(limit))]


def measure(conn, removals, nulled, settings: dict[str, str] | None = None) -> tuple[list[Share], list[str]]:
    """The shares, largest first (tables with no row taken left out), and notes for what could not be counted
    (`settings`: local to the count's transaction)."""
    import psycopg

    from ..connection import set_local

    query = share_query(removals, nulled)
    if query is None:
        return [], []
    try:
        with conn.transaction():
            set_local(conn, settings)
            rows = conn.execute(query).fetchall()
    except psycopg.Error as exc:
        first = first_line(exc)
        return [], [f"the share of each table the plan takes rows from could not be counted now ({first})"]
    shares = [Share(t, int(n), int(total), tuple(how)) for t, n, total, how in rows if n]
    return sorted(shares, key=lambda s: (-s.fraction, -s.rows, s.table)), []

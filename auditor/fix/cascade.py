"""How the migration accounts for what its deletes set off in other tables through their foreign keys.

Every delete the fix makes (the quarantine of malformed or orphaned rows, `--orphans delete`) meets the
foreign keys that reference the table; auditor/fk_reach.py follows them from the catalog (the graph, and
the sets of rows a delete would delete or change). This module turns that into the migration's
statements, preflight refusals and plan notes.

How the fix accounts for them (decisions):
- quarantine: the rows a cascade would delete are moved too, each to its own quarantine table, in
  the statement that moves the parent rows (one snapshot, one transaction): deepest first, then the
  parent, so PostgreSQL's own cascade finds nothing left to delete and no row is ever in two places
  or none. The reached tables are locked in SHARE mode first (under lock_timeout), so that no row can
  start referencing a row being moved between the snapshot and the delete.
- SET NULL / SET DEFAULT: the referencing rows stay where they are (the schema says they outlive the
  parent) and PostgreSQL changes them; their values before the change are written, in the same
  statement, to `yumai_audit.changed_rows` (schema, table, reason, time, the row as jsonb), so that
  nothing is lost and the change can be undone.
- RESTRICT / NO ACTION with referencing rows: the preflight refuses, with the count, before any change.
- SET NULL / SET DEFAULT on a NOT NULL column (SET DEFAULT: with no default) with referencing rows: the
  change would fail, so the preflight refuses that too, naming the column (`_not_null_refusal`).
- the plan counts, per table, the rows each delete would move, delete or change (plan notes; the deletes
  of orphans in one statement, their key tables' orphans found in one pass: fix/orphans_now.py); the
  backup covers every table a delete can reach.
- a quarantined row says where it came from (yumai_origin_schema, yumai_origin_table), why and when;
  a table that has a column of one of these names is refused by the preflight (the copy could not
  hold both); quarantine table names are unique, a hash where they had to be cut.
- a cascade cycle through two or more tables is not supported (the planner refuses it: fk_reach's
  CascadeError); a table's keys to itself are followed to the end (a recursive query).
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from yumai_audit.checks.predicates import Known

from ..catalog import QualifiedName
from ..engine.steps import LockMode, Query, Step
from ..errors import first_line
from ..fk_reach import DeleteSets, Edge, Graph, blocked_rows, count_query, of_table, regclass
from ..sqlparts import table_ref
from .orphans_now import OrphansNow, Shared
from .preflight_checks import columns_unchanged, quarantine_catch_up

QUARANTINE_SCHEMA = "yumai_quarantine"
CHANGED_ROWS = QualifiedName("yumai_audit", "changed_rows")
# the columns a quarantine table adds to the copy of the table's own
ORIGIN_SCHEMA, ORIGIN_TABLE, REASON, QUARANTINED_AT = (
    "yumai_origin_schema", "yumai_origin_table", "yumai_reason", "yumai_quarantined_at")
QUARANTINE_COLUMNS = (ORIGIN_SCHEMA, ORIGIN_TABLE, REASON, QUARANTINED_AT)
MAX_NAME = 63   # PostgreSQL's identifier limit, in bytes


def quarantine_name(table: QualifiedName) -> QualifiedName:
    """`yumai_quarantine."<schema>__<table>"`; when that does not fit in 63 bytes (or the schema holds
    `__`, which could make two tables meet), the name is cut and a hash of the exact pair added."""
    plain = f"{table.schema}__{table.name}"
    if len(plain.encode()) <= MAX_NAME and "__" not in table.schema:
        return QualifiedName(QUARANTINE_SCHEMA, plain)
    digest = hashlib.sha1(f"{table.schema}\0{table.name}".encode()).hexdigest()[:10]
    head = plain
    while len(f"{head}_{digest}".encode()) > MAX_NAME:
        head = head[:-1]
    return QualifiedName(QUARANTINE_SCHEMA, f"{head}_{digest}")


def _reason(e: Edge, reason: str) -> str:
    return f"{reason}: {e.ref.name} ON DELETE {e.action} from {e.parent}"


def quarantine_statements(g: Graph, predicate: sql.Composable, reason: str) -> tuple[Query, ...]:
    """The statements that move the rows of g.root matching `predicate` (over alias `t`) to quarantine,
    with every row a cascade would delete, in one transaction: create what they need, lock, move."""
    out = [sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(QUARANTINE_SCHEMA))]
    for t in g.deleted:
        out.append(sql.SQL("CREATE TABLE IF NOT EXISTS {q} (LIKE {t}, {os} text NOT NULL, {ot} text NOT NULL, "
                           "{r} text NOT NULL, {at} timestamptz NOT NULL DEFAULT now())").format(
            q=table_ref(quarantine_name(t)), t=table_ref(t), os=sql.Identifier(ORIGIN_SCHEMA),
            ot=sql.Identifier(ORIGIN_TABLE), r=sql.Identifier(REASON), at=sql.Identifier(QUARANTINED_AT)))
        # a quarantine table made by an earlier version has no origin columns (its rows: this table's)
        out.append(sql.SQL("ALTER TABLE {q} ADD COLUMN IF NOT EXISTS {os} text DEFAULT {s}, "
                           "ADD COLUMN IF NOT EXISTS {ot} text DEFAULT {t}").format(
            q=table_ref(quarantine_name(t)), os=sql.Identifier(ORIGIN_SCHEMA), ot=sql.Identifier(ORIGIN_TABLE),
            s=sql.Literal(t.schema), t=sql.Literal(t.name)))
        # the plan re-reads the columns each run: one added since an earlier attempt joins the quarantine;
        # one added since this plan was made stops the step before it moves anything
        out.append(quarantine_catch_up(quarantine_name(t), t))
        out.append(columns_unchanged(t, list(g.columns_of(t))))
    if g.changes:
        out += [sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(CHANGED_ROWS.schema)),
                sql.SQL("CREATE TABLE IF NOT EXISTS {} (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "
                        "origin_schema text NOT NULL, "
                        "origin_table text NOT NULL, reason text NOT NULL, changed_at timestamptz NOT NULL "
                        "DEFAULT now(), original jsonb NOT NULL)").format(table_ref(CHANGED_ROWS))]
    if g.locked:
        out.append(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(sql.SQL(", ").join(map(table_ref, g.locked))))
    out.append(move_statement(g, predicate, reason))
    return tuple(out)


def _copy(table: QualifiedName, g: Graph, source: str, reason: str) -> sql.Composed:
    names = sql.SQL(", ").join(sql.Identifier(c) for c in g.columns_of(table))
    return sql.SQL("INSERT INTO {q} ({names}, {os}, {ot}, {r}) SELECT {names}, {s}, {t}, {reason} FROM {src}").format(
        q=table_ref(quarantine_name(table)), names=names, os=sql.Identifier(ORIGIN_SCHEMA),
        ot=sql.Identifier(ORIGIN_TABLE), r=sql.Identifier(REASON), s=sql.Literal(table.schema),
        t=sql.Literal(table.name), reason=sql.Literal(reason), src=sql.Identifier(source))


def move_statement(g: Graph, predicate: sql.Composable, reason: str) -> sql.Composed:
    if g.quiet:
        return sql.SQL("WITH moved AS (DELETE FROM {t} AS t WHERE {pred} RETURNING t.*) {copy}").format(
            t=table_ref(g.root), pred=predicate, copy=_copy(g.root, g, "moved", reason))
    sets = DeleteSets(g, predicate)
    parts = [sets.with_()]
    ctes = []
    for i, t in enumerate(g.changed):
        edges = [e for e in g.changes if e.child == t]
        why = "; ".join(_reason(e, reason) for e in edges)
        ctes.append(sql.SQL("a{i} AS (INSERT INTO {cr} (origin_schema, origin_table, reason, original) "
                            "SELECT {s}, {t}, {why}, to_jsonb(c) FROM {tbl} c WHERE {cond})").format(
            i=sql.SQL(str(i)), cr=table_ref(CHANGED_ROWS), s=sql.Literal(t.schema), t=sql.Literal(t.name),
            why=sql.Literal(why), tbl=table_ref(t), cond=sets.changed_condition(t)))
    for t in reversed(g.deleted):       # deepest first, the root last (the main statement)
        i = sets.index[t]
        edges = [e for e in g.cascades if e.child == t]
        why = reason if t == g.root else "; ".join(dict.fromkeys(_reason(e, reason) for e in edges))
        ctes.append(sql.SQL("m{i} AS (DELETE FROM {t} AS x USING {d} d WHERE x.tableoid = d.relid AND x.ctid = d.tid "
                            "RETURNING x.*)").format(i=sql.SQL(str(i)), t=table_ref(t), d=sets.name(t)))
        copy = _copy(t, g, f"m{i}", why)
        if t != g.root:
            ctes.append(sql.SQL("q{} AS ({})").format(sql.SQL(str(i)), copy))
    return sql.SQL("{}, {} {}").format(parts[0], sql.SQL(", ").join(ctes), _copy(g.root, g, "m0", reason))


def refusals(g: Graph, predicate: sql.Composable, what: str, moves: bool = True) -> list[sql.Composed]:
    """Preflight parts (queries whose rows are reasons not to start) for the delete of `what`: rows of a
    RESTRICT / NO ACTION key that would make it fail; when it `moves` the rows (quarantine), what its own
    statements need on the reached tables: privileges, and no row security hiding rows."""
    out = []
    sets = DeleteSets(g, predicate)
    if g.blocks:
        rows = [sql.SQL("SELECT n || {} FROM ({}) b WHERE n > 0").format(
            sql.Literal(f" row(s) of {e.child} reference rows that {what} would delete "
                        f"(foreign key {e.ref.name} ON DELETE {e.action}): the delete would fail; "
                        "change or remove those rows first"),
            blocked_rows(sets, e, sql.SQL("count(*) AS n"))) for e in g.blocks]
        out.append(sql.SQL("({} {})").format(sets.with_(), sql.SQL(" UNION ALL ").join(rows)))
    out += [_not_null_refusal(sets, e, what) for e in g.changes]
    if not moves:
        return out
    for t, need in [(t, "DELETE") for t in g.deleted[1:]] + [(t, "UPDATE") for t in g.changed]:
        out.append(sql.SQL("SELECT {} WHERE NOT (has_schema_privilege({s}, 'USAGE') "
                           "AND has_table_privilege({r}, 'SELECT') AND has_table_privilege({r}, {p}))").format(
            sql.Literal(f"no USAGE on its schema, or no SELECT and {need} privilege on {t}, whose rows {what} reaches "
                        "through a foreign key"), s=sql.Literal(t.schema), r=regclass(t), p=sql.Literal(need)))
    for t in g.reached:
        # the cascade ignores row security, the quarantine's own statements do not: rows hidden from us would
        # be deleted or changed by PostgreSQL without a copy
        out.append(sql.SQL(
            "SELECT {} FROM pg_class c WHERE c.oid = {} AND c.relrowsecurity AND (c.relforcerowsecurity "
            "OR NOT pg_has_role(current_user, c.relowner, 'USAGE')) AND NOT (SELECT r.rolsuper OR r.rolbypassrls "
            "FROM pg_roles r WHERE r.rolname = current_user)").format(
            sql.Literal(f"{t} has row level security, which hides rows that {what} would reach through a foreign "
                        "key: run as a role that bypasses it (BYPASSRLS, or its owner without FORCE)"), regclass(t)))
    return out


def _not_null_refusal(sets: DeleteSets, e: Edge, what: str) -> sql.Composed:
    """A preflight part: rows of a SET NULL / SET DEFAULT child that the delete would change, when a column
    the key sets is NOT NULL (SET DEFAULT: and has no default), so the delete would fail. The columns set
    are the key's columns, or the ones `ON DELETE SET NULL (col, ...)` names (PostgreSQL 15 and later:
    `confdelsetcols`, read through to_jsonb so that older catalogs, which lack it, read NULL). The catalog
    is asked first: the rows are counted (a subquery the server runs only when it is needed) only for a
    key that sets such a column, so a nullable SET NULL child costs the preflight nothing."""
    return sql.SQL(
        "SELECT x.n || {head} || x.cols || {tail} FROM (SELECT string_agg(a.attname, ', ') AS cols, ({count}) AS n "
        "FROM pg_constraint k CROSS JOIN LATERAL (SELECT to_jsonb(k) -> 'confdelsetcols' AS cols) d "
        "JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = ANY (CASE WHEN jsonb_typeof(d.cols) = 'array' "
        "AND jsonb_array_length(d.cols) > 0 THEN ARRAY(SELECT jsonb_array_elements_text(d.cols))::int2[] "
        "ELSE k.conkey END) "
        "WHERE k.conrelid = {rel} AND k.conname = {con} AND a.attnotnull AND (k.confdeltype = 'n' OR NOT a.atthasdef) "
        # OFFSET 0: x.n > 0 stays out of the HAVING, where the server would count the rows first
        "HAVING count(*) > 0 OFFSET 0) x WHERE x.n > 0"
    ).format(
        head=sql.Literal(f" row(s) of {e.child} reference rows that {what} would delete, and foreign key "
                         f"{e.ref.name} ON DELETE {e.action} would set its NOT NULL column "),
        tail=sql.Literal(f" {'NULL' if e.ref.on_delete == 'n' else 'NULL (it has no default)'}: the delete would "
                         "fail; change the key's action or those rows first"),
        count=sql.SQL("{} {}").format(sets.with_(), blocked_rows(sets, e, sql.SQL("count(*)"))),
        rel=regclass(e.child), con=sql.Literal(e.ref.name))


def column_refusal(tables: list[QualifiedName]) -> sql.Composed:
    """A preflight part: a table to be quarantined that has a column of the quarantine's own names."""
    pairs = sql.SQL(", ").join(sql.SQL("({}, {})").format(sql.Literal(t.schema), sql.Literal(t.name)) for t in tables)
    return sql.SQL(
        "SELECT format('%s has a column %I, a name its quarantine table uses for the origin, reason or time of a "
        "row: rename the column, then run again', quote_ident(v.s) || '.' || quote_ident(v.t), a.attname) "
        "FROM (VALUES {}) v(s, t) JOIN pg_namespace n ON n.nspname = v.s JOIN pg_class c ON c.relnamespace = n.oid "
        "AND c.relname = v.t JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "WHERE a.attname = ANY({})").format(pairs, sql.Literal(list(QUARANTINE_COLUMNS)))


def widen(step: Step, g: Graph, capture: bool = True) -> Step:
    """The step as it really is once the graph's tables count: it changes them (the backup covers them),
    and, when it moves rows to quarantine, locks them in SHARE mode (so it runs under lock_timeout)."""
    if g.quiet:
        return step
    changes = tuple(dict.fromkeys(step.changes + tuple(str(t) for t in g.reached)))
    if not capture or not g.locked:
        return dataclasses.replace(step, changes=changes)
    tables = tuple(dict.fromkeys(step.tables + tuple(str(t) for t in g.locked)))
    reached = ", ".join(str(t) for t in g.reached)
    return dataclasses.replace(step, changes=changes, tables=tables, lock=max(step.lock, LockMode.SHARE),
                               description=step.description + f"; with what their foreign keys reach ({reached})")


def note(g: Graph, counts: list[tuple[str, str, str, int]], what: str) -> str | None:
    """A plan note from `count_query`'s rows: what the delete of `what` takes or changes, table by table."""
    deleted = {QualifiedName(s, t): n for kind, s, t, n in counts if kind == "delete"}
    others = [(kind, QualifiedName(s, t), n) for kind, s, t, n in counts if kind != "delete"]
    parts = [f"{n} row(s) of {t} (ON DELETE CASCADE)" for t, n in deleted.items() if t != g.root]
    parts += [f"{n} row(s) of {t} changed (ON DELETE SET NULL/DEFAULT; originals kept in {CHANGED_ROWS})"
              for kind, t, n in others if kind == "change"]
    parts += [f"{n} row(s) of {t} block it (ON DELETE RESTRICT/NO ACTION)" for kind, t, n in others if kind == "block"]
    if not parts:
        return None
    return f"{what}: {deleted.get(g.root, 0)} row(s) of {g.root}, and through foreign keys " + ", ".join(parts)


# --- the fix's deletes ---------------------------------------------------------------------------------

def widen_orphans(ctx, mode: str, k, step: Step) -> Step:
    """A step that (also) takes the orphans of key table k out (`--orphans mode`), widened to what their
    foreign keys reach; the source table's and `register` take nothing out."""
    if k.is_source or mode == "register":
        return step
    return widen(step, of_table(ctx.catalog, k.table), capture=mode == "quarantine")


def orphans_now(ctx, k) -> OrphansNow:
    """The orphans of k as the database is when the plan is made: the key columns of their present type,
    the master only if it exists (what the counts and the preflight read; `.predicate` over alias t)."""
    master = ctx.master if ctx.master is not None and ctx.key in ctx.master.columns else None
    src = ctx.source if ctx.source is not None and ctx.source.key_checkable else None
    known = Known(master.name if master else None, master.columns[ctx.key] if master else None,
                  src.name if src else None, src.key if src else None)
    return OrphansNow(k.name, k.key, known)


@dataclass(frozen=True)
class Removal:
    """A delete of the plan: what it reaches through foreign keys, counted when the plan is made
    (`measure`) and refused by the preflight when it cannot be done (`preflight_parts`)."""

    graph: Graph
    predicate: sql.Composable      # the rows it deletes, as the database is when the plan is made
    label: str                     # "the quarantine of orphaned rows of s.t"
    moves: bool                    # moved to the quarantine (True) or deleted for good
    orphans: OrphansNow | None = None   # the predicate is these orphans': counted with every key table's at once


def preflight_parts(removals: Iterable[Removal]) -> list[sql.Composed]:
    """The preflight's refusals for the plan's deletes."""
    out: list[sql.Composed] = []
    quarantined: list[QualifiedName] = []
    for r in removals:
        out += refusals(r.graph, r.predicate, r.label, r.moves)
        if r.moves:
            quarantined += [t for t in r.graph.deleted if t not in quarantined]
    if quarantined:
        out.append(column_refusal(quarantined))
    return out


def measure(conn: psycopg.Connection, removals: Iterable[Removal], settings: dict[str, str] | None = None) -> list[str]:
    """Plan notes: per delete, the rows it takes or changes in every table its foreign keys reach
    (`settings`: local to each count's transaction)."""
    from ..connection import set_local

    counted = [r for r in removals if not r.graph.quiet]
    together = _together(conn, counted, settings) if sum(r.orphans is not None for r in counted) > 1 else None
    notes = []
    for i, removal in enumerate(counted):
        if together is not None:
            rows = together[i]
        else:
            try:
                with conn.transaction():
                    set_local(conn, settings)
                    rows = [tuple(r) for r in conn.execute(count_query(removal.graph, removal.predicate)).fetchall()]
            except psycopg.Error as exc:
                first = first_line(exc)
                notes.append(f"{removal.label}: what its foreign keys reach could not be counted now ({first})")
                continue
        text = note(removal.graph, rows, removal.label)
        if text:
            notes.append(text)
    return notes


def _together(conn: psycopg.Connection, removals: list[Removal],
              settings: dict[str, str] | None) -> list[list[tuple]] | None:
    """Every removal's `count_query` rows from one statement, the orphans of their key tables found once
    (fix/orphans_now.py); None when it fails (then each is counted alone, with its own note)."""
    from ..connection import set_local

    shared = Shared(r.orphans for r in removals)
    query = shared.with_(sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {} AS r, q.* FROM ({}) q(what, s, t, n)").format(
            sql.Literal(i), count_query(r.graph, shared.predicate(r.orphans, r.predicate)))
        for i, r in enumerate(removals)))
    try:
        with conn.transaction():
            set_local(conn, settings)
            fetched = conn.execute(query).fetchall()
    except psycopg.Error:
        return None
    out: list[list[tuple]] = [[] for _ in removals]
    for r, *row in fetched:
        out[r].append(tuple(row))
    return out

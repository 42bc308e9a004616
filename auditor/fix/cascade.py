"""What a delete sets off in other tables through their foreign keys, and how the fix accounts for it.

Every delete the tool makes (the quarantine of malformed or orphaned rows, `--orphans delete`,
`sessions prune`) meets the foreign keys that reference the table, and PostgreSQL acts on them:
ON DELETE CASCADE deletes the referencing rows (which cascade further), SET NULL / SET DEFAULT change
them, RESTRICT / NO ACTION make the delete fail. `graph()` follows these keys from the catalog
(`Catalog.references`, every declared FK of the database) recursively: children of children, keys
to or on partitions, self-references; every table is visited once, so cycles end. Pure functions:
nothing here connects to a database.

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
- the plan counts, per table, the rows each delete would move, delete or change (plan notes); the
  backup covers every table a delete can reach.
- a quarantined row says where it came from (yumai_origin_schema, yumai_origin_table), why and when;
  a table that has a column of one of these names is refused by the preflight (the copy could not
  hold both); quarantine table names are unique, a hash where they had to be cut.
- a cascade cycle through two or more tables is not supported (the planner refuses it); a table's
  keys to itself are followed to the end (a recursive query).
"""
from __future__ import annotations

import dataclasses
import graphlib
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from yumai_audit.checks.predicates import Exists, Known, orphaned

from ..catalog import Catalog, QualifiedName, Reference, Table
from ..engine.steps import LockMode, Query, Step
from ..errors import AuditError, first_line
from ..sqlparts import table_ref
from .preflight_checks import columns_unchanged, quarantine_catch_up

QUARANTINE_SCHEMA = "yumai_quarantine"
CHANGED_ROWS = QualifiedName("yumai_audit", "changed_rows")
# the columns a quarantine table adds to the copy of the table's own
ORIGIN_SCHEMA, ORIGIN_TABLE, REASON, QUARANTINED_AT = (
    "yumai_origin_schema", "yumai_origin_table", "yumai_reason", "yumai_quarantined_at")
QUARANTINE_COLUMNS = (ORIGIN_SCHEMA, ORIGIN_TABLE, REASON, QUARANTINED_AT)
ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}
MAX_NAME = 63   # PostgreSQL's identifier limit, in bytes


class CascadeError(AuditError):
    """The foreign keys of the database make a delete the tool cannot account for (a cascade cycle)."""


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


@dataclass(frozen=True)
class Edge:
    """A foreign key met by deleting rows of `parent` (the key references it, a partition of it, or
    the partitioned table it belongs to)."""

    ref: Reference
    parent: QualifiedName

    @property
    def child(self) -> QualifiedName:
        return self.ref.table

    @property
    def action(self) -> str:
        return ACTIONS.get(self.ref.on_delete, self.ref.on_delete)

    def label(self) -> str:
        return f"{self.ref.name} on {self.child} ON DELETE {self.action}"


@dataclass(frozen=True)
class Graph:
    """Everything deleting rows of `root` can reach. `deleted`: root first, then every table whose rows
    a cascade deletes, each after the tables that cascade into it."""

    root: QualifiedName
    deleted: tuple[QualifiedName, ...]
    columns: tuple[tuple[QualifiedName, tuple[str, ...]], ...]   # each table's columns, in order
    cascades: tuple[Edge, ...] = ()
    changes: tuple[Edge, ...] = ()       # SET NULL / SET DEFAULT
    blocks: tuple[Edge, ...] = ()        # RESTRICT / NO ACTION

    @property
    def quiet(self) -> bool:
        """No foreign key references the root: a delete there touches nothing else."""
        return not (self.cascades or self.changes or self.blocks)

    @property
    def changed(self) -> tuple[QualifiedName, ...]:
        return tuple(dict.fromkeys(e.child for e in self.changes))

    @property
    def reached(self) -> tuple[QualifiedName, ...]:
        """Tables other than the root whose rows the delete deletes or changes (for the backup)."""
        return tuple(t for t in dict.fromkeys(self.deleted[1:] + self.changed) if t != self.root)

    @property
    def locked(self) -> tuple[QualifiedName, ...]:
        """What the quarantine locks in SHARE mode: the reached tables, and the root when it references itself."""
        itself = any(e.child == self.root for e in self.cascades + self.changes)
        return tuple(dict.fromkeys(((self.root,) if itself else ()) + self.deleted[1:] + self.changed))

    def columns_of(self, table: QualifiedName) -> tuple[str, ...]:
        return dict(self.columns)[table]


def graph(references: list[Reference], root: QualifiedName, root_columns: tuple[str, ...]) -> Graph:
    """Follow the foreign keys that reference `root` (a table that is not a partition), recursively."""
    roots = {root: root}                 # table -> its partition root
    columns = {root: tuple(root_columns)}
    by_root: dict[QualifiedName, list[Reference]] = {}
    for r in references:
        by_root.setdefault(r.ref_root, []).append(r)
    order, queue = [root], [root]
    cascades, changes, blocks = [], [], []
    while queue:
        node = queue.pop(0)
        for r in by_root.get(roots[node], []):
            edge = Edge(r, node)
            if r.on_delete == "c":
                cascades.append(edge)
                if r.table not in roots:
                    roots[r.table] = r.table_root
                    columns[r.table] = r.table_columns
                    order.append(r.table)
                    queue.append(r.table)
            elif r.on_delete in ("n", "d"):
                changes.append(edge)
                columns.setdefault(r.table, r.table_columns)
            else:
                blocks.append(edge)
    sorter = graphlib.TopologicalSorter({t: set() for t in order})
    for e in cascades:
        if e.child != e.parent:
            sorter.add(e.child, e.parent)
    try:
        ranked = list(sorter.static_order())
    except graphlib.CycleError as exc:
        cycle = " -> ".join(str(t) for t in exc.args[1])
        raise CascadeError(f"deleting rows of {root} cascades in a cycle ({cycle}): not supported; "
                           "break the cycle (an ON DELETE action) first") from None
    if ranked[0] != root:
        ranked.remove(root)
        ranked.insert(0, root)
    return Graph(root, tuple(ranked), tuple(columns.items()), tuple(cascades), tuple(changes), tuple(blocks))


# --- SQL ---------------------------------------------------------------------------------------------

def _regclass(table: QualifiedName) -> sql.Composed:
    """The table's oid, looked up in the catalog (no error for a schema without USAGE, unlike ::regclass)."""
    return sql.SQL("(SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                   "WHERE n.nspname = {} AND c.relname = {})::regclass").format(
        sql.Literal(table.schema), sql.Literal(table.name))


class _Sets:
    """The CTEs naming the rows a delete would delete (`d<n>`: relid, tid, key columns) and change (`n<n>`)."""

    def __init__(self, g: Graph, predicate: sql.Composable):
        self.g = g
        self.predicate = predicate
        self.index = {t: i for i, t in enumerate(g.deleted)}
        keys: dict[QualifiedName, list[str]] = {t: [] for t in g.deleted}
        for e in g.cascades + g.changes + g.blocks:
            for c in e.ref.ref_columns:
                if c not in keys[e.parent]:
                    keys[e.parent].append(c)
        self.keys = keys

    def name(self, table: QualifiedName) -> sql.Identifier:
        return sql.Identifier(f"d{self.index[table]}")

    def key(self, table: QualifiedName, column: str) -> sql.Identifier:
        return sql.Identifier("d", f"k{self.keys[table].index(column)}")

    def _partition_filter(self, e: Edge) -> sql.Composable:
        """A key to a partition of the parent (or of its partitioned table) meets only rows stored there."""
        if e.ref.ref_table == e.parent:
            return sql.SQL("true")
        return sql.SQL("d.relid IN (SELECT relid FROM pg_partition_tree({}))").format(_regclass(e.ref.ref_table))

    def references(self, e: Edge, alias: str = "c") -> sql.Composed:
        """Rows of e.child (as `alias`) that reference a deleted row of e.parent."""
        return sql.SQL("({}) IN (SELECT {} FROM {} d WHERE {})").format(
            sql.SQL(", ").join(sql.Identifier(alias, c) for c in e.ref.columns),
            sql.SQL(", ").join(self.key(e.parent, c) for c in e.ref.ref_columns),
            self.name(e.parent), self._partition_filter(e))

    def not_deleted(self, table: QualifiedName, alias: str = "c") -> sql.Composable:
        if table not in self.index:
            return sql.SQL("true")
        return sql.SQL("NOT EXISTS (SELECT 1 FROM {} x WHERE x.relid = {a}.tableoid AND x.tid = {a}.ctid)").format(
            self.name(table), a=sql.Identifier(alias))

    def _select(self, table: QualifiedName, alias: str) -> sql.Composed:
        cols: list[sql.Composable] = [sql.SQL("{}.tableoid").format(sql.Identifier(alias)),
                                      sql.SQL("{}.ctid").format(sql.Identifier(alias))]
        cols += [sql.Identifier(alias, c) for c in self.keys[table]]
        return sql.SQL("SELECT {} FROM {} {}").format(sql.SQL(", ").join(cols), table_ref(table), sql.Identifier(alias))

    def deleted_cte(self, table: QualifiedName) -> sql.Composed:
        names = ["relid", "tid"] + [f"k{i}" for i in range(len(self.keys[table]))]
        if table == self.g.root:
            base = sql.SQL("{} WHERE {}").format(self._select(table, "t"), self.predicate)
        else:
            into = [e for e in self.g.cascades if e.child == table and e.parent != table]
            base = sql.SQL("{} WHERE {}").format(self._select(table, "c"), sql.SQL(" OR ").join(
                self.references(e) for e in into))
        selfs = [e for e in self.g.cascades if e.child == table and e.parent == table]
        if selfs:
            on = sql.SQL(" OR ").join(sql.SQL("(({}) = ({}) AND {})").format(
                sql.SQL(", ").join(sql.Identifier("c", c) for c in e.ref.columns),
                sql.SQL(", ").join(self.key(table, c) for c in e.ref.ref_columns),
                self._partition_filter(e)) for e in selfs)
            base = sql.SQL("{} UNION {} JOIN {} d ON {}").format(base, self._select(table, "c"), self.name(table), on)
        return sql.SQL("{}({}) AS ({})").format(self.name(table), sql.SQL(", ").join(map(sql.Identifier, names)), base)

    def changed_condition(self, table: QualifiedName) -> sql.Composed:
        edges = [e for e in self.g.changes if e.child == table]
        return sql.SQL("({}) AND {}").format(sql.SQL(" OR ").join(self.references(e) for e in edges),
                                             self.not_deleted(table))

    def with_(self) -> sql.Composed:
        return sql.SQL("WITH RECURSIVE {}").format(sql.SQL(", ").join(self.deleted_cte(t) for t in self.g.deleted))


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
    sets = _Sets(g, predicate)
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


def count_query(g: Graph, predicate: sql.Composable) -> sql.Composed:
    """One row per table the delete reaches: (what, schema, table, rows): what is "delete" (the root and
    every table a cascade deletes from), "change" (SET NULL / SET DEFAULT) or "block" (RESTRICT / NO ACTION)."""
    sets = _Sets(g, predicate)
    rows = [sql.SQL("SELECT 'delete', {}, {}, count(*) FROM {}").format(
        sql.Literal(t.schema), sql.Literal(t.name), sets.name(t)) for t in g.deleted]
    rows += [sql.SQL("SELECT 'change', {}, {}, count(*) FROM {} c WHERE {}").format(
        sql.Literal(t.schema), sql.Literal(t.name), table_ref(t), sets.changed_condition(t)) for t in g.changed]
    rows += [_blocked(sets, e, sql.SQL("'block', {}, {}, count(*)").format(
        sql.Literal(e.child.schema), sql.Literal(e.child.name))) for e in g.blocks]
    return sql.SQL("{} {}").format(sets.with_(), sql.SQL(" UNION ALL ").join(rows))


def touched(g: Graph, predicate: sql.Composable) -> list[tuple[QualifiedName, str, sql.Composable]]:
    """Per table the delete takes rows from or changes: (table, "delete" or "change", a query of the
    (tableoid, ctid) of those rows), for counting each row once however many deletes reach it."""
    sets = _Sets(g, predicate)
    out: list[tuple[QualifiedName, str, sql.Composable]] = [
        (t, "delete", sql.SQL("{} SELECT relid, tid FROM {}").format(sets.with_(), sets.name(t))) for t in g.deleted]
    out += [(t, "change", sql.SQL("{} SELECT c.tableoid, c.ctid FROM {} c WHERE {}").format(
        sets.with_(), table_ref(t), sets.changed_condition(t))) for t in g.changed]
    return out


def _blocked(sets: _Sets, e: Edge, select: sql.Composable) -> sql.Composed:
    return sql.SQL("SELECT {} FROM {} c WHERE {} AND {}").format(
        select, table_ref(e.child), sets.references(e), sets.not_deleted(e.child))


def refusals(g: Graph, predicate: sql.Composable, what: str, moves: bool = True) -> list[sql.Composed]:
    """Preflight parts (queries whose rows are reasons not to start) for the delete of `what`: rows of a
    RESTRICT / NO ACTION key that would make it fail; when it `moves` the rows (quarantine), what its own
    statements need on the reached tables: privileges, and no row security hiding rows."""
    out = []
    sets = _Sets(g, predicate)
    if g.blocks:
        rows = [sql.SQL("SELECT n || {} FROM ({}) b WHERE n > 0").format(
            sql.Literal(f" row(s) of {e.child} reference rows that {what} would delete "
                        f"(foreign key {e.ref.name} ON DELETE {e.action}): the delete would fail; "
                        "change or remove those rows first"),
            _blocked(sets, e, sql.SQL("count(*) AS n"))) for e in g.blocks]
        out.append(sql.SQL("({} {})").format(sets.with_(), sql.SQL(" UNION ALL ").join(rows)))
    out += [_not_null_refusal(sets, e, what) for e in g.changes]
    if not moves:
        return out
    for t, need in [(t, "DELETE") for t in g.deleted[1:]] + [(t, "UPDATE") for t in g.changed]:
        out.append(sql.SQL("SELECT {} WHERE NOT (has_schema_privilege({s}, 'USAGE') "
                           "AND has_table_privilege({r}, 'SELECT') AND has_table_privilege({r}, {p}))").format(
            sql.Literal(f"no USAGE on its schema, or no SELECT and {need} privilege on {t}, whose rows {what} reaches "
                        "through a foreign key"), s=sql.Literal(t.schema), r=_regclass(t), p=sql.Literal(need)))
    for t in g.reached:
        # the cascade ignores row security, the quarantine's own statements do not: rows hidden from us would
        # be deleted or changed by PostgreSQL without a copy
        out.append(sql.SQL(
            "SELECT {} FROM pg_class c WHERE c.oid = {} AND c.relrowsecurity AND (c.relforcerowsecurity "
            "OR NOT pg_has_role(current_user, c.relowner, 'USAGE')) AND NOT (SELECT r.rolsuper OR r.rolbypassrls "
            "FROM pg_roles r WHERE r.rolname = current_user)").format(
            sql.Literal(f"{t} has row level security, which hides rows that {what} would reach through a foreign "
                        "key: run as a role that bypasses it (BYPASSRLS, or its owner without FORCE)"), _regclass(t)))
    return out


def _not_null_refusal(sets: _Sets, e: Edge, what: str) -> sql.Composed:
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
        count=sql.SQL("{} {}").format(sets.with_(), _blocked(sets, e, sql.SQL("count(*)"))),
        rel=_regclass(e.child), con=sql.Literal(e.ref.name))


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

def of_table(catalog: Catalog, table: Table) -> Graph:
    return graph(catalog.references, table.name, tuple(table.columns))


def widen_orphans(ctx, mode: str, k, step: Step) -> Step:
    """A step that (also) takes the orphans of key table k out (`--orphans mode`), widened to what their
    foreign keys reach; the source table's and `register` take nothing out."""
    if k.is_source or mode == "register":
        return step
    return widen(step, of_table(ctx.catalog, k.table), capture=mode == "quarantine")


def orphaned_now(ctx, k) -> sql.Composable:
    """The orphan predicate over k's rows (alias t) as the database is when the plan is made: the key
    columns of their present type, the master only if it exists (what the counts and the preflight read)."""
    master = ctx.master if ctx.master is not None and ctx.key in ctx.master.columns else None
    src = ctx.source if ctx.source is not None and ctx.source.key_checkable else None
    known = Known(master.name if master else None, master.columns[ctx.key] if master else None,
                  src.name if src else None, src.key if src else None)
    return orphaned(k.key, lookup=Exists(known))


@dataclass(frozen=True)
class Removal:
    """A delete of the plan: what it reaches through foreign keys, counted when the plan is made
    (`measure`) and refused by the preflight when it cannot be done (`preflight_parts`)."""

    graph: Graph
    predicate: sql.Composable      # the rows it deletes, as the database is when the plan is made
    label: str                     # "the quarantine of orphaned rows of s.t"
    moves: bool                    # moved to the quarantine (True) or deleted for good


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

    notes = []
    for removal in removals:
        if removal.graph.quiet:
            continue
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

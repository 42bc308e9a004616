"""What a delete sets off in other tables through their foreign keys, read from the catalog.

Every delete the tool makes (the migration's quarantine of malformed or orphaned rows, `--orphans
delete`, `sessions prune`) meets the foreign keys that reference the table, and PostgreSQL acts on
them: ON DELETE CASCADE deletes the referencing rows (which cascade further), SET NULL / SET DEFAULT
change them, RESTRICT / NO ACTION make the delete fail. `graph()` follows these keys from the catalog
(`Catalog.references`, every declared FK of the database) recursively: children of children, keys
to or on partitions, self-references; every table is visited once, so cycles end. A cascade cycle
through two or more tables is not supported (`CascadeError`); a table's keys to itself are followed to
the end (a recursive query). `DeleteSets` names the rows a delete would delete and change, as CTEs,
and `count_query` / `touched` count them. Pure functions: nothing here connects to a database.

The migration (auditor/fix/cascade.py) and the maintenance commands (auditor/maintenance/) both use it.
"""
from __future__ import annotations

import graphlib
from dataclasses import dataclass

from psycopg import sql

from .catalog import Catalog, QualifiedName, Reference, Table
from .errors import AuditError
from .sqlparts import table_ref

ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


class CascadeError(AuditError):
    """The foreign keys of the database make a delete the tool cannot account for (a cascade cycle)."""


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


def of_table(catalog: Catalog, table: Table) -> Graph:
    """What deleting rows of `table` reaches, over every declared foreign key of the catalog."""
    return graph(catalog.references, table.name, tuple(table.columns))


# --- SQL ---------------------------------------------------------------------------------------------

def regclass(table: QualifiedName) -> sql.Composed:
    """The table's oid, looked up in the catalog (no error for a schema without USAGE, unlike ::regclass)."""
    return sql.SQL("(SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                   "WHERE n.nspname = {} AND c.relname = {})::regclass").format(
        sql.Literal(table.schema), sql.Literal(table.name))


class DeleteSets:
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
        return sql.SQL("d.relid IN (SELECT relid FROM pg_partition_tree({}))").format(regclass(e.ref.ref_table))

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


def count_query(g: Graph, predicate: sql.Composable) -> sql.Composed:
    """One row per table the delete reaches: (what, schema, table, rows): what is "delete" (the root and
    every table a cascade deletes from), "change" (SET NULL / SET DEFAULT) or "block" (RESTRICT / NO ACTION)."""
    sets = DeleteSets(g, predicate)
    rows = [sql.SQL("SELECT 'delete', {}, {}, count(*) FROM {}").format(
        sql.Literal(t.schema), sql.Literal(t.name), sets.name(t)) for t in g.deleted]
    rows += [sql.SQL("SELECT 'change', {}, {}, count(*) FROM {} c WHERE {}").format(
        sql.Literal(t.schema), sql.Literal(t.name), table_ref(t), sets.changed_condition(t)) for t in g.changed]
    rows += [blocked_rows(sets, e, sql.SQL("'block', {}, {}, count(*)").format(
        sql.Literal(e.child.schema), sql.Literal(e.child.name))) for e in g.blocks]
    return sql.SQL("{} {}").format(sets.with_(), sql.SQL(" UNION ALL ").join(rows))


def touched(g: Graph, predicate: sql.Composable) -> list[tuple[QualifiedName, str, sql.Composable]]:
    """Per table the delete takes rows from or changes: (table, "delete" or "change", a query of the
    (tableoid, ctid) of those rows), for counting each row once however many deletes reach it."""
    sets = DeleteSets(g, predicate)
    out: list[tuple[QualifiedName, str, sql.Composable]] = [
        (t, "delete", sql.SQL("{} SELECT relid, tid FROM {}").format(sets.with_(), sets.name(t))) for t in g.deleted]
    out += [(t, "change", sql.SQL("{} SELECT c.tableoid, c.ctid FROM {} c WHERE {}").format(
        sets.with_(), table_ref(t), sets.changed_condition(t))) for t in g.changed]
    return out


def blocked_rows(sets: DeleteSets, e: Edge, select: sql.Composable) -> sql.Composed:
    """`select` over the rows of e.child that reference a deleted row through e and are not deleted themselves."""
    return sql.SQL("SELECT {} FROM {} c WHERE {} AND {}").format(
        select, table_ref(e.child), sets.references(e), sets.not_deleted(e.child))

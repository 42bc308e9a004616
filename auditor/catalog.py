"""Read-only introspection: the tables, columns, partitions, foreign keys and indexes in scope.

One snapshot is taken per scan or plan. A partitioned table is one `Table` (its partitions hang
below it); partitions are never audited as tables of their own.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import psycopg

from .errors import ConfigError
from .keytype import UUID, KeyType
from .rows import one_row

# A dotted name: parts separated by dots, a part in double quotes may contain dots and keeps its case.
_DOTTED = re.compile(r'^(?:"[^"]+"|[^."]+)(?:\.(?:"[^"]+"|[^."]+))*$')


@dataclass(frozen=True, order=True)
class QualifiedName:
    """A catalog name (schema, table), spelled as in the catalog: no quoting, case preserved."""

    schema: str
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"

    @classmethod
    def parse(cls, text: str, what: str) -> QualifiedName:
        parts = split_dotted(text, what)
        if len(parts) != 2:
            raise ConfigError(f"{what} must be schema.table, got {text!r}")
        return cls(*parts)


def split_dotted(text: str, what: str) -> list[str]:
    """Split `a.b.c`; a part in double quotes may contain dots and keeps its case."""
    text = text.strip()
    if not text or not _DOTTED.match(text):
        raise ConfigError(f"{what}: cannot read {text!r} as a dotted name")
    parts = re.findall(r'"([^"]+)"|([^."]+)', text)
    return [quoted or plain for quoted, plain in parts]


# Schemas the tool never audits: the system's and its own.
TOOL_SCHEMAS = ("yumai_audit", "yumai_quarantine")
TEXT_TYPES = {"text", "varchar", "bpchar", "name", "citext"}


@dataclass(frozen=True)
class Column:
    name: str
    type: str          # format_type(), e.g. "character varying(64)"
    typname: str       # the base type's name, e.g. "varchar"
    not_null: bool
    key_type: KeyType = UUID    # for a key column: the key type it is read as (the context sets it)

    @property
    def is_text(self) -> bool:
        return self.typname in TEXT_TYPES

    @property
    def is_uuid(self) -> bool:
        return self.typname == "uuid"

    @property
    def is_native_key(self) -> bool:
        """The column holds the key as it is, without conversion (the key type, or an integer width of it)."""
        return self.key_type.native(self.typname)


@dataclass(frozen=True)
class Partition:
    name: QualifiedName
    bound: str          # pg_get_expr(relpartbound), "DEFAULT" for the default partition
    is_leaf: bool
    level: int
    bytes: int
    estimated_rows: int

    @property
    def is_default(self) -> bool:
        return self.bound == "DEFAULT"


@dataclass(frozen=True)
class ForeignKey:
    name: str
    table: QualifiedName
    columns: tuple[str, ...]
    ref_table: QualifiedName
    ref_columns: tuple[str, ...]
    validated: bool
    on_delete: str      # a=no action, r=restrict, c=cascade, n=set null, d=set default
    inherited: bool     # created by the parent's FK (conparentid <> 0)
    on_update: str = "a"        # same letters as on_delete
    match: str = "s"            # s=simple, f=full, p=partial
    deferrable: bool = False
    deferred: bool = False

    @property
    def references(self) -> str:
        return f"{self.ref_table}.{','.join(self.ref_columns)}"


@dataclass(frozen=True)
class Reference:
    """A foreign key anywhere in the database, seen from the table it references (what a delete there
    sets off). Only declared constraints (not the copies PostgreSQL makes on partitions); both ends
    carry their partition root, so a delete from a partitioned table meets the keys referencing one of
    its partitions, and a key declared on one partition only is that partition's."""

    name: str
    table: QualifiedName               # the referencing relation (holds the constraint)
    table_root: QualifiedName          # its partition root (itself when it is not a partition)
    table_columns: tuple[str, ...]     # every column of the referencing relation, in order
    columns: tuple[str, ...]           # the referencing columns
    ref_table: QualifiedName           # the referenced relation as declared (may be a partition)
    ref_root: QualifiedName
    ref_columns: tuple[str, ...]
    on_delete: str                     # a=no action, r=restrict, c=cascade, n=set null, d=set default


@dataclass(frozen=True)
class Index:
    name: str
    table: QualifiedName
    columns: tuple[str, ...]   # key columns in order; expressions appear as ""
    valid: bool
    unique: bool
    primary: bool
    partial: bool = False      # has a WHERE clause (cannot be a foreign key's target)
    method: str = "btree"      # the access method (pg_am.amname)


@dataclass(frozen=True)
class ColumnStats:
    """What ANALYZE last recorded about a column (`pg_stats`); absent when the table was never analyzed."""

    null_frac: float
    n_distinct: float      # > 0: a count; < 0: minus the fraction of rows (-1: unique)
    avg_width: int
    low: int | None        # integer columns: the smallest and largest value seen in the sample
    high: int | None

    def distinct(self, rows: int) -> float:
        return self.n_distinct if self.n_distinct >= 0 else -self.n_distinct * rows


@dataclass
class Table:
    oid: int
    name: QualifiedName
    kind: str                          # "r" ordinary, "p" partitioned
    columns: dict[str, Column]
    primary_key: tuple[str, ...]
    estimated_rows: int
    bytes: int
    partitions: list[Partition] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    partition_foreign_keys: list[ForeignKey] = field(default_factory=list)  # FKs declared on partitions
    indexes: list[Index] = field(default_factory=list)
    owner: str = ""

    @property
    def is_partitioned(self) -> bool:
        return self.kind == "p"

    @property
    def leaf_partitions(self) -> list[Partition]:
        return [p for p in self.partitions if p.is_leaf]

    def fks_on(self, column: str) -> list[ForeignKey]:
        return [fk for fk in self.foreign_keys if fk.columns == (column,)]

    def has_leading_index(self, column: str, ordered: bool = False) -> bool:
        """A valid index leading with `column`; `ordered`: one that can be read in its order, whole (btree,
        no WHERE)."""
        return any(ix.valid and ix.columns[:1] == (column,)
                   and (not ordered or (ix.method == "btree" and not ix.partial)) for ix in self.indexes)


@dataclass
class Catalog:
    database: str
    server_version: str
    server_version_num: int
    tables: dict[QualifiedName, Table]
    current_user: str = ""
    is_superuser: bool = False
    in_recovery: bool = False
    invalid_indexes: list[Index] = field(default_factory=list)  # anywhere in scope, partitions included
    references: list[Reference] = field(default_factory=list)   # every declared FK of the database
    column_stats: dict[tuple[QualifiedName, str], ColumnStats] = field(default_factory=dict)

    def get(self, name: QualifiedName) -> Table | None:
        return self.tables.get(name)


_TABLES = """
SELECT c.oid, n.nspname, c.relname, c.relkind, pg_get_userbyid(c.relowner),
       greatest(c.reltuples, 0)::bigint, pg_total_relation_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%%'
  AND n.nspname <> ALL(%(tool_schemas)s)
  AND (cardinality(%(schemas)s::text[]) = 0 OR n.nspname = ANY(%(schemas)s::text[]))
ORDER BY n.nspname, c.relname
"""

_COLUMNS = """
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod),
       coalesce(bt.typname, t.typname), a.attnotnull
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
WHERE a.attrelid = ANY(%(oids)s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

_PARTITIONS = """
SELECT pt.root, n.nspname, c.relname, coalesce(pg_get_expr(c.relpartbound, c.oid), ''),
       pt.isleaf, pt.level, pg_total_relation_size(c.oid), greatest(c.reltuples, 0)::bigint
FROM (SELECT r AS root, (pg_partition_tree(r)).* FROM unnest(%(oids)s::oid[]) AS r) pt
JOIN pg_class c ON c.oid = pt.relid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE pt.level > 0
ORDER BY pt.root, pt.level, n.nspname, c.relname
"""

# Foreign keys of the tables in scope and of their partitions (partition FKs are listed on the
# partition's root so that drift between siblings can be seen).
_FKS = """
SELECT con.conname, con.conrelid, n.nspname, c.relname, fn.nspname, fc.relname,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(num, ord)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num ORDER BY k.ord)::text[],
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(num, ord)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num ORDER BY k.ord)::text[],
       con.convalidated, con.confdeltype::text, con.conparentid <> 0,
       con.confupdtype::text, con.confmatchtype::text, con.condeferrable, con.condeferred
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class fc ON fc.oid = con.confrelid JOIN pg_namespace fn ON fn.oid = fc.relnamespace
WHERE con.contype = 'f' AND con.conrelid = ANY(%(oids)s)
ORDER BY n.nspname, c.relname, con.conname
"""

# Every declared foreign key of the database, whatever the schema (a delete cascades across schemas):
# conparentid = 0 leaves out the copies PostgreSQL makes for partitions.
_REFERENCES = """
SELECT con.conname, n.nspname, c.relname, rn.nspname, rc.relname,
       ARRAY(SELECT a.attname FROM pg_attribute a WHERE a.attrelid = con.conrelid AND a.attnum > 0
             AND NOT a.attisdropped ORDER BY a.attnum)::text[],
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(num, ord)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num ORDER BY k.ord)::text[],
       fn.nspname, fc.relname, frn.nspname, frc.relname,
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(num, ord)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num ORDER BY k.ord)::text[],
       con.confdeltype::text
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class rc ON rc.oid = coalesce(pg_partition_root(con.conrelid), con.conrelid)
JOIN pg_namespace rn ON rn.oid = rc.relnamespace
JOIN pg_class fc ON fc.oid = con.confrelid JOIN pg_namespace fn ON fn.oid = fc.relnamespace
JOIN pg_class frc ON frc.oid = coalesce(pg_partition_root(con.confrelid), con.confrelid)
JOIN pg_namespace frn ON frn.oid = frc.relnamespace
WHERE con.contype = 'f' AND con.conparentid = 0
ORDER BY fn.nspname, fc.relname, n.nspname, c.relname, con.conname
"""

_INDEXES = """
SELECT i.indrelid, ic.relname,
       ARRAY(SELECT coalesce(a.attname, '') FROM unnest(i.indkey[0:i.indnkeyatts - 1]) WITH ORDINALITY k(num, ord)
             LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.num ORDER BY k.ord)::text[],
       i.indisvalid, i.indisunique, i.indisprimary, n.nspname, i.indpred IS NOT NULL, am.amname::text
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace
JOIN pg_am am ON am.oid = ic.relam
WHERE i.indrelid = ANY(%(oids)s)
ORDER BY ic.relname
"""


def _qn(schema: str, name: str) -> QualifiedName:
    return QualifiedName(schema, name)


def read_catalog(conn: psycopg.Connection, schemas: tuple[str, ...] = ()) -> Catalog:
    """Take one snapshot of the catalog. Needs no privilege beyond CONNECT."""
    cur = conn.cursor()
    db, version, version_num, user, superuser, recovery = one_row(cur.execute(
        "SELECT current_database(), current_setting('server_version'), "
        "current_setting('server_version_num')::int, current_user, "
        "coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false), pg_is_in_recovery()"
    ))
    params = {"tool_schemas": list(TOOL_SCHEMAS), "schemas": list(schemas)}
    tables: dict[QualifiedName, Table] = {}
    by_oid: dict[int, Table] = {}
    for oid, schema, name, kind, owner, est, size in cur.execute(_TABLES, params):
        table = Table(oid=oid, name=_qn(schema, name), kind=kind, columns={}, primary_key=(),
                      estimated_rows=int(est), bytes=int(size), owner=owner)
        tables[table.name] = table
        by_oid[oid] = table
    oids = list(by_oid)
    if oids:
        for relid, col, typ, typname, notnull in cur.execute(_COLUMNS, {"oids": oids}):
            by_oid[relid].columns[col] = Column(col, typ, typname, notnull)
        partitioned = [o for o, t in by_oid.items() if t.is_partitioned]
        leaf_oids: dict[int, int] = {}
        if partitioned:
            for root, schema, name, bound, leaf, level, size, est in cur.execute(_PARTITIONS, {"oids": partitioned}):
                by_oid[root].partitions.append(Partition(_qn(schema, name), bound, leaf, level, int(size), int(est)))
            for table in by_oid.values():
                if table.partitions:
                    table.bytes = sum(p.bytes for p in table.partitions if p.is_leaf) + table.bytes
                    table.estimated_rows = sum(p.estimated_rows for p in table.partitions if p.is_leaf)
            part_rows = cur.execute(
                "SELECT c.oid, pt.root FROM (SELECT r AS root, (pg_partition_tree(r)).* "
                "FROM unnest(%(oids)s::oid[]) r) pt JOIN pg_class c ON c.oid = pt.relid WHERE pt.level > 0",
                {"oids": partitioned},
            ).fetchall()
            leaf_oids = {oid: root for oid, root in part_rows}
        all_oids = oids + list(leaf_oids)
        for (name, relid, schema, rel, fschema, frel, cols, fcols, valid, deltype, inherited,
             updtype, matchtype, deferrable, deferred) in cur.execute(_FKS, {"oids": all_oids}):
            fk = ForeignKey(name, _qn(schema, rel), tuple(cols), _qn(fschema, frel), tuple(fcols),
                            valid, deltype, inherited, updtype, matchtype, deferrable, deferred)
            if relid in by_oid:
                by_oid[relid].foreign_keys.append(fk)
            else:
                by_oid[leaf_oids[relid]].partition_foreign_keys.append(fk)
        invalid: list[Index] = []
        for relid, name, cols, valid, unique, primary, schema, partial, method in cur.execute(
                _INDEXES, {"oids": all_oids}):
            owner_table = by_oid.get(relid) or by_oid[leaf_oids[relid]]
            index = Index(name, owner_table.name, tuple(cols), valid, unique, primary, partial, method)
            if relid in by_oid:
                owner_table.indexes.append(index)
                if primary:
                    owner_table.primary_key = tuple(cols)
            if not valid:
                invalid.append(Index(f"{schema}.{name}", owner_table.name, tuple(cols), valid, unique, primary))
    references = [Reference(name, _qn(s, t), _qn(rs, rt), tuple(cols), tuple(fk), _qn(fs, ft), _qn(frs, frt),
                            tuple(ref), deltype)
                  for name, s, t, rs, rt, cols, fk, fs, ft, frs, frt, ref, deltype in cur.execute(_REFERENCES)]
    return Catalog(database=db, server_version=version, server_version_num=version_num, tables=tables,
                   current_user=user, is_superuser=superuser, in_recovery=recovery,
                   invalid_indexes=invalid if oids else [], references=references,
                   column_stats=_column_stats(cur, by_oid) if oids else {})


# Statistics of the key-like columns (integers, text, uuid), as ANALYZE left them: read-only, and
# empty for a table never analyzed (the implied-FK probes then measure what they need themselves).
_STATS = """
SELECT c.oid, s.attname, s.null_frac, s.n_distinct, s.avg_width, s.histogram_bounds::text, s.most_common_vals::text
FROM pg_stats s
JOIN pg_namespace n ON n.nspname = s.schemaname
JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.tablename
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = s.attname
JOIN pg_type t ON t.oid = a.atttypid
WHERE c.oid = ANY(%(oids)s) AND s.inherited = (c.relkind = 'p')
  AND t.typname IN ('int2', 'int4', 'int8', 'text', 'varchar', 'bpchar', 'uuid')
"""


def _integers(array_text: str | None) -> list[int]:
    if not array_text:
        return []
    try:
        return [int(v) for v in array_text.strip("{}").split(",") if v]
    except ValueError:   # not an integer column
        return []


def _column_stats(cur, by_oid: dict[int, Table]) -> dict[tuple[QualifiedName, str], ColumnStats]:
    out = {}
    for relid, col, null_frac, n_distinct, width, bounds, common in cur.execute(_STATS, {"oids": list(by_oid)}):
        table = by_oid[relid]
        values = _integers(bounds) + _integers(common) if table.columns[col].typname.startswith("int") else []
        out[(table.name, col)] = ColumnStats(float(null_frac), float(n_distinct), int(width or 0),
                                             min(values) if values else None, max(values) if values else None)
    return out

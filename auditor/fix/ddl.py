"""Stateless DDL step builders and the catalog queries their guards use.

Each builder returns steps (data); it keeps nothing. The planners (`session_plan`, `schema_plan`)
put what a builder returns into their `Draft`. Indexes are built CONCURRENTLY (ON ONLY the parent,
one per partition, then ATTACH on a partitioned table); a foreign key is added NOT VALID and
validated in a transaction of its own (PostgreSQL 18 on a partitioned parent; 12-17 per partition,
then the parent's FK attaches them).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

from psycopg import sql

from yumai_audit.checks.predicates import table_ref

from ..catalog import ForeignKey, Partition, QualifiedName, Table
from ..pgversion import NOT_VALID_FK_ON_PARTITIONED
from . import partition_groups
from .plan import PlanError
from .steps import Kind, LockMode, Operation, Step

# PostgreSQL 18 accepts ADD FOREIGN KEY ... NOT VALID on a partitioned table; 12-17 refuse it.
PG_NOT_VALID_ON_PARTITIONED = NOT_VALID_FK_ON_PARTITIONED


def short_name(*parts: str, suffix: str) -> str:
    """An identifier from parts, at most 63 bytes (PostgreSQL's limit), unique through a hash when cut."""
    name = "_".join(parts + (suffix,))
    if len(name.encode()) <= 63:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    head = "_".join(parts)
    while len(f"{head}_{digest}_{suffix}".encode()) > 63:
        head = head[:-1]
    return f"{head}_{digest}_{suffix}"


def relid(name: QualifiedName) -> sql.Composable:
    return sql.SQL("(SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                   "WHERE n.nspname = {} AND c.relname = {})").format(sql.Literal(name.schema), sql.Literal(name.name))


def attnum(name: QualifiedName, column: str) -> sql.Composable:
    return sql.SQL("(SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = {} AND a.attname = {})").format(
        relid(name), sql.Literal(column))


def fk_exists(table: QualifiedName, columns: str | tuple[str, ...], ref_table: QualifiedName, *, validated: bool,
              ref_columns: tuple[str, ...] = ()) -> sql.Composable:
    """A foreign key on `table` (these columns, in order) to `ref_table` (and, given, these columns)."""
    columns = (columns,) if isinstance(columns, str) else columns
    ref = sql.SQL("")
    if ref_columns:
        ref = sql.SQL(" AND k.confkey = ARRAY[{}]::int2[]").format(
            sql.SQL(", ").join(attnum(ref_table, c) for c in ref_columns))
    return sql.SQL("SELECT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.contype = 'f' AND k.conrelid = {} "
                   "AND k.confrelid = {} AND k.conkey = ARRAY[{}]::int2[]{}{})").format(
        relid(table), relid(ref_table), sql.SQL(", ").join(attnum(table, c) for c in columns), ref,
        sql.SQL(" AND k.convalidated") if validated else sql.SQL(""))


# pg_constraint's letters, as ADD CONSTRAINT spells them
FK_ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


@dataclass(frozen=True)
class FkSpec:
    """What a foreign key enforces, independent of the table it is added to (a parent or a partition)."""

    columns: tuple[str, ...]
    ref_table: QualifiedName
    ref_columns: tuple[str, ...]
    on_delete: str = "a"        # pg_constraint letters (FK_ACTIONS)
    on_update: str = "a"
    match: str = "s"            # s=simple, f=full
    deferrable: bool = False
    deferred: bool = False

    @classmethod
    def of(cls, fk: ForeignKey) -> "FkSpec":
        return cls(fk.columns, fk.ref_table, fk.ref_columns, fk.on_delete, fk.on_update, fk.match,
                   fk.deferrable, fk.deferred)

    def __post_init__(self):
        if self.on_delete not in FK_ACTIONS or self.on_update not in FK_ACTIONS or self.match not in "sf":
            raise PlanError(f"cannot spell the foreign key ({', '.join(self.columns)}) -> {self.ref_table}: "
                            f"actions {self.on_delete!r}/{self.on_update!r}, match {self.match!r}")

    def definition(self, not_valid: bool) -> sql.Composable:
        """`FOREIGN KEY (...) REFERENCES ... [MATCH FULL] [ON DELETE x] [ON UPDATE x] [DEFERRABLE ...] [NOT VALID]`."""
        out = [sql.SQL("FOREIGN KEY ({}) REFERENCES {} ({})").format(
            sql.SQL(", ").join(map(sql.Identifier, self.columns)), table_ref(self.ref_table),
            sql.SQL(", ").join(map(sql.Identifier, self.ref_columns)))]
        if self.match == "f":
            out.append(sql.SQL("MATCH FULL"))
        if self.on_delete != "a":
            out.append(sql.SQL("ON DELETE " + FK_ACTIONS[self.on_delete]))
        if self.on_update != "a":
            out.append(sql.SQL("ON UPDATE " + FK_ACTIONS[self.on_update]))
        if self.deferrable:
            out.append(sql.SQL("DEFERRABLE INITIALLY DEFERRED" if self.deferred else "DEFERRABLE"))
        if not_valid:
            out.append(sql.SQL("NOT VALID"))
        return sql.SQL(" ").join(out)

    def exists(self, table: QualifiedName, *, validated: bool) -> sql.Composable:
        return fk_exists(table, self.columns, self.ref_table, validated=validated, ref_columns=self.ref_columns)


def leading_index_exists(table: QualifiedName, column: str, name: str | None = None,
                         ordered: bool = False) -> sql.Composable:
    """A valid index whose first column is `column` (or, with `name`, that index, valid); `ordered`: a
    btree without WHERE (one a walk in key order can read)."""
    which = sql.SQL("ic.relname = {}").format(sql.Literal(name)) if name else sql.SQL("i.indkey[0] = {}").format(
        attnum(table, column))
    if ordered:
        which = sql.SQL("{} AND i.indpred IS NULL AND ic.relam = (SELECT oid FROM pg_am WHERE amname = 'btree')").format(
            which)
    return sql.SQL("SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
                   "WHERE i.indrelid = {} AND i.indisvalid AND {})").format(relid(table), which)


def column_is_uuid(table: QualifiedName, column: str) -> sql.Composable:
    return sql.SQL("(SELECT a.atttypid = 'uuid'::regtype FROM pg_attribute a WHERE a.attrelid = {} AND a.attname = {})"
                   ).format(relid(table), sql.Literal(column))




@dataclass
class Built:
    """What a builder made: its steps, in order, the ids after which its result is in place, and the
    index names it claims ((schema, index, table, column): the preflight checks they are free)."""

    steps: list[Step] = field(default_factory=list)
    last: list[str] = field(default_factory=list)
    claims: list[tuple[str, str, str, str]] = field(default_factory=list)

    def add(self, step: Step) -> Step:
        self.steps.append(step)
        return step

    def extend(self, other: "Built") -> "Built":
        self.steps += other.steps
        self.claims += other.claims
        return other


def concurrent_index(step_id: str, table: QualifiedName, column: str, idx: str, after, guard, *,
                     target: str, repairs: tuple[str, ...]) -> Step:
    return Step(
        id=step_id, operation=Operation.INDEX,
        description=f"CREATE INDEX CONCURRENTLY {idx} on {table} ({column}); writers keep going",
        statements=(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(table.schema, idx)),
                    sql.SQL("CREATE INDEX CONCURRENTLY {} ON {} ({})").format(
                        sql.Identifier(idx), table_ref(table), sql.Identifier(column))),
        lock=LockMode.SHARE_UPDATE_EXCLUSIVE, tables=(str(table),), depends_on=tuple(after),
        transactional=False, guard=guard, changes=(str(table),), target=target, column=column, repairs=repairs)


def leading_index_steps(table: Table, column: str, after: list[str], suffix: str = "",
                        repairs: tuple[str, ...] = (), ordered: bool = False) -> Built:
    """Steps that leave a valid index on `table` leading with `column` (none when there is one):
    CONCURRENTLY on an ordinary table; ON ONLY the parent, CONCURRENTLY per partition and ATTACH on
    a partitioned one. `suffix` keeps step ids apart when one table gets several such indexes.
    `ordered`: an index that can be read in key order (btree, no WHERE); another kind does not count."""
    out = Built()
    if table.has_leading_index(column, ordered):
        return out
    tname = table.name
    name = str(tname)
    idx = short_name(tname.name, column, suffix="idx")
    out.claims.append((tname.schema, idx, tname.name, column))
    if not table.is_partitioned:
        out.last = [out.add(concurrent_index(f"index:{name}{suffix}", tname, column, idx, after,
                                             leading_index_exists(tname, column, ordered=ordered), target=name,
                                             repairs=repairs)).id]
        return out
    parent = out.add(Step(
        id=f"index:{name}{suffix}", operation=Operation.INDEX_PARENT,
        description=f"Index on {name} ({column}) ON ONLY the parent (attached below)",
        statements=(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON ONLY {} ({})").format(
            sql.Identifier(idx), table_ref(tname), sql.Identifier(column)),),
        lock=LockMode.SHARE, tables=(name,), depends_on=tuple(after),
        guard=sql.SQL("SELECT EXISTS (SELECT 1 FROM pg_class ic JOIN pg_index i ON i.indexrelid = ic.oid "
                      "WHERE i.indrelid = {} AND ic.relname = {}) OR ({})").format(
            relid(tname), sql.Literal(idx), leading_index_exists(tname, column, ordered=ordered)),
        changes=(name,), target=name, column=column, repairs=repairs))
    out.last = [parent.id]
    for group in partition_groups.ddl_groups(table, partition_groups.INDEX_PARTITIONS):
        if len(group) > 1:
            out.last.append(out.add(index_group(group, table, column, idx, parent.id, suffix, repairs, out)).id)
            continue
        p = group[0]
        pidx = short_name(p.name.name, column, suffix="idx")
        out.claims.append((p.name.schema, pidx, p.name.name, column))
        build = out.add(concurrent_index(f"index:{p.name}{suffix}", p.name, column, pidx, [parent.id],
                                         leading_index_exists(p.name, column, pidx), target=name, repairs=repairs))
        attach = out.add(Step(
            id=f"attach-index:{p.name}{suffix}", operation=Operation.ATTACH_INDEX,
            description=f"Attach index {pidx} to {idx} (the tables: ACCESS SHARE; the indexes: "
            "SHARE UPDATE EXCLUSIVE and ACCESS EXCLUSIVE, on the index only)",
            statements=(sql.SQL("ALTER INDEX {} ATTACH PARTITION {}").format(
                sql.Identifier(tname.schema, idx), sql.Identifier(p.name.schema, pidx)),),
            lock=LockMode.ACCESS_SHARE, tables=(name, str(p.name)), depends_on=(build.id,),
            guard=sql.SQL("SELECT ({}) OR ({})").format(attached_index(p.name, pidx, idx),
                                                        leading_index_exists(tname, column, ordered=ordered)),
            changes=(name,), target=name, column=column, repairs=repairs))
        out.last.append(attach.id)
    return out


def attached_index(partition: QualifiedName, pidx: str, idx: str) -> sql.Composable:
    """The partition's index `pidx` is attached to the parent's `idx`."""
    return sql.SQL("SELECT EXISTS (SELECT 1 FROM pg_inherits h JOIN pg_class pc ON pc.oid = h.inhrelid "
                   "JOIN pg_class ic ON ic.oid = h.inhparent WHERE pc.relname = {} AND ic.relname = {} "
                   "AND pc.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = {}))").format(
        sql.Literal(pidx), sql.Literal(idx), sql.Literal(partition.schema))


def index_group(group: list[Partition], table: Table, column: str, idx: str, after: str, suffix: str,
                repairs: tuple[str, ...], out: Built) -> Step:
    """Small partitions' indexes in one transaction (partition_groups.py): built (not CONCURRENTLY: SHARE on
    each, for the milliseconds their rows take) and attached to the parent's `idx`."""
    name = str(table.name)
    statements: list[sql.Composable] = []
    done: list[sql.Composable] = []
    for p in group:
        pidx = short_name(p.name.name, column, suffix="idx")
        out.claims.append((p.name.schema, pidx, p.name.name, column))
        statements += [sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                           sql.Identifier(pidx), table_ref(p.name), sql.Identifier(column)),
                       sql.SQL("ALTER INDEX {} ATTACH PARTITION {}").format(
                           sql.Identifier(table.name.schema, idx), sql.Identifier(p.name.schema, pidx))]
        done.append(sql.SQL("({})").format(attached_index(p.name, pidx, idx)))
    rows = sum(p.estimated_rows for p in group)
    return Step(
        id=partition_groups.group_id("index", group, suffix), operation=Operation.INDEX,
        description=f"Index {len(group)} small partitions of {name} ({group[0].name} ... {group[-1].name}, about "
        f"{rows} rows) on ({column}) and attach them to {idx}, in one transaction: SHARE on each for the "
        "milliseconds its rows take, rather than a CONCURRENTLY step each",
        statements=tuple(statements), lock=LockMode.SHARE, tables=tuple(str(p.name) for p in group),
        depends_on=(after,), guard=sql.SQL("SELECT {}").format(sql.SQL(" AND ").join(done)),
        changes=tuple(str(p.name) for p in group), target=name, column=column, repairs=repairs)


def fk_group(step_id: str, group: list[Partition], spec: FkSpec, names: dict, deps, *, target: str,
             repairs: tuple[str, ...]) -> Step:
    """Small partitions' foreign keys in one transaction (partition_groups.py), each added validated: SHARE ROW
    EXCLUSIVE on the partitions and the referenced table for the milliseconds their rows take to check."""
    ref = str(spec.ref_table)
    return Step(
        id=step_id, operation=Operation.FK_ADD,
        description=f"Foreign keys of {len(group)} small partitions ({group[0].name} ... {group[-1].name}) -> {ref} "
        f"ON DELETE {FK_ACTIONS[spec.on_delete]}, added validated in one transaction (their rows checked at once; "
        "brief locks) rather than NOT VALID and VALIDATE steps each",
        statements=tuple(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
            table_ref(p.name), sql.Identifier(names[p.name]), spec.definition(False)) for p in group),
        lock=LockMode.SHARE_ROW_EXCLUSIVE, tables=(*(str(p.name) for p in group), ref), depends_on=tuple(deps),
        guard=sql.SQL("SELECT {}").format(sql.SQL(" AND ").join(
            sql.SQL("({})").format(spec.exists(p.name, validated=True)) for p in group)),
        changes=tuple(str(p.name) for p in group), target=target, column=",".join(spec.columns), repairs=repairs)


def add_fk(step_id: str, table: QualifiedName, spec: FkSpec, constraint: str, deps, not_valid: bool = True, *,
           target: str = "", repairs: tuple[str, ...] = ()) -> Step:
    """ADD CONSTRAINT ... NOT VALID (new rows checked, no scan; a brief lock), or without NOT VALID on a
    partitioned parent whose partitions all hold the validated FK already (attached, no scan)."""
    ref = str(spec.ref_table)
    return Step(
        id=step_id, operation=Operation.FK_ADD,
        description=f"Foreign key {constraint} {table}({', '.join(spec.columns)}) -> {ref} "
        f"ON DELETE {FK_ACTIONS[spec.on_delete]}"
        + (" NOT VALID (checks new rows only; brief lock)" if not_valid else
           f" on the parent (attaches the validated partition keys, no scan; a brief ACCESS EXCLUSIVE on {ref} "
           "while its triggers are re-created)"),
        statements=(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
            table_ref(table), sql.Identifier(constraint), spec.definition(not_valid)),),
        # attaching the partitions' keys re-creates the referenced table's triggers: PostgreSQL takes
        # ACCESS EXCLUSIVE on it for that instant (catalog work only, under lock_timeout)
        lock=LockMode.SHARE_ROW_EXCLUSIVE if not_valid else LockMode.ACCESS_EXCLUSIVE,
        tables=(str(table), ref) if not_valid else (ref,), depends_on=tuple(deps),
        guard=spec.exists(table, validated=False), changes=(str(table),), target=target or str(table),
        column=",".join(spec.columns), repairs=repairs)


def validate_fk(step_id: str, table: QualifiedName, spec: FkSpec, constraint: str, deps, *,
                target: str = "", repairs: tuple[str, ...] = ()) -> Step:
    return Step(
        id=step_id, operation=Operation.FK_VALIDATE,
        description=f"VALIDATE CONSTRAINT {constraint} on {table} (reads every row; writers keep going)",
        statements=(sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
            table_ref(table), sql.Identifier(constraint)),),
        lock=LockMode.SHARE_UPDATE_EXCLUSIVE, tables=(str(table),), depends_on=tuple(deps),
        guard=spec.exists(table, validated=True), changes=(str(table),), target=target or str(table),
        column=",".join(spec.columns), repairs=repairs)


def fk_sequence(version: int, table: Table, spec: FkSpec, constraint: str, pre: list[str], *, suffix: str = "",
                whole: bool = False, settle: Callable[[list[str]], Built] | None = None,
                partition_constraint: Callable | None = None, repairs: tuple[str, ...] = ()) -> Built:
    """FK NOT VALID, then VALIDATE in a transaction of its own; on a partitioned table before
    PostgreSQL 18 (which refuses NOT VALID there): per partition, then the FK on the parent, which
    attaches them. `whole`: on the table itself whatever the version (its NOT VALID FK exists).
    `settle(deps)` makes steps that run between NOT VALID and VALIDATE. `last` is the final step."""
    out = Built()
    name = str(table.name)

    def settled(deps: list[str]) -> list[str]:
        if settle is None:
            return deps
        between = out.extend(settle(deps))
        return between.last or deps

    if not table.is_partitioned or version >= PG_NOT_VALID_ON_PARTITIONED or whole:
        added = out.add(add_fk(f"fk-add:{name}{suffix}", table.name, spec, constraint, pre, target=name,
                               repairs=repairs))
        out.last = [out.add(validate_fk(f"fk-validate:{name}{suffix}", table.name, spec, constraint,
                                        settled([added.id]), target=name, repairs=repairs)).id]
        return out
    names = {p.name: partition_constraint(p) if partition_constraint else constraint
             for p in table.leaf_partitions}
    groups = partition_groups.ddl_groups(table, partition_groups.FK_PARTITIONS)
    alone = [g[0] for g in groups if len(g) == 1]
    adds = [out.add(add_fk(f"fk-add:{p.name}{suffix}", p.name, spec, names[p.name], pre, target=name,
                           repairs=repairs)).id for p in alone]
    after = settled(adds or list(pre))
    validated = [out.add(validate_fk(f"fk-validate:{p.name}{suffix}", p.name, spec, names[p.name], after,
                                     target=name, repairs=repairs)).id for p in alone]
    # small partitions: after the catch-up that settles the others, their keys added validated, a group a step
    validated += [out.add(fk_group(partition_groups.group_id("fk-add", g, suffix), g, spec, names, after,
                                   target=name, repairs=repairs)).id for g in groups if len(g) > 1]
    out.last = [out.add(add_fk(f"fk-add:{name}{suffix}", table.name, spec, constraint, validated, not_valid=False,
                               target=name, repairs=repairs)).id]
    return out


def verify_fks(step_id: str, description: str, planned: list[tuple[str, sql.Composable]], after: list[str]) -> Step:
    """A check step, last: every foreign key planned (what, "validated FK exists" query) is there and valid."""
    return Step(
        id=step_id, operation=Operation.VERIFY, description=description,
        statements=(sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {} WHERE NOT ({})").format(sql.Literal(f"{what}: no validated foreign key"), exists)
            for what, exists in planned),),
        lock=LockMode.ACCESS_SHARE, tables=(), depends_on=tuple(after), kind=Kind.CHECK)

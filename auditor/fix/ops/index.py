"""Operation: an index leading with a column, built without blocking writers.

CONCURRENTLY on an ordinary table; on a partitioned one: ON ONLY the parent (a catalog entry),
CONCURRENTLY on each partition, then ATTACH each to the parent's. Guard: a valid index leading with
the column (`leading_index_exists`). The index names a plan claims must be free, or name an index on
the same table and column (`refusals`): a step drops an invalid index of its own name before building it.
"""
from __future__ import annotations

import re

from psycopg import sql

from yumai_audit.checks.unindexed_fk_columns import UnindexedFkColumns

from ...catalog import Partition, QualifiedName, Table
from ...engine.steps import LockMode, Step
from ...operations import Operation
from ...sqlparts import table_ref
from .. import partition_groups
from ..ddl import Built, attnum, relid, short_name
from . import Declared, Deliberate, IndexClaim, Needs

REPAIRS = (UnindexedFkColumns.id,)   # a key column without an index leading with it

LINT = (
    Deliberate(("require-concurrent-index-creation",), Operation.INDEX_PARENT,
               re.compile(r"^CREATE INDEX .* ON ONLY ", re.S),
               "ON ONLY the partitioned parent: a catalog entry with no rows (PostgreSQL cannot build it "
               "CONCURRENTLY); each partition's index is built CONCURRENTLY and attached to it"),
    Deliberate(("prefer-robust-stmts",), Operation.INDEX, re.compile(r"^CREATE (UNIQUE )?INDEX CONCURRENTLY \"", re.S),
               "rerunnable: the DROP INDEX CONCURRENTLY IF EXISTS before it removes the invalid leftover of an "
               "interrupted build, which IF NOT EXISTS would keep"),
    Deliberate(("require-concurrent-index-creation",), Operation.INDEX,
               re.compile(r"^CREATE INDEX IF NOT EXISTS ", re.S),
               "a small partition, with its small siblings in one transaction (fix/partition_groups.py): "
               "SHARE for the milliseconds its rows take, rather than a CONCURRENTLY step each",
               lambda step: len(step.statements) > 1),
)


def leading_index_exists(table: QualifiedName, column: str, name: str | None = None,
                         ordered: bool = False) -> sql.Composed:
    """A valid index whose first column is `column` (or, with `name`, that index, valid); `ordered`: a
    btree without WHERE (one a walk in key order can read)."""
    which = sql.SQL("ic.relname = {}").format(sql.Literal(name)) if name else sql.SQL("i.indkey[0] = {}").format(
        attnum(table, column))
    if ordered:
        which = sql.SQL("{} AND i.indpred IS NULL "
                        "AND ic.relam = (SELECT oid FROM pg_am WHERE amname = 'btree')").format(which)
    return sql.SQL("SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
                   "WHERE i.indrelid = {} AND i.indisvalid AND {})").format(relid(table), which)


def concurrent_index(step_id: str, table: QualifiedName, column: str, idx: str, after, guard, *,
                     target: str, repairs: tuple[str, ...]) -> Step:
    return Declared(
        id=step_id, operation=Operation.INDEX,
        description=f"CREATE INDEX CONCURRENTLY {idx} on {table} ({column}); writers keep going",
        statements=(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(table.schema, idx)),
                    sql.SQL("CREATE INDEX CONCURRENTLY {} ON {} ({})").format(
                        sql.Identifier(idx), table_ref(table), sql.Identifier(column))),
        lock=LockMode.SHARE_UPDATE_EXCLUSIVE, tables=(str(table),), depends_on=tuple(after),
        transactional=False, guard=guard, changes=(str(table),), target=target, column=column, repairs=repairs,
        needs=Needs(claims=(IndexClaim(table.schema, idx, table.name, column),)))


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
    if not table.is_partitioned:
        out.last = [out.add(concurrent_index(f"index:{name}{suffix}", tname, column, idx, after,
                                             leading_index_exists(tname, column, ordered=ordered), target=name,
                                             repairs=repairs)).id]
        return out
    parent = out.add(Declared(
        id=f"index:{name}{suffix}", operation=Operation.INDEX_PARENT,
        description=f"Index on {name} ({column}) ON ONLY the parent (attached below)",
        statements=(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON ONLY {} ({})").format(
            sql.Identifier(idx), table_ref(tname), sql.Identifier(column)),),
        lock=LockMode.SHARE, tables=(name,), depends_on=tuple(after),
        guard=sql.SQL("SELECT EXISTS (SELECT 1 FROM pg_class ic JOIN pg_index i ON i.indexrelid = ic.oid "
                      "WHERE i.indrelid = {} AND ic.relname = {}) OR ({})").format(
            relid(tname), sql.Literal(idx), leading_index_exists(tname, column, ordered=ordered)),
        changes=(name,), target=name, column=column, repairs=repairs,
        needs=Needs(claims=(IndexClaim(tname.schema, idx, tname.name, column),))))
    out.last = [parent.id]
    for group in partition_groups.ddl_groups(table, partition_groups.INDEX_PARTITIONS):
        if len(group) > 1:
            out.last.append(out.add(index_group(group, table, column, idx, parent.id, suffix, repairs)).id)
            continue
        p = group[0]
        pidx = short_name(p.name.name, column, suffix="idx")
        build = out.add(concurrent_index(f"index:{p.name}{suffix}", p.name, column, pidx, [parent.id],
                                         leading_index_exists(p.name, column, pidx), target=name, repairs=repairs))
        attach = out.add(Step(
            id=f"attach-index:{p.name}{suffix}", operation=Operation.ATTACH_INDEX,
            description=f"Attach index {pidx} to {idx} (the tables: ACCESS SHARE; the indexes: "
            "SHARE UPDATE EXCLUSIVE and ACCESS EXCLUSIVE, on the index only)",
            statements=(sql.SQL("ALTER INDEX {} ATTACH PARTITION {}").format(
                sql.Identifier(tname.schema, idx), sql.Identifier(p.name.schema, pidx)),),
            lock=LockMode.ACCESS_SHARE, tables=(name, str(p.name)), depends_on=(build.id,),
            guard=sql.SQL("SELECT ({}) OR ({})").format(attached_indexes(tname, [(p.name, pidx)], idx),
                                                        leading_index_exists(tname, column, ordered=ordered)),
            changes=(name,), target=name, column=column, repairs=repairs))
        out.last.append(attach.id)
    return out


def attached_indexes(parent: QualifiedName, pairs: list[tuple[QualifiedName, str]], idx: str) -> sql.Composed:
    """Each partition's index (`pairs`: partition, its index's name) is attached to the parent's `idx`: each looked
    up by oid, then its parents by its own oid (a subplan per index, not a join the planner could turn into a read of
    all the parent's children). 0.08-0.15 ms for a group of 8 at 365 and 1,500 partitions, where a join by names
    for each took 1.4 ms (mostly planning), and a filter on the parent's children 6 ms at 1,500 partitions; twice
    per group and run (the plan's done flags, then right before the step)."""
    children = sql.SQL(", ").join(relid(QualifiedName(p.schema, pidx)) for p, pidx in pairs)
    return sql.SQL(
        "SELECT count(*) = {} FROM unnest(ARRAY[{}]) AS c(oid) "
        "WHERE {} = ANY (ARRAY(SELECT h.inhparent FROM pg_inherits h WHERE h.inhrelid = c.oid))").format(
        sql.Literal(len(pairs)), children, relid(QualifiedName(parent.schema, idx)))


def index_group(group: list[Partition], table: Table, column: str, idx: str, after: str, suffix: str,
                repairs: tuple[str, ...]) -> Step:
    """Small partitions' indexes in one transaction (partition_groups.py): built (not CONCURRENTLY: SHARE on
    each, for the milliseconds their rows take) and attached to the parent's `idx`."""
    name = str(table.name)
    statements: list[sql.Composed] = []
    pairs: list[tuple[QualifiedName, str]] = []
    claims: list[IndexClaim] = []
    for p in group:
        pidx = short_name(p.name.name, column, suffix="idx")
        claims.append(IndexClaim(p.name.schema, pidx, p.name.name, column))
        statements += [sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                           sql.Identifier(pidx), table_ref(p.name), sql.Identifier(column)),
                       sql.SQL("ALTER INDEX {} ATTACH PARTITION {}").format(
                           sql.Identifier(table.name.schema, idx), sql.Identifier(p.name.schema, pidx))]
        pairs.append((p.name, pidx))
    rows = sum(p.estimated_rows for p in group)
    return Declared(
        id=partition_groups.group_id("index", group, suffix), operation=Operation.INDEX,
        description=f"Index {len(group)} small partitions of {name} ({group[0].name} ... {group[-1].name}, about "
        f"{rows} rows) on ({column}) and attach them to {idx}, in one transaction: SHARE on each for the "
        "milliseconds its rows take, rather than a CONCURRENTLY step each",
        statements=tuple(statements), lock=LockMode.SHARE, tables=tuple(str(p.name) for p in group),
        depends_on=(after,), guard=attached_indexes(table.name, pairs, idx),
        changes=tuple(str(p.name) for p in group), target=name, column=column, repairs=repairs,
        needs=Needs(claims=tuple(claims)))


def refusals(claims: tuple[IndexClaim, ...]) -> list[sql.Composed]:
    """An index name the plan claims that belongs to an index on another table or column (the step would drop
    it), or to a relation of another kind: index names share the schema's namespace with its tables, views,
    sequences and composite types, and CREATE INDEX ... IF NOT EXISTS skips such a name silently, then the
    DROP INDEX or ATTACH before or after it fails ("... is not an index") midway through the run."""
    if not claims:
        return []
    values = sql.SQL(", ").join(sql.SQL("({}, {}, {}, {})").format(
        *map(sql.Literal, (c.schema, c.index, c.table, c.column))) for c in claims)
    return [sql.SQL(
        "SELECT CASE WHEN i.indexrelid IS NULL THEN format('%s %I.%I has the name the plan gives its index on %I.%I "
        "(%I): rename it, then run again', CASE ic.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table' "
        "WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence' WHEN 'f' THEN "
        "'foreign table' WHEN 'c' THEN 'composite type' ELSE 'relation' END, c.nsp, c.idx, c.nsp, c.tbl, c.col) "
        "ELSE format('index %I.%I already exists on %s for something else: rename it, then run again', "
        "c.nsp, c.idx, i.indrelid::regclass) END FROM (VALUES {}) AS c(nsp, idx, tbl, col) "
        "JOIN pg_namespace n ON n.nspname = c.nsp JOIN pg_class ic ON ic.relnamespace = n.oid "
        "AND ic.relname = c.idx LEFT JOIN pg_index i ON i.indexrelid = ic.oid "
        "WHERE i.indexrelid IS NULL OR i.indrelid IS DISTINCT FROM to_regclass(format('%I.%I', c.nsp, c.tbl)) "
        "OR i.indkey[0] IS DISTINCT FROM (SELECT a.attnum FROM pg_attribute a "
        "WHERE a.attrelid = i.indrelid AND a.attname = c.col)").format(values)]

"""Declared foreign keys over the whole schema, shared by the schema-wide checks.

A foreign key's *signature* is what it enforces: (columns, referenced table, referenced columns);
two constraints with one signature enforce the same thing. A partitioned table is audited as its
parent: FKs inherited from the parent (`conparentid <> 0`) are the parent's, FKs declared on
partitions alone are grouped by signature under the parent.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from psycopg import sql

from yumai_audit.catalog import ForeignKey, QualifiedName, Table
from yumai_audit.context import AuditContext

from .catalog_targets import matching_fks, wanted_references
from .predicates import table_ref


@dataclass(frozen=True, order=True)
class Signature:
    columns: tuple[str, ...]
    ref_table: QualifiedName
    ref_columns: tuple[str, ...]

    @property
    def references(self) -> str:
        return f"{self.ref_table}.{','.join(self.ref_columns)}"

    @property
    def column(self) -> str:
        return ",".join(self.columns)


def signature(fk: ForeignKey) -> Signature:
    return Signature(fk.columns, fk.ref_table, fk.ref_columns)


@dataclass(frozen=True)
class Relation:
    """A relation to read: `ONLY` for an ordinary table (its inheritance children are not bound by its FKs)."""

    name: QualifiedName
    only: bool

    def ref(self) -> sql.Composed:
        return sql.SQL("ONLY {}" if self.only else "{}").format(table_ref(self.name))


@dataclass(frozen=True)
class DeclaredFk:
    """One FK to verify: on a table, or the same FK declared on some partitions of a partitioned table."""

    table: Table                      # the audited table: the parent for partition-level FKs
    signature: Signature
    constraints: tuple[str, ...]
    relations: tuple[Relation, ...]   # what to read: the table, or the partitions that declare the FK
    partitions: tuple[str, ...]       # partition-level FKs: the partitions that declare it
    validated: bool

    @property
    def key(self) -> str:
        return "fk:" + json.dumps([str(self.table.name), self.constraints, self.partitions])


def covered_by_unvalidated_fk(ctx: AuditContext) -> set[tuple[QualifiedName, str]]:
    """NOT VALID session/user FKs of key tables: `unvalidated_fk` already counts their blocking rows."""
    return {(fk.table, fk.name) for ref in wanted_references(ctx) for fk in matching_fks(ctx, ref) if not fk.validated}


def _ref_relation(ctx: AuditContext, name: QualifiedName) -> Relation:
    table = ctx.catalog.get(name)
    return Relation(name, only=table is not None and not table.is_partitioned)


def declared_fks(ctx: AuditContext, verify_declared: bool) -> list[DeclaredFk]:
    """The declared FKs whose rows the scan counts: NOT VALID ones, and valid ones with `verify_declared`."""
    covered = covered_by_unvalidated_fk(ctx)

    def wanted(fk: ForeignKey) -> bool:
        return not fk.validated or verify_declared

    out: list[DeclaredFk] = []
    for table in ctx.catalog.tables.values():
        own = [fk for fk in table.foreign_keys if not fk.inherited]
        for fk in own:
            if wanted(fk) and (fk.table, fk.name) not in covered:
                out.append(DeclaredFk(table, signature(fk), (fk.name,),
                                      (Relation(table.name, not table.is_partitioned),),
                                      (), fk.validated))
        on_parent = {signature(fk) for fk in own}
        groups: dict[Signature, list[ForeignKey]] = {}
        for fk in table.partition_foreign_keys:
            if not fk.inherited and wanted(fk) and signature(fk) not in on_parent:
                groups.setdefault(signature(fk), []).append(fk)
        for sig, fks in sorted(groups.items()):
            fks.sort(key=lambda f: (f.table, f.name))
            out.append(DeclaredFk(table, sig, tuple(sorted({f.name for f in fks})),
                                  tuple(Relation(f.table, False) for f in fks),
                                  tuple(str(f.table) for f in fks), all(f.validated for f in fks)))
    return out


def violation_query(ctx: AuditContext, fk: DeclaredFk, sample_size: int) -> sql.Composed:
    """Rows that violate the FK under MATCH SIMPLE (a row with any NULL key column is not checked):
    `count(*)`, distinct keys, and a sample of the keys as text."""
    sig = fk.signature
    ref = _ref_relation(ctx, sig.ref_table).ref()
    selects = []
    for rel in fk.relations:
        not_null = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier("t", c)) for c in sig.columns)
        match = sql.SQL(" AND ").join(sql.SQL("{} = {}").format(sql.Identifier("r", rc), sql.Identifier("t", c))
                                      for c, rc in zip(sig.columns, sig.ref_columns))
        selects.append(sql.SQL(
            "SELECT {cols} FROM {rel} t WHERE {nn} AND NOT EXISTS (SELECT 1 FROM {ref} r WHERE {m})").format(
            cols=sql.SQL(", ").join(sql.Identifier("t", c) for c in sig.columns), rel=rel.ref(), nn=not_null,
            ref=ref, m=match))
    key: sql.Composable
    if len(sig.columns) == 1:
        key = sql.Identifier("v", sig.columns[0])
    else:
        key = sql.SQL("ROW({})").format(sql.SQL(", ").join(sql.Identifier("v", c) for c in sig.columns))
    return sql.SQL(
        "WITH v AS MATERIALIZED ({union}) "
        "SELECT count(*), count(DISTINCT {key}), "
        "(SELECT array_agg(k ORDER BY k) FROM (SELECT DISTINCT ({key})::text AS k FROM v ORDER BY 1 LIMIT {n}) s) "
        "FROM v"
    ).format(union=sql.SQL(" UNION ALL ").join(selects), key=key, n=sql.Literal(sample_size))

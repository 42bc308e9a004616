"""`fix --include schema`: the foreign keys the schema-wide checks found missing, added online.

Off by default (the schema-wide checks only report). With the option, the plan also gets:

- every confirmed implied foreign key (an `unconstrained_fk` finding of the implied part: named like a
  reference with one parent holding at least 99% of the column's distinct values, or inferred from the
  data, every value in the one key that the evidence rule accepts; the key may be a unique one rather
  than the primary key). Only a column whose values are *all* in the parent gets steps: an index
  leading with the column when none exists (CONCURRENTLY; ON ONLY the parent, CONCURRENTLY per
  partition and ATTACH for a partitioned table), then the FK NOT VALID and VALIDATE in a transaction
  of its own (PostgreSQL 18: on the parent; 12-17: per partition, then on the parent, which attaches
  them). The FK is `ON DELETE NO ACTION`: a relationship inferred from names and data never gets
  CASCADE (deleting a parent row must not silently delete rows nobody declared dependent) nor SET
  NULL. A column with values missing from the parent gets nothing, and the plan notes how many and
  which: deleting them is a decision about data the tool does not take, and a NOT VALID FK over them
  would start refusing writes the application may still make.
- every `partition_fk_drift`: the FK its siblings have, added to each partition that lacks it (NOT
  VALID, then VALIDATE), the siblings' NOT VALID copies validated, then the FK on the parent, which
  attaches the partitions' identical, validated constraints without reading the rows again. The
  added FKs copy the siblings' definition (actions, MATCH, DEFERRABLE): PostgreSQL attaches only
  identical ones. When the rows of the partitions to be checked violate it, nothing is planned for
  that FK and the plan notes it.
- every declared NOT VALID FK on a table (not the session master's, which the migration handles)
  that no row violates: VALIDATE. It changes nothing for writers (new rows are checked already) and
  is how an interrupted run resumes: an FK added NOT VALID by a run that stopped before VALIDATE is
  no longer an implied FK, but it is validated here.

What "violates" means is measured when the plan is made, by the probes declared here (the API runs
them in a read-only transaction). Rows written between the plan and VALIDATE can still make
VALIDATE fail: the step fails, the FK stays NOT VALID (new rows keep being checked), and a later
run plans only the VALIDATE again, or notes the rows that block it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from psycopg import sql

from yumai_audit.checks import implied
from yumai_audit.checks.base import Probe
from yumai_audit.checks.declared import DeclaredFk, Relation, Signature, declared_fks, violation_query
from yumai_audit.checks.partition_fk_drift import PartitionFkDrift
from yumai_audit.checks.unconstrained_fk import UnconstrainedFk

from ..catalog import ForeignKey, Partition, Table
from ..context import AuditContext
from . import ops
from .ddl import Built, short_name
from .draft import Draft
from .ops.foreign_key import FkSpec, add_fk, fk_sequence, needs_checked, validate_fk, verify_fks
from .ops.index import leading_index_steps

SAMPLE = 5   # missing values named in a plan note


@dataclass(frozen=True)
class Drift:
    """One FK that some partitions of `parent` declare and the parent does not."""

    parent: Table
    siblings: tuple[ForeignKey, ...]      # the partitions' FKs with this signature
    lacking: tuple[Partition, ...]        # leaf partitions without it

    @property
    def signature(self) -> Signature:
        fk = self.siblings[0]
        return Signature(fk.columns, fk.ref_table, fk.ref_columns)

    @property
    def unvalidated(self) -> tuple[ForeignKey, ...]:
        return tuple(fk for fk in self.siblings if not fk.validated)

    @property
    def label(self) -> str:
        sig = self.signature
        return f"{self.parent.name} ({sig.column}) -> {sig.references}"

    def checked(self) -> DeclaredFk | None:
        """The rows VALIDATE will read: the lacking partitions and the siblings whose FK is NOT VALID."""
        names = [p.name for p in self.lacking] + [fk.table for fk in self.unvalidated]
        if not names:
            return None
        return DeclaredFk(self.parent, self.signature, tuple(sorted({fk.name for fk in self.siblings})),
                          tuple(Relation(n, False) for n in names), tuple(str(n) for n in names), False)

    @property
    def key(self) -> str:
        sig = self.signature
        return "schema-fix:drift:" + json.dumps([str(self.parent.name), list(sig.columns), str(sig.ref_table),
                                                 list(sig.ref_columns)])


def drifts(ctx: AuditContext) -> list[Drift]:
    """The `partition_fk_drift` findings, one `Drift` per FK the parent lacks."""
    findings = PartitionFkDrift().judge_catalog(ctx)
    by_name = {str(t.name): t for t in ctx.catalog.tables.values()}
    out = []
    for f in findings:
        d = f.details
        if f.table != d["parent"]:
            continue
        parent = by_name[d["parent"]]
        same = [g for g in findings if g.details["parent"] == d["parent"] and g.column == f.column
                and g.references == f.references and g.table != d["parent"]]
        lacking = {g.table for g in same}
        siblings = tuple(fk for fk in parent.partition_foreign_keys
                         if str(fk.table) in d["partitions_with"] and fk.columns == tuple(d["columns"])
                         and fk.ref_columns == tuple(d["ref_columns"]) and fk.references == f.references)
        out.append(Drift(parent, siblings, tuple(p for p in parent.leaf_partitions if str(p.name) in lacking)))
    return out


def leftovers(ctx: AuditContext) -> list[DeclaredFk]:
    """Declared NOT VALID FKs of a table (or a partitioned parent), session/user ones excepted."""
    return [fk for fk in declared_fks(ctx, verify_declared=False) if not fk.partitions and not fk.validated]


def probes(ctx: AuditContext) -> list[Probe]:
    """What the plan needs to know about the data: implied FKs' shares, rows violating the FKs to validate."""
    out = list(implied.probes(ctx))
    for d in drifts(ctx):
        checked = d.checked()
        if checked is not None:
            out.append(Probe(d.key, d.label, violation_query(ctx, checked, SAMPLE)))
    out += [Probe(fk.key, f"{fk.table.name} {'/'.join(fk.constraints)}", violation_query(ctx, fk, SAMPLE))
            for fk in leftovers(ctx)]
    return out


def _sample(values) -> str:
    values = list(values or [])
    return f" (e.g. {', '.join(values[:SAMPLE])})" if values else ""


# (what, its "validated FK exists" query for the final check, the ids after which it is in place)
Planned = tuple[str, sql.Composable, list[str]]


def plan_schema(draft: Draft, evidence: dict[str, list[tuple]], after: list[str]) -> None:
    """Add the schema steps to the draft, after the steps `after` (the session migration's last)."""
    planned = [*implied_fks(draft, evidence, after), *drift_fks(draft, evidence, after),
               *leftover_fks(draft, evidence, after)]
    if planned:
        draft.add(verify_fks("verify-schema", "Every foreign key the schema steps added is there and validated",
                             [(what, exists) for what, exists, _ in planned], [i for *_, ids in planned for i in ids]))


def implied_fks(draft: Draft, evidence: dict[str, list[tuple]], after: list[str]) -> list[Planned]:
    """Implied foreign keys, confirmed by data: an index leading with the column, then the key."""
    out: list[Planned] = []
    for v in implied.verdicts(draft.ctx, evidence):
        if not v.is_unconstrained_fk:
            continue
        best, c = v.best, v.best.candidate
        what = f"{c.table.name}.{c.column.name} -> {c.references}"
        if best.missing:
            draft.notes.append(
                f"implied foreign key {what}: {best.missing} of {best.values} distinct values are not in "
                f"{c.parent.name}{_sample(best.sample)}: no foreign key planned (the rows are left as they are); "
                "repair or remove them, then run fix --include schema again")
            continue
        if c.table.is_partitioned and any(p.level > 1 for p in c.table.partitions):
            draft.notes.append(f"implied foreign key {what}: {c.table.name} has sub-partitions: not planned")
            continue
        column = c.column.name
        spec = FkSpec((column,), c.parent.name, (c.parent_key,))   # ON DELETE NO ACTION, see the docstring
        suffix = f".{column}"
        indexed = draft.take(leading_index_steps(c.table, column, after, suffix))
        last = draft.take(ops.declared(fk_sequence(draft.version, c.table, spec,
                                                   short_name(c.table.name.name, column, suffix="fkey"),
                                                   [*after, *indexed], suffix=suffix, repairs=(UnconstrainedFk.id,)),
                                       needs_checked(c.table.name, c.parent.name)))
        out.append((what, spec.exists(c.table.name, validated=True), last))
    return out


def drift_fks(draft: Draft, evidence: dict[str, list[tuple]], after: list[str]) -> list[Planned]:
    """Partitions whose foreign keys differ: the key added to those that lack it, then on the parent."""
    out: list[Planned] = []
    for d in drifts(draft.ctx):
        sig = d.signature
        if any(draft.ctx.is_master_fk(fk) for fk in d.siblings) and draft.migrated:
            continue   # the session migration adds and validates it
        specs = {FkSpec.of(fk) for fk in d.siblings}
        if len(specs) != 1:
            draft.notes.append(f"partition drift {d.label}: the partitions' constraints differ in their actions "
                               "or deferrability: not planned (make them identical first)")
            continue
        if any(p.level > 1 for p in d.parent.partitions):
            draft.notes.append(f"partition drift {d.label}: {d.parent.name} has sub-partitions: not planned")
            continue
        checked = d.checked()
        if checked is not None:
            if d.key not in evidence:
                draft.notes.append(f"partition drift {d.label}: not measured: not planned")
                continue
            rows, keys, sample = evidence[d.key][0]
            if rows:
                draft.notes.append(
                    f"partition drift {d.label}: {rows} rows of {', '.join(checked.partitions)} name {keys} keys "
                    f"missing from {sig.ref_table}{_sample(sample)}: not planned (the rows are left as they are)")
                continue
        spec = specs.pop()
        last = draft.take(ops.declared(drift_steps(d, spec, after), needs_checked(d.parent.name, sig.ref_table)))
        out.append((f"{d.label} on the parent", spec.exists(d.parent.name, validated=True), last))
    return out


def drift_steps(d: Drift, spec: FkSpec, after: list[str]) -> Built:
    """The key on each lacking partition (NOT VALID, VALIDATE), the siblings' NOT VALID ones validated, then
    the key on the parent, which attaches them."""
    sig = d.signature
    suffix = "." + ",".join(sig.columns)
    names = {fk.name for fk in d.siblings}
    out = Built()
    validated = []
    target, repairs = str(d.parent.name), (PartitionFkDrift.id,)
    for p in d.lacking:
        name = next(iter(names)) if len(names) == 1 else short_name(p.name.name, *sig.columns, suffix="fkey")
        added = out.add(add_fk(f"fk-add:{p.name}{suffix}", p.name, spec, name, after, target=target,
                               repairs=repairs)).id
        validated.append(out.add(validate_fk(f"fk-validate:{p.name}{suffix}", p.name, spec, name, [added],
                                             target=target, repairs=repairs)).id)
    for fk in d.unvalidated:
        validated.append(out.add(validate_fk(f"fk-validate:{fk.table}{suffix}", fk.table, spec, fk.name, after,
                                             target=target, repairs=repairs)).id)
    out.last = [out.add(add_fk(f"fk-add:{d.parent.name}{suffix}", d.parent.name, spec,
                               short_name(d.parent.name.name, *sig.columns, suffix="fkey"),
                               validated or after, not_valid=False, target=target, repairs=repairs)).id]
    return out


def leftover_fks(draft: Draft, evidence: dict[str, list[tuple]], after: list[str]) -> list[Planned]:
    """Declared NOT VALID foreign keys that no row violates: VALIDATE."""
    out: list[Planned] = []
    for fk in leftovers(draft.ctx):
        name = fk.constraints[0]
        what = f"{fk.table.name} {name}"
        if fk.key not in evidence:
            draft.notes.append(f"NOT VALID foreign key {what}: not measured: not planned")
            continue
        rows, keys, sample = evidence[fk.key][0]
        if rows:
            draft.notes.append(f"NOT VALID foreign key {what}: {rows} rows name {keys} keys missing from "
                               f"{fk.signature.ref_table}{_sample(sample)}: left NOT VALID")
            continue
        spec = FkSpec.of(next(f for f in fk.table.foreign_keys if f.name == name))
        step = validate_fk(f"fk-validate:{fk.table.name}:{name}", fk.table.name, spec, name, after)
        out.append((what, spec.exists(fk.table.name, validated=True),
                    [draft.add(ops.declaring(step, needs_checked(fk.table.name))).id]))
    return out

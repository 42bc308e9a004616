"""Operation: a foreign key added without a long lock, then validated.

ADD CONSTRAINT ... NOT VALID (new rows checked, no scan), then VALIDATE CONSTRAINT in a transaction
of its own; on a partitioned table before PostgreSQL 18 (which refuses NOT VALID there): per partition,
then the parent's key, which attaches the validated ones without a scan (`fk_sequence`). Guard: the key
exists (validated, for VALIDATE: `fk_exists`). The plan needs REFERENCES on each referenced table
(`refusals`). A last check step confirms every key planned is there and validated (`verify_fks`).

Lock order. ADD FOREIGN KEY takes SHARE ROW EXCLUSIVE on the table (a partitioned one: and its partitions), then
on the referenced table. The application takes them the other way round: a parent row (a user, a session
registered in the master with `--bridge none`) before the rows that name it. A writer that has written the
parent and then writes the table would wait behind the step, and the step behind it: a deadlock that only the
step's lock_timeout breaks, every writer queued meanwhile. So each step that adds a key locks the referenced
table first (`lock_first`), in the mode it takes there, in the same transaction and under the same
lock_timeout: the application's order. Except where the cutover bridge is on the table (`referenced_first`
False): its trigger writes the master while the row's insert holds the table, the table's order; there the
step locks the table (all of a group's partitions) first, then the master. VALIDATE takes SHARE UPDATE
EXCLUSIVE on the table and ROW SHARE on the referenced one, neither of which waits for a writer: no order to
keep.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass

from psycopg import sql

from yumai_audit.checks.unconstrained_fk import UnconstrainedFk
from yumai_audit.checks.unvalidated_fk import UnvalidatedFk

from ...catalog import ForeignKey, Partition, QualifiedName, Table
from ...engine.steps import Kind, LockMode, Step
from ...fk_reach import ACTIONS as FK_ACTIONS
from ...operations import Operation
from ...pgversion import NOT_VALID_FK_ON_PARTITIONED
from ...sqlparts import table_ref
from .. import partition_groups
from ..ddl import Built, attnum, relid
from ..plan import PlanError
from . import Deliberate, Needs

REPAIRS = (UnconstrainedFk.id, UnvalidatedFk.id)   # a key column without a (validated) foreign key

LINT = (
    Deliberate(("constraint-missing-not-valid", "adding-foreign-key-constraint"), Operation.FK_ADD,
               re.compile(r"ADD CONSTRAINT .* FOREIGN KEY (?!.*NOT VALID)", re.S),
               "on the partitioned parent after every partition's NOT VALID key was validated: PostgreSQL "
               "before 18 refuses NOT VALID here, and the parent's key attaches the validated ones without a scan",
               lambda step: any(d.startswith("fk-validate:") for d in step.depends_on) and not checks_small(step)),
    Deliberate(("constraint-missing-not-valid", "adding-foreign-key-constraint"), Operation.FK_ADD,
               re.compile(r"ADD CONSTRAINT .* FOREIGN KEY (?!.*NOT VALID)", re.S),
               "on the partitioned parent, which checks its small partitions' rows itself (PostgreSQL before 18 "
               "refuses NOT VALID here): shorter than attaching a key per small partition (fix/partition_groups.py)",
               lambda step: checks_small(step)),
    Deliberate(("constraint-missing-not-valid", "adding-foreign-key-constraint"), Operation.FK_ADD,
               re.compile(r"ADD CONSTRAINT .* FOREIGN KEY (?!.*NOT VALID)", re.S),
               "small partitions, a group in one transaction (fix/partition_groups.py): each key added "
               "validated, its few rows checked at once, after the catch-up that registered their sessions",
               lambda step: sum(s.as_string(None).startswith("ALTER TABLE") for s in step.statements) > 1
               and not any(d.startswith("fk-validate:") for d in step.depends_on)),
)

CHECKS_SMALL = "checking the rows of its"     # in the description of a parent's key that does (add_fk's `checks`)


def checks_small(step) -> bool:
    """The parent's key before 18 that checks its small partitions' rows itself (`add_fk`'s `checks`)."""
    return CHECKS_SMALL in step.description


# PostgreSQL 18 accepts ADD FOREIGN KEY ... NOT VALID on a partitioned table; 12-17 refuse it.
PG_NOT_VALID_ON_PARTITIONED = NOT_VALID_FK_ON_PARTITIONED


def fk_exists(table: QualifiedName, columns: str | tuple[str, ...], ref_table: QualifiedName, *, validated: bool,
              ref_columns: tuple[str, ...] = ()) -> sql.Composed:
    """A foreign key on `table` (these columns, in order) to `ref_table` (and, given, these columns)."""
    columns = (columns,) if isinstance(columns, str) else columns
    ref: sql.Composable = sql.SQL("")
    if ref_columns:
        ref = sql.SQL(" AND k.confkey = ARRAY[{}]::int2[]").format(
            sql.SQL(", ").join(attnum(ref_table, c) for c in ref_columns))
    return sql.SQL("SELECT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.contype = 'f' AND k.conrelid = {} "
                   "AND k.confrelid = {} AND k.conkey = ARRAY[{}]::int2[]{}{})").format(
        relid(table), relid(ref_table), sql.SQL(", ").join(attnum(table, c) for c in columns), ref,
        sql.SQL(" AND k.convalidated") if validated else sql.SQL(""))


# pg_constraint's letters, as ADD CONSTRAINT spells them


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
    def of(cls, fk: ForeignKey) -> FkSpec:
        return cls(fk.columns, fk.ref_table, fk.ref_columns, fk.on_delete, fk.on_update, fk.match,
                   fk.deferrable, fk.deferred)

    def __post_init__(self):
        if self.on_delete not in FK_ACTIONS or self.on_update not in FK_ACTIONS or self.match not in "sf":
            raise PlanError(f"cannot spell the foreign key ({', '.join(self.columns)}) -> {self.ref_table}: "
                            f"actions {self.on_delete!r}/{self.on_update!r}, match {self.match!r}")

    def definition(self, not_valid: bool) -> sql.Composed:
        """`FOREIGN KEY (...) REFERENCES ... [MATCH FULL] [ON DELETE x] [ON UPDATE x] [DEFERRABLE ...] [NOT VALID]`."""
        out: list[sql.Composable] = [sql.SQL("FOREIGN KEY ({}) REFERENCES {} ({})").format(
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

    def exists(self, table: QualifiedName, *, validated: bool) -> sql.Composed:
        return fk_exists(table, self.columns, self.ref_table, validated=validated, ref_columns=self.ref_columns)


# A foreign key's check of a small partition (an anti-join of its rows with the referenced table) probes the
# referenced key's index per row: planned freely, a hash join read the whole referenced table once per partition
# of a few hundred rows (the master's 40,000 sessions read 365 times at 365 daily partitions)
PROBE = (sql.SQL("SET LOCAL enable_hashjoin = off"), sql.SQL("SET LOCAL enable_mergejoin = off"))


def lock_first(tables: list[QualifiedName], mode: LockMode) -> sql.Composed:
    """`LOCK TABLE ... IN mode MODE`: what a step takes before its DDL, in the order the application does."""
    return sql.SQL("LOCK TABLE {} IN {} MODE").format(sql.SQL(", ").join(map(table_ref, tables)),
                                                      sql.SQL(mode.label))


def fk_group(step_id: str, group: list[Partition], spec: FkSpec, names: dict, deps, *, target: str,
             repairs: tuple[str, ...], referenced_first: bool = True) -> Step:
    """Small partitions' foreign keys in one transaction (partition_groups.py), each added validated: SHARE ROW
    EXCLUSIVE on the partitions and the referenced table for the milliseconds their rows take to check (by
    PROBE). Locked first (the module's "Lock order"): the referenced table; with the bridge on the table, every
    partition of the group (ADD FOREIGN KEY alone would take the master at the first partition, before the others)."""
    ref = str(spec.ref_table)
    parts = [str(p.name) for p in group]
    first = (lock_first([spec.ref_table], LockMode.SHARE_ROW_EXCLUSIVE) if referenced_first
             else lock_first([p.name for p in group], LockMode.SHARE_ROW_EXCLUSIVE))
    return Step(
        id=step_id, operation=Operation.FK_ADD,
        description=f"Foreign keys of {len(group)} small partitions ({group[0].name} ... {group[-1].name}) -> {ref} "
        f"ON DELETE {FK_ACTIONS[spec.on_delete]}, added validated in one transaction (their rows checked at once; "
        "brief locks) rather than NOT VALID and VALIDATE steps each",
        statements=PROBE + (first,) + tuple(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
            table_ref(p.name), sql.Identifier(names[p.name]), spec.definition(False)) for p in group),
        # the tables in the order they are locked
        lock=LockMode.SHARE_ROW_EXCLUSIVE, tables=(ref, *parts) if referenced_first else (*parts, ref),
        depends_on=tuple(deps),
        guard=sql.SQL("SELECT {}").format(sql.SQL(" AND ").join(
            sql.SQL("({})").format(spec.exists(p.name, validated=True)) for p in group)),
        changes=tuple(str(p.name) for p in group), target=target, column=",".join(spec.columns), repairs=repairs)


def add_fk(step_id: str, table: QualifiedName, spec: FkSpec, constraint: str, deps, not_valid: bool = True, *,
           target: str = "", repairs: tuple[str, ...] = (), referenced_first: bool = True,
           checks: list[Partition] | None = None, attaches: int = 0) -> Step:
    """ADD CONSTRAINT ... NOT VALID (new rows checked, no scan; a brief lock), or without NOT VALID on a
    partitioned parent whose partitions all hold the validated FK already (attached, no scan).
    `referenced_first`: the referenced table locked first (the module's "Lock order"), in the strongest mode the
    step takes there (the parent's ACCESS EXCLUSIVE at once: a lock raised later waits for readers of the
    referenced table, and a reader that then writes `table` waits for the step); False (the bridge is on `table`):
    the order ADD FOREIGN KEY takes by itself, `table` then the referenced one. `checks` (the parent's key before
    18): the small partitions without a key of their own, whose rows the statement checks (partition_groups.py,
    `parent_checks_small`), beside `attaches` partition keys it attaches."""
    ref = str(spec.ref_table)
    checked = list(checks or [])
    # attaching a partition's key drops its triggers on the referenced table: ACCESS EXCLUSIVE there
    mode = LockMode.SHARE_ROW_EXCLUSIVE if not_valid or (checked and not attaches) else LockMode.ACCESS_EXCLUSIVE
    first: tuple[sql.Composed, ...] = (lock_first([spec.ref_table], mode),) if referenced_first else ()
    if not_valid:
        how = " NOT VALID (checks new rows only; brief lock)"
    elif checked:
        how = (f" on the parent, {CHECKS_SMALL} {len(checked)} small partitions itself (about "
               f"{partition_groups.check_seconds(checked):.2f} s under SHARE ROW EXCLUSIVE on {table} and {ref}: "
               f"writers wait, readers do not) rather than a key step per group of them, whose "
               f"{len(checked) + attaches} keys this statement would attach under ACCESS EXCLUSIVE on {ref} for about "
               f"{partition_groups.attach_seconds(len(checked) + attaches):.2f} s (before 18 each attachment rebuilds "
               f"{ref}'s triggers)" + (f"; attaches the validated keys of the {attaches} others" if attaches else ""))
    else:
        how = (f" on the parent (attaches the validated partition keys, no scan; a brief ACCESS EXCLUSIVE on {ref} "
               + ("from the start, before the table's locks)" if referenced_first
                  else "while its triggers are re-created)"))
    return Step(
        id=step_id, operation=Operation.FK_ADD,
        description=f"Foreign key {constraint} {table}({', '.join(spec.columns)}) -> {ref} "
        f"ON DELETE {FK_ACTIONS[spec.on_delete]}" + how,
        statements=(PROBE if checked else ()) + first + (sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
            table_ref(table), sql.Identifier(constraint), spec.definition(not_valid)),),
        # attaching the partitions' keys re-creates the referenced table's triggers: PostgreSQL takes
        # ACCESS EXCLUSIVE on it (catalog work only, under lock_timeout; from the start of the step when it is
        # locked first). The tables in the order they are locked.
        lock=mode, tables=(((ref, str(table)) if referenced_first else (str(table), ref)) if not_valid or checked
                           else (ref,)),
        depends_on=tuple(deps),
        guard=spec.exists(table, validated=False), changes=(str(table),), target=target or str(table),
        column=",".join(spec.columns), repairs=repairs)


def validate_fk(step_id: str, table: QualifiedName, spec: FkSpec, constraint: str, deps, *,
                target: str = "", repairs: tuple[str, ...] = (), probe: bool = False) -> Step:
    """`probe`: a partitioned table whose partitions are all small, each checked by PROBE."""
    return Step(
        id=step_id, operation=Operation.FK_VALIDATE,
        description=f"VALIDATE CONSTRAINT {constraint} on {table} (reads every row; writers keep going)",
        statements=(PROBE if probe else ()) + (sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
            table_ref(table), sql.Identifier(constraint)),),
        lock=LockMode.SHARE_UPDATE_EXCLUSIVE, tables=(str(table),), depends_on=tuple(deps),
        guard=spec.exists(table, validated=True), changes=(str(table),), target=target or str(table),
        column=",".join(spec.columns), repairs=repairs)


def fk_sequence(version: int, table: Table, spec: FkSpec, constraint: str, pre: list[str], *, suffix: str = "",
                whole: bool = False, settle: Callable[[list[str]], Built] | None = None,
                partition_constraint: Callable | None = None, repairs: tuple[str, ...] = (),
                referenced_first: bool = True) -> Built:
    """FK NOT VALID, then VALIDATE in a transaction of its own; on a partitioned table before
    PostgreSQL 18 (which refuses NOT VALID there): per partition, then the FK on the parent, which
    attaches them (or, many small ones, checks their rows itself: partition_groups.parent_checks_small).
    `whole`: on the table itself whatever the version (its NOT VALID FK exists). `settle(deps)` makes steps that
    run between NOT VALID and VALIDATE: on demand online (Step.on_demand), named by every step that checks the
    key's rows (Step.repaired_by). `last` is the final step. `referenced_first`: which table each step that adds
    a key locks first (the module's "Lock order")."""
    out = Built()
    name = str(table.name)
    on_demand: list[str] = []    # the settling steps the online run runs only when a key fails (Step.on_demand)

    def settled(deps: list[str]) -> list[str]:
        if settle is None:
            return deps
        between = settle(deps)
        for i, step in enumerate(between.steps):
            if step.kind is Kind.CHANGE and step.transactional:
                between.steps[i] = dataclasses.replace(step, on_demand=True)
                on_demand.append(step.id)
        out.extend(between)
        return between.last or deps

    def needing(step: Step) -> Step:
        """`step` (one that checks the key's rows: VALIDATE, a key added validated) with the settling steps
        it runs first when it finds a row violating the key."""
        return dataclasses.replace(step, repaired_by=tuple(on_demand)) if on_demand else step

    if not table.is_partitioned or version >= PG_NOT_VALID_ON_PARTITIONED or whole:
        added = out.add(add_fk(f"fk-add:{name}{suffix}", table.name, spec, constraint, pre, target=name,
                               repairs=repairs, referenced_first=referenced_first))
        out.last = [out.add(needing(validate_fk(f"fk-validate:{name}{suffix}", table.name, spec, constraint,
                                                settled([added.id]), target=name, repairs=repairs,
                                                probe=partition_groups.all_small(table)))).id]
        return out
    names = {p.name: partition_constraint(p) if partition_constraint else constraint
             for p in table.leaf_partitions}
    small = partition_groups.parent_checks_small(table)    # checked by the parent's key itself
    groups = ([[p] for p in table.leaf_partitions if p not in small] if small
              else partition_groups.ddl_groups(table, partition_groups.FK_PARTITIONS))
    alone = [g[0] for g in groups if len(g) == 1]
    adds = [out.add(add_fk(f"fk-add:{p.name}{suffix}", p.name, spec, names[p.name], pre, target=name,
                           repairs=repairs, referenced_first=referenced_first)).id for p in alone]
    after = settled(adds or list(pre))
    validated = [out.add(needing(validate_fk(f"fk-validate:{p.name}{suffix}", p.name, spec, names[p.name], after,
                                             target=name, repairs=repairs))).id for p in alone]
    # small partitions: after the catch-up that settles the others, their keys added validated, a group a step
    validated += [out.add(needing(fk_group(partition_groups.group_id("fk-add", g, suffix), g, spec, names,
                                           after, target=name, repairs=repairs,
                                           referenced_first=referenced_first))).id
                  for g in groups if len(g) > 1]
    # the parent's key checks a partition without one (created during the apply; the small ones, when it checks
    # them) as it attaches the others
    parent = add_fk(f"fk-add:{name}{suffix}", table.name, spec, constraint, validated or after, not_valid=False,
                    target=name, repairs=repairs, referenced_first=referenced_first,
                    checks=small, attaches=len(alone))
    out.last = [out.add(needing(parent)).id]
    return out


def verify_fks(step_id: str, description: str, planned: list[tuple[str, sql.Composable]], after: list[str]) -> Step:
    """A check step, last: every foreign key planned (what, "validated FK exists" query) is there and valid."""
    return Step(
        id=step_id, operation=Operation.VERIFY, description=description,
        statements=(sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {} WHERE NOT ({})").format(sql.Literal(f"{what}: no validated foreign key"), exists)
            for what, exists in planned),),
        lock=LockMode.ACCESS_SHARE, tables=(), depends_on=tuple(after), kind=Kind.CHECK)


def refusals(referenced: list[QualifiedName]) -> list[sql.Composed]:
    """A referenced table the role may not reference: the key cannot be added."""
    return [sql.SQL("SELECT {} WHERE {} IS NOT NULL AND NOT has_table_privilege({}, 'REFERENCES')").format(
        sql.Literal(f"no REFERENCES privilege on {ref}: a foreign key to it cannot be added"), relid(ref), relid(ref))
        for ref in dict.fromkeys(referenced)]


def needs_checked(table: QualifiedName, referenced: QualifiedName | None = None) -> Needs:
    """What a foreign key on `table` (to `referenced`) asks the preflight: `table`'s owner, REFERENCES on
    `referenced`. The session migration's keys ask neither: its preflight checks the key tables and the master."""
    return Needs(altered=(table,), referenced=(referenced,) if referenced is not None else ())

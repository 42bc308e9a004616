"""The session_master migration of the guide, planned into a `Draft`.

It decides which operations of fix/ops/ to add and in what order: master, malformed rows out and
text keys to the key type, indexes (CONCURRENTLY), backfill per source partition, the bridge, then
per key table (the source table first): orphans, the gate (--bridge none), catch-up (the source only), FK NOT
VALID, catch-up again (the settle), VALIDATE (per partition, then the parent, on PostgreSQL 12-17); verify. Every step
has a guard, so the same plan can be run again after a crash: what is done is skipped. Key
predicates come from `checks/predicates.py` (fix/registration.py), so that the rows the scan counts
as malformed or orphaned are exactly the rows the fix moves.
"""
from __future__ import annotations

from psycopg import sql

from ..context import KeyTable
from ..engine.steps import Kind, LockMode, Step
from ..operations import Operation
from . import coverage
from .ddl import short_name
from .draft import Draft
from .ops import backfill, bridge, catchup, foreign_key, gate, index, key_type, master, orphans, quarantine
from .ops.foreign_key import FkSpec, fk_exists, fk_sequence
from .ops.index import leading_index_steps
from .plan import PlanError
from .preflight import PREFLIGHT
from .registration import existing_fk


def migratable(d: Draft) -> list[KeyTable]:
    out = []
    left: dict[str, str] = {}    # a key table left as it is: why
    for k in d.ctx.key_tables:
        if not k.key_checkable:
            left[str(k.name)] = f"{k.name}.{k.key.name} is {k.key.type}, neither {d.ctx.key_type.name} nor text"
        elif k.table.is_partitioned and any(p.level > 1 for p in k.table.partitions):
            left[str(k.name)] = f"{k.name} has sub-partitions"
        else:
            out.append(k)
            continue
        d.notes.append(left[str(k.name)] + (": left as it is" if not k.key_checkable
                                            else ": not migrated by this version"))
    source = d.ctx.source
    if source is not None and str(source.name) in left and out and d.options.bridge != "none":
        d.refusals.append(unbridged_source(d, source, left[str(source.name)], out))
    # the source table first: its FK must exist before the other tables' catch-ups can trust it
    return sorted(out, key=lambda k: not k.is_source)


def unbridged_source(d: Draft, source: KeyTable, why: str, others: list[KeyTable]) -> str:
    """The source table left as it is gets no bridge (the bridge goes on the migrated source): once the other key
    tables reference the master, every session the application starts in the source would be refused there."""
    names = ", ".join(str(k.name) for k in others)
    return (f"{why}, and the source table is left as it is by this version: it gets no bridge, so once the foreign "
            f"keys of {names} reference {d.master} they would refuse every session the application starts in "
            f"{source.name} until it is registered in {d.master}; if the application registers its sessions there "
            "itself, "
            "run with --bridge none; else leave those tables out (exclude_tables in yumai-audit.toml)")


def width_notes(d: Draft, tables: list[KeyTable]) -> None:
    """An integer key column of another width than the master's key is referenced as it is: PostgreSQL
    takes a foreign key between integer widths (one btree operator family) without a rewrite."""
    for k in tables:
        if k.key.is_native_key and k.key.typname != d.ctx.key_type.typname:
            d.notes.append(f"{k.name}.{k.key.name} is {k.key.type}, the master's key {d.ctx.key_type.name}: referenced "
                           "as it is (a foreign key between integer widths needs no rewrite); a value the narrower "
                           "type cannot hold can never be written to it")


def plan_sessions(d: Draft) -> list[str]:
    """Add the session_master migration to the draft; returns the ids of its last changes."""
    tables = migratable(d)
    d.migrated = tables
    if not tables:
        return []
    if d.ctx.master is not None and (d.ctx.master_key is None or not d.ctx.master_key.is_native_key):
        raise PlanError(f"{d.master} exists but its {d.key} column is not of a key type (uuid, bigint, integer, "
                        "smallint)")
    src = d.ctx.source if d.ctx.source in tables else None
    width_notes(d, tables)
    created = src.table.columns.get(d.ctx.config.created_at_column) if src is not None else None
    if src is not None and created is not None and d.ctx.created_at(src.table) is None:
        d.notes.append(f"{src.name}.{created.name} is {created.type}, not a timestamp or date: the sessions are "
                       f"registered without times from it ({d.master}'s session_start as its default gives, "
                       "session_end NULL); set created_at_column to a timestamp column to take them from there")
    create = d.add(master.create_master(d, PREFLIGHT))
    if d.ctx.master is None and d.ctx.users is not None:
        d.notes.append(master.user_delete_note(d, d.ctx.users.name))
    ready = {str(k.name): converted(d, k) for k in tables}   # after them, its key has the key type, malformed-free
    # the source's index must be one the backfill can walk in key order (btree, not partial)
    indexed = {str(k.name): d.take(leading_index_steps(k.table, k.key.name, ready[str(k.name)],
                                                       repairs=index.REPAIRS, ordered=k.is_source)) for k in tables}
    backfills = []
    if src is not None:
        # the partitions' walks read the key's index: built above when the source has none it can walk
        backfills = d.take(backfill.backfill_steps(d, src, (create.id, *indexed[str(src.name)], *ready[str(src.name)]),
                                                   users_unchecked=master.merge_writes_users_unchecked(d)))
    user_fk: list[str] = []
    if master.user_fk_later(d):
        # the master's user_id FK once the backfill has filled it (fix/ops/master.py), before the bridges
        user_fk = [d.add(step).id for step in master.user_fk_steps(d, backfills[-1:] or [create.id])]
    notes, steps = bridge.bridges(d, tables, create.id, ready, [*backfills, *user_fk])   # the cutover bridge
    d.notes += notes
    bridges = [d.add(step).id for step in steps]
    # the lock order of the steps that add the key (ops/foreign_key.py, "Lock order"): the master first, as the
    # application does when it registers its sessions itself (--bridge none, or a table the bridge is not on);
    # `k` first where the bridge is on `k`: its trigger writes the master while the row's insert holds `k`
    bridged = {str(k.name) for k in bridge.bridged_tables(d.ctx, tables, d.options.bridge,
                                                          bridge.early_writes(d.ctx, d.evidence))}
    previous_fk: list[str] = []
    last_steps = []
    for k in tables:
        name = str(k.name)
        before_fk = [create.id, *backfills, *indexed[name], *ready[name], *bridges, *previous_fk]
        if not k.is_source:
            before_fk.append(d.add(orphans.orphans_step(d, k, before_fk)).id)
        before_fk += [d.add(step).id for step in gate.gate_steps(d, k, before_fk)]
        last = fk_steps(d, k, before_fk, referenced_first=name not in bridged)
        previous_fk = [last]
        last_steps.append(last)
    d.add(Step(id="verify", operation=Operation.VERIFY,
               description="Every key table has a validated foreign key to the master; every partition of a "
               "partitioned one (those created during the apply too) a valid index on its key, attached, and the FK",
               statements=(verify_query(d, tables),), lock=LockMode.ACCESS_SHARE, tables=(),
               depends_on=(*user_fk[-1:], *last_steps), kind=Kind.CHECK))
    return last_steps


def converted(d: Draft, k: KeyTable) -> list[str]:
    """A text key: its malformed rows to the quarantine, then the conversion to the key type (with its
    note); returns the ids after which `k`'s key has the key type."""
    if not k.key.is_text:
        return [PREFLIGHT]
    d.notes.append(key_type.note(d, k))
    bad = d.add(quarantine.malformed_step(d, k, PREFLIGHT))
    return [d.add(key_type.convert_step(d, k, bad.id)).id]


def fk_steps(d: Draft, k: KeyTable, after: list[str], *, referenced_first: bool) -> str:
    """The source table: catch-up, FK NOT VALID, catch-up again (the settle), VALIDATE; another key table: FK
    NOT VALID, its settle, VALIDATE. Returns the last step's id. `referenced_first`: the steps that add the key
    lock the master first (ops/foreign_key.py, "Lock order").

    Another key table has no catch-up before its FK: its settle runs the same statements (registered from the
    source, then its orphans, in the same mode), later, in every path of `fk_sequence` (between the NOT VALID keys
    and VALIDATE, or before the small partitions' keys, added validated), and the NOT VALID key adds nothing the
    settle has to handle. So every row an earlier catch-up would have registered or taken out is still there for
    the settle (or was deleted, or registered, meanwhile); the removals it declares are its orphans step's
    and its settle's own (the preflight counts each once). Its guard, an anti-join of the table with the
    master, cost a plan and a run each once more. The online run takes the settle on demand (Step.on_demand):
    when the VALIDATE, or a key added validated, finds such a row, then that step again."""
    name = str(k.name)
    fk_name = short_name(k.name.name, k.key.name, suffix="fkey")
    existing = existing_fk(d, k.table.foreign_keys, k.name)
    if existing is not None and existing.validated:
        return after[-1]
    catchups = catchup.catch_up(d, k)
    pre = d.take(catchups.steps(f"catchup:{name}", after, "before the foreign key")) if k.is_source else list(after)

    def partition_constraint(p) -> str:
        found = existing_fk(d, k.table.partition_foreign_keys, p.name)
        return found.name if found is not None else fk_name

    built = fk_sequence(
        d.version, k.table, FkSpec((k.key.name,), d.master, (d.key,), on_delete="c"),
        existing.name if existing is not None else fk_name, pre, whole=existing is not None,
        settle=lambda deps: catchups.steps(f"settle:{name}", deps, "after NOT VALID, before VALIDATE"),
        partition_constraint=partition_constraint, repairs=foreign_key.REPAIRS, referenced_first=referenced_first)
    return d.take(built)[-1]


def verify_query(d: Draft, tables: list[KeyTable]) -> sql.Composed:
    """A problem per key table without a validated FK to the master; per partitioned one, every partition
    as it is at the end (auditor/fix/coverage.py: its index and FK, whenever it was created)."""
    parts = [sql.SQL("SELECT {} WHERE NOT ({})").format(
        sql.Literal(f"{k.name}.{k.key.name} has no validated foreign key to {d.master}"),
        fk_exists(k.name, k.key.name, d.master, validated=True)) for k in tables]
    parts += [coverage.partition_problems(k.name, k.key.name, d.master) for k in tables if k.table.is_partitioned]
    if master.user_fk_later(d):
        parts.append(master.user_fk_problem(d))
    return sql.SQL(" UNION ALL ").join(parts)

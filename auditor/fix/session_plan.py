"""The session_master migration of the guide, planned into a `Draft`.

Order: master, malformed rows out and text keys to uuid, indexes (CONCURRENTLY), backfill per
source partition, orphans, then per key table (the source table first): catch-up backfill, FK NOT
VALID, catch-up again, VALIDATE (per partition, then the parent, on PostgreSQL 12-17); verify.
Every step has a guard, so the same plan can be run again after a crash: what is done is skipped.
Key predicates come from `checks/predicates.py`, so that the rows the scan counts as malformed or
orphaned are exactly the rows the fix moves.
"""
from __future__ import annotations

from psycopg import sql

from yumai_audit.checks import predicates
from yumai_audit.checks.key_type_mismatch import KeyTypeMismatch
from yumai_audit.checks.malformed_session_ids import MalformedSessionIds
from yumai_audit.checks.missing_master_rows import MissingMasterRows
from yumai_audit.checks.noncanonical_session_ids import NoncanonicalSessionIds
from yumai_audit.checks.orphaned_session_ids import OrphanedSessionIds
from yumai_audit.checks.predicates import Exists, Known, key_malformed, key_uuid, trimmed

from ..catalog import Column, ForeignKey, Partition, QualifiedName
from ..context import KeyTable
from ..engine.guards import no_rows
from ..engine.steps import Kind, LockMode, Query, Step
from ..operations import Operation
from ..sqlparts import table_ref
from . import backfill, bridge, cascade, coverage, partition_groups
from .ddl import Built, column_has_type, relid, short_name
from .draft import Draft
from .ops import foreign_key, index
from .ops.foreign_key import FkSpec, fk_exists, fk_sequence
from .ops.index import leading_index_steps
from .plan import PlanError

QUARANTINE_SCHEMA = cascade.QUARANTINE_SCHEMA

# What each step repairs (check ids, named through the check classes): the report and the verdict read it
# from the steps.
REPAIRS_KEY_TYPE = (KeyTypeMismatch.id, NoncanonicalSessionIds.id, MalformedSessionIds.id)
REPAIRS_MALFORMED = (MalformedSessionIds.id,)
REPAIRS_MASTER = (MissingMasterRows.id,)
REPAIRS_ORPHANS = (OrphanedSessionIds.id,)


def migratable(d: Draft) -> list[KeyTable]:
    out = []
    for k in d.ctx.key_tables:
        if not k.key_checkable:
            d.notes.append(f"{k.name}.{k.key.name} is {k.key.type}, neither {d.ctx.key_type.name} nor text: "
                           "left as it is")
            continue
        if k.table.is_partitioned and any(p.level > 1 for p in k.table.partitions):
            d.notes.append(f"{k.name} has sub-partitions: not migrated by this version")
            continue
        out.append(k)
    # the source table first: its FK must exist before the other tables' catch-ups can trust it
    return sorted(out, key=lambda k: not k.is_source)


def converted(name: str, key: Column) -> Column:
    """A stand-in: column `name` once converted to `key`'s key type."""
    kt = key.key_type
    return Column(name, kt.name, kt.typname, False, kt)


def key_after(k: KeyTable) -> Column:
    """The key column as the later steps see it: of the key type once a text key is converted."""
    return converted(k.key.name, k.key) if k.key.is_text else k.key


def width_notes(d: Draft, tables: list[KeyTable]) -> None:
    """An integer key column of another width than the master's key is referenced as it is: PostgreSQL
    takes a foreign key between integer widths (one btree operator family) without a rewrite."""
    for k in tables:
        if k.key.is_native_key and k.key.typname != d.ctx.key_type.typname:
            d.notes.append(f"{k.name}.{k.key.name} is {k.key.type}, the master's key {d.ctx.key_type.name}: referenced "
                           "as it is (a foreign key between integer widths needs no rewrite); a value the narrower "
                           "type cannot hold can never be written to it")


# sessions ---------------------------------------------------------------------------------

def lookup(d: Draft) -> Exists:
    """The planner's session lookup (predicates.Exists): the master as it will be (the key type), the source
    table with its key after conversion. Its `orphaned`/`not_in_master` are the scan's predicates."""
    src = d.ctx.source
    kt = d.ctx.key_type
    known = Known(d.master, Column(d.key, kt.name, kt.typname, False, kt),
                  src.name if src is not None and src.key_checkable else None,
                  key_after(src) if src is not None and src.key_checkable else None, key_type=kt)
    return Exists(known)


def orphaned(d: Draft, key: Column) -> sql.Composable:
    """The scan's `orphaned`: a valid key known neither to the master nor to the source table."""
    return predicates.orphaned(key, lookup=lookup(d))


def not_in_master(d: Draft, key: Column, alias: str = "t") -> sql.Composable:
    """The scan's `not_in_master`: a valid key the master lacks."""
    return predicates.not_in_master(key, alias, lookup(d))


def master_columns(d: Draft) -> set[str]:
    if d.ctx.master is not None:
        return set(d.ctx.master.columns)
    return {d.key, "user_id", "session_start", "session_end", "is_active"}


def master_values(d: Draft, origin: KeyTable, first_at: str, last_at: str, uid: str
                  ) -> tuple[list[sql.Composable], list[sql.Composable]]:
    """The master's columns a registration writes, and their values from a session's first and last
    created_at and its first row's user (SQL expressions; a user that does not exist: NULL)."""
    cfg = d.ctx.config
    created = origin.table.columns.get(cfg.created_at_column)
    have = master_columns(d)
    cols: list[sql.Composable] = [sql.Identifier(d.key)]
    values: list[sql.Composable] = [sql.SQL("b.sid")]
    if created is not None and {"session_start", "session_end"} & have:
        for name, expr in (("session_start", first_at), ("session_end", last_at)):
            if name in have:
                cols.append(sql.Identifier(name))
                values.append(sql.SQL(expr))
        if "is_active" in have:
            cols.append(sql.Identifier("is_active"))
            values.append(sql.SQL("coalesce({} >= now() - {} * interval '1 minute', false)").format(
                sql.SQL(last_at), sql.Literal(d.options.active_window_minutes)))
    if origin.user is not None and "user_id" in have:
        cols.append(sql.Identifier("user_id"))
        if d.ctx.users is not None:
            values.append(sql.SQL("(SELECT u.{uk} FROM {users} u WHERE u.{uk} = {uid} LIMIT 1)").format(
                uk=sql.Identifier(cfg.users_key), users=table_ref(d.ctx.users.name), uid=sql.SQL(uid)))
        else:
            values.append(sql.SQL(uid))
    return cols, values


def register_sessions(d: Draft, origin: KeyTable, pick: sql.Composable) -> sql.Composed:
    """INSERT into the master the sessions picked by `pick` (a SELECT of `sid`), described from `origin`.

    session_start/end: the earliest/latest created_at of the session's rows in `origin`; user: the
    user of its earliest row (ties: lowest primary key), NULL when that user does not exist.
    """
    cfg = d.ctx.config
    key = key_after(origin)
    table = origin.table
    created = table.columns.get(cfg.created_at_column)
    cols, values = master_values(d, origin, "a.first_at", "a.last_at", "f.uid")
    joins: list[sql.Composable] = []
    if created is not None and {"session_start", "session_end"} & master_columns(d):
        joins.append(sql.SQL("CROSS JOIN LATERAL (SELECT min(o.{c}) AS first_at, max(o.{c}) AS last_at "
                             "FROM {t} o WHERE {k} = b.sid) a").format(
            c=sql.Identifier(created.name), t=table_ref(origin.name), k=key_uuid(key, "o")))
    if origin.user is not None and "user_id" in master_columns(d):
        order = [sql.Identifier("o", created.name)] if created is not None else []
        order += [sql.Identifier("o", c) for c in table.primary_key] or [sql.Identifier("o", origin.user.name)]
        joins.append(sql.SQL("LEFT JOIN LATERAL (SELECT o.{u} AS uid FROM {t} o WHERE {k} = b.sid "
                             "ORDER BY {order} LIMIT 1) f ON true").format(
            u=sql.Identifier(origin.user.name), t=table_ref(origin.name), k=key_uuid(key, "o"),
            order=sql.SQL(", ").join(order)))
    return sql.SQL("INSERT INTO {master} ({cols}) SELECT {values} FROM ({pick}) b {joins} "
                   "ON CONFLICT DO NOTHING").format(
        master=table_ref(d.master), cols=sql.SQL(", ").join(cols), values=sql.SQL(", ").join(values),
        pick=pick, joins=sql.SQL(" ").join(joins))


def missing_from_master(d: Draft, relation: sql.Composable, key: Column) -> sql.Composed:
    """SELECT DISTINCT sid: the valid keys of `relation` (a table, or a subquery in parentheses) with no
    master row."""
    return sql.SQL("SELECT DISTINCT {k} AS sid FROM {t} t WHERE {missing}").format(
        k=key_uuid(key), t=relation, missing=not_in_master(d, key))


def source(d: Draft) -> KeyTable:
    """The source table (the backfill registers its sessions; planned only when it exists)."""
    if d.ctx.source is None:
        raise PlanError(f"{d.ctx.config.source} does not exist: nothing to register sessions from")
    return d.ctx.source


def backfill_all(d: Draft) -> sql.Composed:
    src = source(d)
    return register_sessions(d, src, missing_from_master(d, table_ref(src.name), key_after(src)))


# the backfill (auditor/fix/backfill.py) ---------------------------------------------------------

def candidate(d: Draft) -> backfill.Candidate:
    """What the backfill's walks keep of each session: the source's columns `register_sessions` reads."""
    src = source(d)
    have = master_columns(d)
    created = d.ctx.config.created_at_column if {"session_start", "session_end"} & have else ""
    user = src.user if "user_id" in have else None
    return backfill.Candidate.of(src.table, key_after(src).name, created, user, d.ctx.key_type)


def merge_into_master(d: Draft, c: backfill.Candidate) -> sql.Composed:
    """The parent's walk registers `f` (a session's first candidate, its latest end) when the master lacks it."""
    src = source(d)
    cols, values = master_values(d, src, "b.first_at" if c.created is not None else "NULL",
                                 "b.last_at" if c.created is not None else "NULL",
                                 "b.uid" if c.user is not None else "NULL")
    # a probe of the master's key per session, not an anti-join: the master grows with every batch while its
    # statistics say it is small, and a hashed anti-join would read it whole in each batch
    return sql.SQL("INSERT INTO {master} ({cols}) SELECT {values} FROM f b WHERE "
                   "(SELECT 1 FROM {master} m WHERE m.{k} = b.sid LIMIT 1) IS NULL ON CONFLICT DO NOTHING").format(
        master=table_ref(d.master), cols=sql.SQL(", ").join(cols), values=sql.SQL(", ").join(values),
        k=sql.Identifier(d.key))


def backfill_steps(d: Draft, src: KeyTable, depends_on: tuple[str, ...]) -> list[str]:
    """The walks over the source (a partition each, small ones grouped), then the parent's walk over their
    candidates into the master; returns the ids of all of them."""
    m = str(d.master)
    c = candidate(d)
    key = key_after(src)
    rows = d.options.batch_size * backfill.ROWS_PER_SESSION
    parts = src.table.leaf_partitions if src.table.is_partitioned else [
        Partition(src.name, "", True, 1, src.table.bytes, src.table.estimated_rows)]
    walks = []
    for number, group in enumerate(partition_groups.groups(parts, rows)):
        names = [p.name for p in group]
        step_id = partition_groups.group_id("backfill", group)
        if len(group) == 1:
            statement = backfill.partition_batch(c, names[0], step_id, number, rows)
            how = (f"{group[0].name}, in key ranges of about {rows} rows (its key index)")
        else:
            statement = backfill.group_batch(c, names, step_id, number)
            how = (f"{len(names)} small partitions ({names[0]} ... {names[-1]}, about "
                   f"{sum(p.estimated_rows for p in group)} rows: together, one statement, rather than a step each)")
        walks.append(d.add(Step(
            id=step_id, operation=Operation.BACKFILL,
            description=f"Read each session's first row, first and last time from {how} into {backfill.STAGING}",
            statements=backfill.tables(c) + (statement,),
            until=backfill.walk_ended(step_id, c.end) if len(group) == 1 else None,
            # it reads the partitions (blocking no writer) and writes the tool's own tables only
            lock=LockMode.ACCESS_SHARE, tables=tuple(str(n) for n in names),
            kind=Kind.BATCHED if len(group) == 1 else Kind.CHANGE, depends_on=depends_on,
            guard=backfill.guard(sql.SQL(" AND ").join(sql.SQL("({})").format(backfill_guard(d, n, key))
                                                       for n in names)),
            changes=(), target=m, repairs=REPAIRS_MASTER)).id)    # only the tool's own tables: nothing to back up
    merge_id = f"backfill:{m}"
    merge = d.add(Step(
        id=merge_id, operation=Operation.BACKFILL,
        description=f"Register in {m} every session it lacks from {backfill.STAGING}: its first row's time and "
        f"user, its last time (existing rows never overwritten), {d.options.batch_size} candidates a batch",
        statements=backfill.tables(c) + (backfill.merge_batch(c, merge_id, d.options.batch_size,
                                                              merge_into_master(d, c)),),
        until=backfill.walk_ended(merge_id, c.end), lock=LockMode.ROW_EXCLUSIVE, tables=(m,), kind=Kind.BATCHED,
        depends_on=tuple(walks), guard=backfill.guard(backfill_guard(d, src.name, key)),
        changes=(m,), target=m, repairs=REPAIRS_MASTER))
    return [*walks, merge.id]


def backfill_guard(d: Draft, relation: QualifiedName, key: Column) -> sql.Composed:
    return no_rows(table_ref(relation), not_in_master(d, key))


# rows out ---------------------------------------------------------------------------------

def quarantine_name(k: KeyTable) -> QualifiedName:
    return cascade.quarantine_name(k.name)


def move_rows(d: Draft, k: KeyTable, predicate: sql.Composable, reason: str,
              now: sql.Composable | None = None) -> tuple[Query, ...]:
    """Statements that move the rows matching `predicate` to the quarantine table, with every row a
    cascade would delete, each to its own (one transaction; auditor/fix/cascade.py). `now`: the predicate
    as the database is when the plan is made (counts, preflight), when it differs."""
    g = cascade.of_table(d.ctx.catalog, k.table)
    d.removals.setdefault((k.name, reason), cascade.Removal(g, now if now is not None else predicate,
                                                            f"the quarantine of {reason} rows of {k.name}", True))
    return cascade.quarantine_statements(g, predicate, reason)


def orphan_statements(d: Draft, k: KeyTable) -> tuple[Query, ...]:
    key = key_after(k)
    pred = orphaned(d, key)
    mode = d.options.orphans
    if mode == "quarantine":
        return move_rows(d, k, pred, "orphaned", cascade.orphaned_now(d.ctx, k))
    if mode == "register":
        return (register_sessions(d, k, sql.SQL("SELECT DISTINCT {} AS sid FROM {} t WHERE {}").format(
            key_uuid(key), table_ref(k.name), pred)),)
    d.removals.setdefault((k.name, "orphaned"), cascade.Removal(
        cascade.of_table(d.ctx.catalog, k.table), cascade.orphaned_now(d.ctx, k),
        f"the delete of orphaned rows of {k.name}", False))
    return (sql.SQL("DELETE FROM {} AS t WHERE {}").format(table_ref(k.name), pred),)


def orphan_guard(d: Draft, k: KeyTable) -> sql.Composed:
    return no_rows(table_ref(k.name), orphaned(d, key_after(k)))


# the steps ----------------------------------------------------------------------------------------
def plan_sessions(d: Draft) -> list[str]:
    """Add the session_master migration to the draft; returns the ids of its last changes."""
    tables = migratable(d)
    d.migrated = tables
    if not tables:
        return []
    master = d.ctx.master
    key_type = d.ctx.key_type
    if master is not None and (d.ctx.master_key is None or not d.ctx.master_key.is_native_key):
        raise PlanError(f"{d.master} exists but its {d.key} column is not of a key type (uuid, bigint, integer, "
                        "smallint)")
    src = d.ctx.source if d.ctx.source in tables else None
    width_notes(d, tables)
    m = str(d.master)
    preflight = "preflight"
    create = d.add(create_master(d, preflight))
    if master is None and d.ctx.users is not None:
        d.notes.append(
            f"{d.master}.user_id will reference {d.ctx.users.name}: deleting a user "
            + ("sets the master's user_id of that user's sessions NULL and keeps every row (--master-user-delete "
               "set-null)" if d.options.master_user_delete == "set-null" else
               "who has sessions fails from then on (--master-user-delete no-action, the guide's schema): the "
               "application's deletes of users must go first")
            + ".")
    ready: dict[str, list[str]] = {}   # table -> steps after which its key has the key type, malformed-free
    for k in tables:
        name = str(k.name)
        ready[name] = [preflight]
        if k.key.is_text:
            d.notes.append(
                f"{name}.{k.key.name} becomes {key_type.name}: statements that send it as a typed text parameter "
                f"then fail (a varchar or text parameter, as JDBC's setString sends unless stringtype=unspecified: "
                f"'column is of type {key_type.name} but expression is of type character varying', 'operator does "
                f"not exist: {key_type.name} = text'); untyped parameters and literals keep working. Check the "
                f"application's statements on {name} before the cutover.")
            graph = cascade.of_table(d.ctx.catalog, k.table)
            bad = d.add(cascade.widen(Step(
                id=f"malformed:{name}", operation=Operation.QUARANTINE_MALFORMED,
                description=f"Move rows of {name} whose {k.key.name} is not {d.ctx.key_type_phrase} to "
                            f"{quarantine_name(k)}",
                statements=move_rows(d, k, key_malformed(k.key), "malformed"),
                lock=LockMode.ROW_EXCLUSIVE, tables=(name,), depends_on=(preflight,),
                guard=sql.SQL("SELECT {} OR NOT EXISTS (SELECT 1 FROM {} t WHERE {})").format(
                    column_has_type(k.name, k.key.name, key_type.name), table_ref(k.name), key_malformed(k.key)),
                changes=(name,), target=name, column=k.key.name, repairs=REPAIRS_MALFORMED), graph))
            convert = d.add(cascade.widen(Step(
                id=f"to-uuid:{name}", operation=Operation.CONVERT_TO_UUID,
                description=f"Convert {name}.{k.key.name} from {k.key.type} to {key_type.name} (rewrites the table, "
                            f"{k.table.bytes} bytes, under ACCESS EXCLUSIVE)",
                statements=(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(table_ref(k.name)),)
                # all of them: the quarantine table too, which the malformed step (nothing to move) may not
                # have created
                + move_rows(d, k, key_malformed(k.key), "malformed")
                + (sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {kt} USING {}::{kt}").format(
                    table_ref(k.name), sql.Identifier(k.key.name), trimmed(k.key, ""), kt=sql.SQL(key_type.name)),),
                lock=LockMode.ACCESS_EXCLUSIVE, tables=(name,), depends_on=(bad.id,),
                guard=sql.SQL("SELECT {}").format(column_has_type(k.name, k.key.name, key_type.name)), rewrites=True,
                table_bytes=((name, k.table.bytes),), changes=(name,), target=name, column=k.key.name,
                repairs=REPAIRS_KEY_TYPE), graph))
            ready[name] = [convert.id]
    # the source's index must be one the backfill can walk in key order (btree, not partial)
    indexed = {str(k.name): d.take(leading_index_steps(k.table, k.key.name, ready[str(k.name)],
                                                       repairs=index.REPAIRS, ordered=k.is_source)) for k in tables}
    backfills = []
    if src is not None:
        # the partitions' walks read the key's index: built above when the source has none it can walk
        backfills = backfill_steps(d, src, (create.id, *indexed[str(src.name)], *ready[str(src.name)]))
    bridges = add_bridges(d, tables, create.id, ready, backfills)   # the cutover bridge (auditor/fix/bridge.py)
    previous_fk: list[str] = []
    last_steps = []
    for k in tables:
        name = str(k.name)
        before_fk = [create.id, *backfills, *indexed[name], *ready[name], *bridges, *previous_fk]
        if not k.is_source:
            register = d.options.orphans == "register"
            orphans = d.add(cascade.widen_orphans(d.ctx, d.options.orphans, k, Step(
                id=f"orphans:{name}", operation=Operation.ORPHANS, description=orphan_description(d, k),
                statements=orphan_statements(d, k), lock=LockMode.ROW_EXCLUSIVE,
                tables=(name, m) if register else (name,),
                depends_on=tuple(before_fk), guard=orphan_guard(d, k),
                changes=(m,) if register else (name,), target=name, column=k.key.name, repairs=REPAIRS_ORPHANS)))
            before_fk.append(orphans.id)
        before_fk += add_gate(d, k, before_fk)
        last = fk_steps(d, k, before_fk)
        previous_fk = [last]
        last_steps.append(last)
    d.add(Step(id="verify", operation=Operation.VERIFY,
               description="Every key table has a validated foreign key to the master; every partition of a "
               "partitioned one (those created during the apply too) a valid index on its key, attached, and the FK",
               statements=(verify_query(d, tables),), lock=LockMode.ACCESS_SHARE, tables=(),
               depends_on=tuple(last_steps), kind=Kind.CHECK))
    return last_steps


def orphan_description(d: Draft, k: KeyTable) -> str:
    what = {"quarantine": f"move to {quarantine_name(k)} (same transaction as the delete)",
            "register": f"register their sessions in {d.master}",
            "delete": "delete them"}[d.options.orphans]
    return f"Rows of {k.name} whose session is in neither {d.master} nor the source table: {what}"


def create_master(d: Draft, after: str) -> Step:
    cfg = d.ctx.config
    src = d.ctx.source
    created = src.table.columns.get(cfg.created_at_column) if src is not None else None
    ts = sql.SQL(created.type if created is not None and created.typname in ("timestamptz", "timestamp")
                 else "timestamptz")
    user_ref: sql.Composable = sql.SQL("")
    tables: tuple[str, ...] = ()
    if d.ctx.users is not None:
        # ON DELETE SET NULL (default): the application's deletes of users keep working after the cutover
        on_delete = " ON DELETE SET NULL" if d.options.master_user_delete == "set-null" else ""
        user_ref = sql.SQL(" REFERENCES {} ({})" + on_delete).format(
            table_ref(d.ctx.users.name), sql.Identifier(cfg.users_key))
        tables = (str(d.ctx.users.name),)
    # the key type; a uuid key gets its default (an integer key's values come from the application)
    key = sql.SQL("uuid PRIMARY KEY DEFAULT gen_random_uuid()" if d.ctx.key_type.is_uuid
                  else f"{d.ctx.key_type.name} PRIMARY KEY")
    users_key = d.ctx.users.columns.get(cfg.users_key) if d.ctx.users is not None else None
    # user_id as the users' key: bigint for a bigint key, else yumai's int
    user_type = sql.SQL("bigint" if users_key is not None and users_key.typname == "int8" else "int")

    def table(reference: sql.Composable) -> sql.Composed:
        return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({} {key}, "
                       "user_id {ut}{}, session_start {ts} DEFAULT CURRENT_TIMESTAMP, session_end {ts}, "
                       "is_active boolean DEFAULT true)").format(
            table_ref(d.master), sql.Identifier(d.key), reference, ts=ts, key=key, ut=user_type)

    statements: tuple[Query, ...] = (table(user_ref),)
    if d.ctx.users is not None:
        # the new table's user_id FK gets its index at once (the table is empty: no cost)
        statements += (sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (user_id)").format(
            sql.Identifier(short_name(d.master.name, "user_id", suffix="idx")), table_ref(d.master)),)
    what = ""
    if src is not None and src.key_checkable:
        # the backfill's bookkeeping with it: its walks' guards can then tell "begun" without reading rows
        statements += backfill.tables(candidate(d))
        what = f", and the backfill's {backfill.PROGRESS} and {backfill.STAGING}"
    return Step(id="master", operation=Operation.CREATE_MASTER,
                description=f"Create {d.master} (the guide's schema) if it does not exist{what}",
                statements=statements, lock=LockMode.SHARE_ROW_EXCLUSIVE if tables else LockMode.NONE,
                tables=tables, depends_on=(after,),
                guard=sql.SQL("SELECT {} IS NOT NULL").format(relid(d.master)), changes=(str(d.master),),
                target=str(d.master), repairs=REPAIRS_MASTER,
                # a subscriber gets the table and its key (the replica identity), not the publisher's FK
                replica_ddl=(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(d.master.schema)),
                             table(sql.SQL(""))))


def existing_fk(d: Draft, fks: list[ForeignKey], table: QualifiedName) -> ForeignKey | None:
    for fk in fks:
        if fk.table == table and fk.columns == (d.key,) and d.ctx.is_master_fk(fk):
            return fk
    return None


def fk_steps(d: Draft, k: KeyTable, after: list[str]) -> str:
    """Catch-up, FK NOT VALID, catch-up again, VALIDATE; returns the last step's id."""
    name = str(k.name)
    m = str(d.master)
    key = k.key.name
    fk_name = short_name(k.name.name, key, suffix="fkey")
    source_known = d.ctx.source is not None and d.ctx.source.key_checkable
    catchup_stmts: tuple[Query, ...] = (backfill_all(d), backfill.drop_tables()) if source_known else ()
    if not k.is_source:
        catchup_stmts += orphan_statements(d, k)
    # the cheap test first: while the walks' table is there (the backfills ran), the catch-up runs to drop it
    guards = [backfill.progress_gone()] if source_known else []
    if k.is_source:
        guards += [backfill_guard(d, k.name, key_after(k))] if source_known else []
    elif source_known:
        # done when no row of k lacks its session in the master (nothing to register for k, no orphan of
        # k): what k's VALIDATE needs, in one pass over k. Not also a pass over the source each time: the
        # source's own catch-ups and its foreign key (added before this) keep its sessions in the master.
        guards.append(backfill_guard(d, k.name, key_after(k)))
    else:
        guards.append(orphan_guard(d, k))

    def catchup(step_id: str, deps, why: str) -> Built:
        out = Built(last=list(deps))
        if not catchup_stmts:
            return out
        out.last = [out.add(cascade.widen_orphans(d.ctx, d.options.orphans, k, Step(
            id=step_id, operation=Operation.CATCHUP,
            description=f"Catch-up {why}: register sessions created since the backfill"
            + ("" if k.is_source else f"; {d.options.orphans} new orphans of {name}"),
            statements=catchup_stmts, lock=LockMode.ROW_EXCLUSIVE,
            tables=(m,) if k.is_source else (m, name), depends_on=tuple(deps),
            guard=sql.SQL("SELECT {}").format(sql.SQL(" AND ").join(sql.SQL("({})").format(g) for g in guards)),
            changes=(m,) if k.is_source else (m, name), target=name,
            repairs=REPAIRS_MASTER + (() if k.is_source else REPAIRS_ORPHANS)))).id]
        return out

    spec = FkSpec((key,), d.master, (d.key,), on_delete="c")
    existing = existing_fk(d, k.table.foreign_keys, k.name)
    if existing is not None and existing.validated:
        return after[-1]
    pre = d.take(catchup(f"catchup:{name}", after, "before the foreign key"))

    def partition_constraint(p) -> str:
        found = existing_fk(d, k.table.partition_foreign_keys, p.name)
        return found.name if found is not None else fk_name

    built = fk_sequence(
        d.version, k.table, spec, existing.name if existing is not None else fk_name, pre, whole=existing is not None,
        settle=lambda deps: catchup(f"settle:{name}", deps, "after NOT VALID, before VALIDATE"),
        partition_constraint=partition_constraint, repairs=foreign_key.REPAIRS)
    return d.take(built)[-1]


def verify_query(d: Draft, tables: list[KeyTable]) -> sql.Composed:
    """A problem per key table without a validated FK to the master; per partitioned one, every partition
    as it is at the end (auditor/fix/coverage.py: its index and FK, whenever it was created)."""
    parts = [sql.SQL("SELECT {} WHERE NOT ({})").format(
        sql.Literal(f"{k.name}.{k.key.name} has no validated foreign key to {d.master}"),
        fk_exists(k.name, k.key.name, d.master, validated=True)) for k in tables]
    parts += [coverage.partition_problems(k.name, k.key.name, d.master) for k in tables if k.table.is_partitioned]
    return sql.SQL(" UNION ALL ").join(parts)


# --- the bridge and the gate on the session migration's Draft (auditor/fix/bridge.py) ----------------

def add_bridges(d, tables: list[KeyTable], create: str, ready: dict, backfills: list[str]) -> list[str]:
    """The bridge before the first FK, while any key table's FK is still to be made; returns its ids."""
    if all((fk := existing_fk(d, k.table.foreign_keys, k.name)) is not None and fk.validated for k in tables):
        return []
    early = bridge.early_writes(d.ctx, d.evidence)
    d.notes += bridge.plan_notes(d.ctx, tables, d.options.bridge, d.version, early)
    return [d.add(step).id for k in bridge.bridged_tables(d.ctx, tables, d.options.bridge, early)
            for step in bridge.bridge_steps(d.ctx, k, version=d.version, master_columns=master_columns(d),
                                     active_window_minutes=d.options.active_window_minutes,
                                     depends_on=[create, *ready[str(k.name)], *(backfills if k.is_source else [])])]


def add_gate(d, k: KeyTable, before_fk: list[str]) -> list[str]:
    """--bridge none: the gate right before `k`'s FK (none when the FK exists already)."""
    if d.options.bridge != "none" or existing_fk(d, k.table.foreign_keys, k.name) is not None:
        return []
    src = d.ctx.source
    sweep: tuple[Query, ...] = (backfill_all(d),) if src is not None and src.key_checkable else ()
    if not k.is_source:
        sweep += orphan_statements(d, k)
    return [d.add(bridge.gate_step(k, d.master, key_after, lambda key: not_in_master(d, key), sweep, before_fk)).id]

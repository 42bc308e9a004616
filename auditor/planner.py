"""The fix planner: from the audit context, the ordered steps of the session_master migration.

Every step is a `Step` (auditor/steps.py) with a guard, so the same plan can be run again after a
crash: what is done is skipped. Key predicates come from `checks/predicates.py`, so that the rows
the scan counts as malformed or orphaned are exactly the rows the fix moves.

Order: preflight, master, malformed rows out and text keys to uuid, indexes (CONCURRENTLY), backfill
per source partition, orphans, then per key table (the source table first): catch-up backfill, FK
NOT VALID, catch-up again, VALIDATE (per partition, then the parent, on PostgreSQL 12-17); verify.
With `include=("schema",)`, `schema_plan` then adds the schema-wide FKs with the same builders
(`leading_index_steps`, `fk_sequence`, `add_fk`, `validate_fk`).
"""
from __future__ import annotations

import dataclasses
import graphlib
import hashlib
from dataclasses import dataclass, field

from psycopg import sql

from yumai_audit.checks.predicates import key_malformed, key_uuid, key_valid, table_ref, trimmed

from .catalog import Column, ForeignKey, Table
from .config import QualifiedName
from .context import AuditContext, KeyTable
from .errors import AuditError
from .steps import Kind, LockMode, Step

QUARANTINE_SCHEMA = "yumai_quarantine"
ORPHAN_MODES = ("quarantine", "register", "delete")
INCLUDES = ("schema", "users")   # `fix --include`: what the plan covers beyond the session migration
MISSING_USERS_MODES = ("keep", "null", "quarantine")   # `--missing-users`: rows naming a user that does not exist
UUID = Column("uuid", "uuid", "uuid", False)  # a stand-in: a key column once converted to uuid
# PostgreSQL 18 accepts ADD FOREIGN KEY ... NOT VALID on a partitioned table; 12-17 refuse it.
PG_NOT_VALID_ON_PARTITIONED = 180000


class PlanError(AuditError):
    """The migration cannot be planned as asked (bad option, unsupported shape, dependency cycle)."""


@dataclass(frozen=True)
class FixOptions:
    orphans: str = "quarantine"
    yes_delete: bool = False
    active_window_minutes: int = 30
    batch_size: int = 5000
    lock_timeout: float = 2.0
    include: tuple[str, ...] = ()
    missing_users: str = "keep"

    def __post_init__(self):
        if isinstance(self.include, str):
            object.__setattr__(self, "include", tuple(p.strip() for p in self.include.split(",") if p.strip()))
        object.__setattr__(self, "include", tuple(dict.fromkeys(self.include)))
        unknown = [i for i in self.include if i not in INCLUDES]
        if unknown:
            raise PlanError(f"--include must be one of {', '.join(INCLUDES)}, not {unknown[0]!r}")
        if self.missing_users not in MISSING_USERS_MODES:
            raise PlanError(f"--missing-users must be one of {', '.join(MISSING_USERS_MODES)}, not {self.missing_users!r}")
        if self.orphans not in ORPHAN_MODES:
            raise PlanError(f"--orphans must be one of {', '.join(ORPHAN_MODES)}, not {self.orphans!r}")
        if self.orphans == "delete" and not self.yes_delete:
            raise PlanError("--orphans delete deletes rows for good: add --yes-delete to confirm")
        if self.active_window_minutes < 0:
            raise PlanError("--active-window must be zero or more minutes")
        if self.batch_size < 1:
            raise PlanError("batch size must be at least 1")
        if self.lock_timeout <= 0:
            raise PlanError("--lock-timeout must be a positive number of seconds")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Plan:
    steps: list[Step]
    server_version_num: int
    options: FixOptions
    done: dict[str, bool] = field(default_factory=dict)   # guard values when the plan was made
    notes: list[str] = field(default_factory=list)

    @property
    def pending(self) -> list[Step]:
        return [s for s in self.steps if s.kind is not Kind.CHECK and not self.done.get(s.id)]

    def step(self, step_id: str) -> Step:
        return next(s for s in self.steps if s.id == step_id)

    def to_dict(self) -> dict:
        return {"steps": [s.to_dict(self.done.get(s.id)) for s in self.steps],
                "server_version_num": self.server_version_num, "options": self.options.to_dict(),
                "notes": list(self.notes)}


def order_steps(steps: list[Step]) -> list[Step]:
    """Topological order; among steps ready at the same time, the order they were declared in."""
    by_id = {}
    for s in steps:
        if s.id in by_id:
            raise PlanError(f"two steps have the id {s.id}")
        by_id[s.id] = s
    position = {s.id: i for i, s in enumerate(steps)}
    sorter = graphlib.TopologicalSorter()
    for s in steps:
        missing = [d for d in s.depends_on if d not in by_id]
        if missing:
            raise PlanError(f"step {s.id} depends on unknown step {missing[0]}")
        sorter.add(s.id, *s.depends_on)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        raise PlanError("the fix steps depend on each other in a cycle: " + " -> ".join(cycle)) from None
    out = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        for sid in ready:
            out.append(by_id[sid])
            sorter.done(sid)
    return out


# --- SQL helpers -----------------------------------------------------------------------------------

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


def leading_index_exists(table: QualifiedName, column: str, name: str | None = None) -> sql.Composable:
    """A valid index whose first column is `column` (or, with `name`, that index, valid)."""
    which = sql.SQL("ic.relname = {}").format(sql.Literal(name)) if name else sql.SQL("i.indkey[0] = {}").format(
        attnum(table, column))
    return sql.SQL("SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
                   "WHERE i.indrelid = {} AND i.indisvalid AND {})").format(relid(table), which)


def column_is_uuid(table: QualifiedName, column: str) -> sql.Composable:
    return sql.SQL("(SELECT a.atttypid = 'uuid'::regtype FROM pg_attribute a WHERE a.attrelid = {} AND a.attname = {})"
                   ).format(relid(table), sql.Literal(column))


@dataclass
class _Builder:
    ctx: AuditContext
    options: FixOptions
    version: int
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    our_indexes: list[str] = field(default_factory=list)
    # (schema, index name, table, column) of every index the plan creates: the name must be free
    index_claims: list[tuple[str, str, str, str]] = field(default_factory=list)
    altered: list[QualifiedName] = field(default_factory=list)   # tables the schema steps alter (owner needed)
    referenced: list[QualifiedName] = field(default_factory=list)  # tables their FKs reference (REFERENCES needed)

    # names ------------------------------------------------------------------------------------
    @property
    def master(self) -> QualifiedName:
        return self.ctx.config.master

    @property
    def key(self) -> str:
        return self.ctx.config.key_column

    def add(self, step: Step) -> Step:
        self.steps.append(step)
        return step

    def migratable(self) -> list[KeyTable]:
        out = []
        for k in self.ctx.key_tables:
            if not k.key_checkable:
                self.notes.append(f"{k.name}.{k.key.name} is {k.key.type}, neither uuid nor text: left as it is")
                continue
            if k.table.is_partitioned and any(p.level > 1 for p in k.table.partitions):
                self.notes.append(f"{k.name} has sub-partitions: not migrated by this version")
                continue
            out.append(k)
        # the source table first: its FK must exist before the other tables' catch-ups can trust it
        return sorted(out, key=lambda k: not k.is_source)

    def key_after(self, k: KeyTable) -> Column:
        """The key column as the later steps see it: uuid once a text key is converted."""
        return dataclasses.replace(UUID, name=k.key.name) if k.key.is_text else k.key

    # sessions ---------------------------------------------------------------------------------
    def in_master(self, key: sql.Composable) -> sql.Composable:
        return sql.SQL("EXISTS (SELECT 1 FROM {} m WHERE m.{} = {})").format(
            table_ref(self.master), sql.Identifier(self.key), key)

    def in_source(self, key: sql.Composable) -> sql.Composable:
        src = self.ctx.source
        if src is None or not src.key_checkable:
            return sql.SQL("false")
        return sql.SQL("EXISTS (SELECT 1 FROM {} s WHERE {} = {})").format(
            table_ref(src.name), key_uuid(self.key_after(src), "s"), key)

    def orphaned(self, key: Column) -> sql.Composable:
        """The scan's `orphaned`: a valid key known neither to the master nor to the source table."""
        k = key_uuid(key)
        return sql.SQL("({} AND NOT {} AND NOT {})").format(key_valid(key), self.in_master(k), self.in_source(k))

    def master_columns(self) -> set[str]:
        if self.ctx.master is not None:
            return set(self.ctx.master.columns)
        return {self.key, "user_id", "session_start", "session_end", "is_active"}

    def register_sessions(self, origin: KeyTable, pick: sql.Composable, limit: int | None) -> sql.Composable:
        """INSERT into the master the sessions picked by `pick` (a SELECT of `sid`), described from `origin`.

        session_start/end: the earliest/latest created_at of the session's rows in `origin`; user: the
        user of its earliest row (ties: lowest primary key), NULL when that user does not exist.
        """
        cfg = self.ctx.config
        key = self.key_after(origin)
        table = origin.table
        created = table.columns.get(cfg.created_at_column)
        have = self.master_columns()
        cols, values = [sql.Identifier(self.key)], [sql.SQL("b.sid")]
        joins = []
        if created is not None and {"session_start", "session_end"} & have:
            joins.append(sql.SQL("CROSS JOIN LATERAL (SELECT min(o.{c}) AS first_at, max(o.{c}) AS last_at "
                                 "FROM {t} o WHERE {k} = b.sid) a").format(
                c=sql.Identifier(created.name), t=table_ref(origin.name), k=key_uuid(key, "o")))
            for name, expr in (("session_start", "a.first_at"), ("session_end", "a.last_at")):
                if name in have:
                    cols.append(sql.Identifier(name))
                    values.append(sql.SQL(expr))
            if "is_active" in have:
                cols.append(sql.Identifier("is_active"))
                values.append(sql.SQL("coalesce(a.last_at >= now() - {} * interval '1 minute', false)").format(
                    sql.Literal(self.options.active_window_minutes)))
        if origin.user is not None and "user_id" in have:
            order = [sql.Identifier("o", created.name)] if created is not None else []
            order += [sql.Identifier("o", c) for c in table.primary_key] or [sql.Identifier("o", origin.user.name)]
            joins.append(sql.SQL("LEFT JOIN LATERAL (SELECT o.{u} AS uid FROM {t} o WHERE {k} = b.sid "
                                 "ORDER BY {order} LIMIT 1) f ON true").format(
                u=sql.Identifier(origin.user.name), t=table_ref(origin.name), k=key_uuid(key, "o"),
                order=sql.SQL(", ").join(order)))
            cols.append(sql.Identifier("user_id"))
            if self.ctx.users is not None:
                values.append(sql.SQL("(SELECT u.{uk} FROM {users} u WHERE u.{uk} = f.uid LIMIT 1)").format(
                    uk=sql.Identifier(cfg.users_key), users=table_ref(self.ctx.users.name)))
            else:
                values.append(sql.SQL("f.uid"))
        limit_sql = sql.SQL(" LIMIT {}").format(sql.Literal(limit)) if limit else sql.SQL("")
        return sql.SQL("INSERT INTO {master} ({cols}) SELECT {values} FROM ({pick}{limit}) b {joins} "
                       "ON CONFLICT DO NOTHING").format(
            master=table_ref(self.master), cols=sql.SQL(", ").join(cols), values=sql.SQL(", ").join(values),
            pick=pick, limit=limit_sql, joins=sql.SQL(" ").join(joins))

    def missing_from_master(self, relation: QualifiedName, key: Column) -> sql.Composable:
        """SELECT DISTINCT sid: the valid keys of `relation` with no master row."""
        return sql.SQL("SELECT DISTINCT {k} AS sid FROM {t} t WHERE {valid} AND NOT {m}").format(
            k=key_uuid(key), t=table_ref(relation), valid=key_valid(key), m=self.in_master(key_uuid(key)))

    def backfill_all(self) -> sql.Composable:
        src = self.ctx.source
        return self.register_sessions(src, self.missing_from_master(src.name, self.key_after(src)), None)

    def backfill_guard(self, relation: QualifiedName, key: Column) -> sql.Composable:
        return sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {} t WHERE {} AND NOT {})").format(
            table_ref(relation), key_valid(key), self.in_master(key_uuid(key)))

    # rows out ---------------------------------------------------------------------------------
    def quarantine_name(self, k: KeyTable) -> QualifiedName:
        return QualifiedName(QUARANTINE_SCHEMA, f"{k.name.schema}__{k.name.name}")

    def move_rows(self, k: KeyTable, predicate: sql.Composable, reason: str) -> tuple[sql.Composable, ...]:
        """Statements that move the rows matching `predicate` to the quarantine table (one transaction)."""
        q = self.quarantine_name(k)
        names = sql.SQL(", ").join(sql.Identifier(c) for c in k.table.columns)
        return (
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(QUARANTINE_SCHEMA)),
            sql.SQL("CREATE TABLE IF NOT EXISTS {q} (LIKE {t}, yumai_reason text NOT NULL, "
                    "yumai_quarantined_at timestamptz NOT NULL DEFAULT now())").format(
                q=table_ref(q), t=table_ref(k.name)),
            sql.SQL("WITH moved AS (DELETE FROM {t} AS t WHERE {pred} RETURNING t.*) "
                    "INSERT INTO {q} ({names}, yumai_reason) SELECT {names}, {reason} FROM moved").format(
                t=table_ref(k.name), pred=predicate, q=table_ref(q), names=names, reason=sql.Literal(reason)),
        )

    def orphan_statements(self, k: KeyTable) -> tuple[sql.Composable, ...]:
        key = self.key_after(k)
        pred = self.orphaned(key)
        mode = self.options.orphans
        if mode == "quarantine":
            return self.move_rows(k, pred, "orphaned")
        if mode == "register":
            return (self.register_sessions(k, sql.SQL("SELECT DISTINCT {} AS sid FROM {} t WHERE {}").format(
                key_uuid(key), table_ref(k.name), pred), None),)
        return (sql.SQL("DELETE FROM {} AS t WHERE {}").format(table_ref(k.name), pred),)

    def orphan_guard(self, k: KeyTable) -> sql.Composable:
        return sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {} t WHERE {})").format(
            table_ref(k.name), self.orphaned(self.key_after(k)))

    # the steps --------------------------------------------------------------------------------
    def build(self, evidence: dict | None = None) -> list[Step]:
        tables = self.migratable()
        schema = "schema" in self.options.include
        if not tables and not schema:
            raise PlanError("nothing to migrate: no key column of type uuid or text")
        after = self.session_steps(tables) if tables else [self.add(self.preflight(tables)).id]
        if schema:
            from .schema_plan import add_schema_steps

            add_schema_steps(self, evidence or {}, after)
        if "users" in self.options.include:
            from .users_plan import add_user_steps

            add_user_steps(self, evidence or {}, after)
        # the preflight knows our index names only now (leftovers of ours are rebuilt, not refused)
        self.steps[0] = self.preflight(tables)
        return order_steps(self.steps)

    def session_steps(self, tables: list[KeyTable]) -> list[str]:
        """The session_master migration; returns the ids of its last changes."""
        master = self.ctx.master
        if master is not None and (self.key not in master.columns or not master.columns[self.key].is_uuid):
            raise PlanError(f"{self.master} exists but its {self.key} column is not a uuid")
        src = self.ctx.source if self.ctx.source in tables else None
        m = str(self.master)
        preflight = self.add(self.preflight(tables))
        create = self.add(self.create_master(preflight.id))
        ready: dict[str, list[str]] = {}   # table -> steps after which its key is uuid, malformed-free
        for k in tables:
            ready[str(k.name)] = [preflight.id]
            if k.key.is_text:
                bad = self.add(Step(
                    id=f"malformed:{k.name}", description=f"Move rows of {k.name} whose {k.key.name} is not a uuid "
                    f"to {self.quarantine_name(k)}", statements=self.move_rows(k, key_malformed(k.key), "malformed"),
                    repairs=("malformed_session_ids",),
                    lock=LockMode.ROW_EXCLUSIVE, tables=(str(k.name),), depends_on=(preflight.id,),
                    guard=sql.SQL("SELECT {} OR NOT EXISTS (SELECT 1 FROM {} t WHERE {})").format(
                        column_is_uuid(k.name, k.key.name), table_ref(k.name), key_malformed(k.key)),
                    changes=(str(k.name),)))
                convert = self.add(Step(
                    id=f"to-uuid:{k.name}",
                    description=f"Convert {k.name}.{k.key.name} from {k.key.type} to uuid (rewrites the table, "
                                f"{k.table.bytes} bytes, under ACCESS EXCLUSIVE)",
                    statements=(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(table_ref(k.name)),)
                    + self.move_rows(k, key_malformed(k.key), "malformed")[2:]
                    + (sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE uuid USING {}::uuid").format(
                        table_ref(k.name), sql.Identifier(k.key.name), trimmed(k.key, "")),),
                    lock=LockMode.ACCESS_EXCLUSIVE, tables=(str(k.name),), depends_on=(bad.id,),
                    guard=sql.SQL("SELECT {}").format(column_is_uuid(k.name, k.key.name)), rewrites=True,
                    table_bytes=((str(k.name), k.table.bytes),), changes=(str(k.name),),
                    repairs=("malformed_session_ids", "noncanonical_session_ids", "key_type_mismatch")))
                ready[str(k.name)] = [convert.id]
        indexed = {str(k.name): self.index_steps(k, ready[str(k.name)]) for k in tables}
        backfills = []
        if src is not None:
            parts = [p.name for p in src.table.leaf_partitions] if src.table.is_partitioned else [src.name]
            for part in parts:
                key = self.key_after(src)
                backfills.append(self.add(Step(
                    id=f"backfill:{part}", description=f"Register in {m} every session of {part} it lacks "
                    f"(batches of {self.options.batch_size}, existing rows never overwritten)",
                    statements=(self.register_sessions(src, self.missing_from_master(part, key),
                                                       self.options.batch_size),),
                    lock=LockMode.ROW_EXCLUSIVE, tables=(m,), kind=Kind.BATCHED,
                    depends_on=(create.id, *indexed[str(src.name)], *ready[str(src.name)]),
                    guard=self.backfill_guard(part, key), changes=(m,), repairs=("missing_master_rows",))).id)
        previous_fk: list[str] = []
        fk_steps = []
        for k in tables:
            name = str(k.name)
            before_fk = [create.id, *backfills, *indexed[name], *ready[name], *previous_fk]
            if not k.is_source:
                orphans = self.add(Step(
                    id=f"orphans:{k.name}", description=self.orphan_description(k),
                    statements=self.orphan_statements(k), lock=LockMode.ROW_EXCLUSIVE,
                    tables=(name, m) if self.options.orphans == "register" else (name,),
                    depends_on=tuple(before_fk), guard=self.orphan_guard(k),
                    changes=(m,) if self.options.orphans == "register" else (name,),
                    repairs=("orphaned_session_ids",)))
                before_fk.append(orphans.id)
            last = self.fk_steps(k, before_fk)
            previous_fk = [last]
            fk_steps.append(last)
        self.add(Step(id="verify", description="Every key table has a validated foreign key to the master",
                      statements=(self.verify_query(tables),), lock=LockMode.ACCESS_SHARE, tables=(),
                      depends_on=tuple(fk_steps), kind=Kind.CHECK))
        return fk_steps

    def orphan_description(self, k: KeyTable) -> str:
        what = {"quarantine": f"move to {self.quarantine_name(k)} (same transaction as the delete)",
                "register": f"register their sessions in {self.master}",
                "delete": "delete them"}[self.options.orphans]
        return f"Rows of {k.name} whose session is in neither {self.master} nor the source table: {what}"

    def preflight(self, tables: list[KeyTable]) -> Step:
        """A query whose rows are the reasons not to start (none: go)."""
        names = [k.name for k in tables] + ([self.ctx.users.name] if self.ctx.users is not None and tables else [])
        if self.ctx.master is not None and tables:
            names.append(self.master)
        names += [n for n in dict.fromkeys(self.altered) if n not in names]
        pairs = sql.SQL(", ").join(sql.SQL("({}, {})").format(sql.Literal(n.schema), sql.Literal(n.name))
                                   for n in names or [QualifiedName("", "")])   # no table: matches nothing
        parts = [
            sql.SQL("SELECT 'PostgreSQL ' || current_setting('server_version') || ' has no gen_random_uuid() "
                    "(core since 13; on 12 install pgcrypto)' WHERE to_regprocedure('gen_random_uuid()') IS NULL"),
            sql.SQL("SELECT 'the server is a read-only standby' WHERE pg_is_in_recovery()"),
            sql.SQL("SELECT format('%s is owned by %s: connect as its owner or a superuser', "
                    "quote_ident(n.nspname) || '.' || quote_ident(c.relname), pg_get_userbyid(c.relowner)) "
                    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE (n.nspname, c.relname) IN ({}) AND NOT pg_has_role(current_user, c.relowner, 'MEMBER')"
                    ).format(pairs),
            sql.SQL("SELECT format('invalid index %s on %s (left by an earlier attempt?): drop it or rebuild it first',"
                    " ic.relname, i.indrelid::regclass) FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
                    "JOIN pg_namespace n ON n.oid = ic.relnamespace WHERE NOT i.indisvalid "
                    "AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
                    "AND ic.relname <> ALL({})").format(sql.Literal(list(self.our_indexes))),
            sql.SQL("SELECT format('cannot create %s: no privilege to create in schema %s', {}, {}) "
                    "WHERE {} IS NULL AND NOT has_schema_privilege({}, 'CREATE')").format(
                sql.Literal(str(self.master)), sql.Literal(self.master.schema), relid(self.master),
                sql.Literal(self.master.schema)),
        ]
        if not tables:   # no session migration: neither gen_random_uuid() nor the master is needed
            parts = parts[1:4]
        if self.index_claims:
            # An index step drops an invalid index of its own name before building it: that name must not
            # belong to an index on another table or column (which would be dropped).
            claims = sql.SQL(", ").join(sql.SQL("({}, {}, {}, {})").format(*map(sql.Literal, c))
                                        for c in self.index_claims)
            parts.append(sql.SQL(
                "SELECT format('index %I.%I already exists on %s for something else: rename it, then run again', "
                "c.nsp, c.idx, i.indrelid::regclass) FROM (VALUES {}) AS c(nsp, idx, tbl, col) "
                "JOIN pg_namespace n ON n.nspname = c.nsp JOIN pg_class ic ON ic.relnamespace = n.oid "
                "AND ic.relname = c.idx JOIN pg_index i ON i.indexrelid = ic.oid "
                "WHERE i.indrelid IS DISTINCT FROM to_regclass(format('%I.%I', c.nsp, c.tbl)) "
                "OR i.indkey[0] IS DISTINCT FROM (SELECT a.attnum FROM pg_attribute a "
                "WHERE a.attrelid = i.indrelid AND a.attname = c.col)").format(claims))
        for ref in dict.fromkeys(self.referenced):
            parts.append(sql.SQL("SELECT {} WHERE {} IS NOT NULL AND NOT has_table_privilege({}, 'REFERENCES')").format(
                sql.Literal(f"no REFERENCES privilege on {ref}: a foreign key to it cannot be added"),
                relid(ref), relid(ref)))
        return Step(id="preflight", description="Server version, privileges, no invalid index left behind",
                    statements=(sql.SQL(" UNION ALL ").join(parts),), lock=LockMode.ACCESS_SHARE, tables=(),
                    kind=Kind.CHECK)

    def create_master(self, after: str) -> Step:
        cfg = self.ctx.config
        src = self.ctx.source
        created = src.table.columns.get(cfg.created_at_column) if src is not None else None
        ts = sql.SQL(created.type if created is not None and created.typname in ("timestamptz", "timestamp")
                     else "timestamptz")
        user_ref = sql.SQL("")
        tables: tuple[str, ...] = ()
        if self.ctx.users is not None:
            user_ref = sql.SQL(" REFERENCES {} ({})").format(table_ref(self.ctx.users.name),
                                                           sql.Identifier(cfg.users_key))
            tables = (str(self.ctx.users.name),)
        stmt = sql.SQL("CREATE TABLE IF NOT EXISTS {} ({} uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
                       "user_id int{}, session_start {ts} DEFAULT CURRENT_TIMESTAMP, session_end {ts}, "
                       "is_active boolean DEFAULT true)").format(
            table_ref(self.master), sql.Identifier(self.key), user_ref, ts=ts)
        statements = (stmt,)
        if self.ctx.users is not None:
            # the new table's user_id FK gets its index at once (the table is empty: no cost)
            statements += (sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (user_id)").format(
                sql.Identifier(short_name(self.master.name, "user_id", suffix="idx")), table_ref(self.master)),)
        return Step(id="master", description=f"Create {self.master} (the guide's schema) if it does not exist",
                    statements=statements, lock=LockMode.SHARE_ROW_EXCLUSIVE if tables else LockMode.NONE,
                    tables=tables, depends_on=(after,),
                    guard=sql.SQL("SELECT {} IS NOT NULL").format(relid(self.master)), changes=(str(self.master),),
                    repairs=("missing_master_rows",))

    def index_steps(self, k: KeyTable, after: list[str]) -> list[str]:
        """Steps that leave a valid index leading with the key (none when there is one)."""
        return self.leading_index_steps(k.table, k.key.name, after)

    def leading_index_steps(self, table: Table, column: str, after: list[str], suffix: str = "",
                            repairs: tuple[str, ...] = ("unindexed_fk_columns",)) -> list[str]:
        """Steps that leave a valid index on `table` leading with `column` (none when there is one):
        CONCURRENTLY on an ordinary table; ON ONLY the parent, CONCURRENTLY per partition and ATTACH on
        a partitioned one. `suffix` keeps step ids apart when one table gets several such indexes."""
        if table.has_leading_index(column):
            return []
        tname = table.name
        name = str(tname)
        idx = short_name(tname.name, column, suffix="idx")
        self.our_indexes.append(idx)
        self.index_claims.append((tname.schema, idx, tname.name, column))
        if not table.is_partitioned:
            return [self.add(self.concurrent_index(f"index:{name}{suffix}", tname, column, idx, after,
                                                   leading_index_exists(tname, column), repairs)).id]
        parent = self.add(Step(
            id=f"index:{name}{suffix}", description=f"Index on {name} ({column}) ON ONLY the parent (attached below)",
            statements=(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON ONLY {} ({})").format(
                sql.Identifier(idx), table_ref(tname), sql.Identifier(column)),),
            lock=LockMode.SHARE, tables=(name,), depends_on=tuple(after),
            guard=sql.SQL("SELECT EXISTS (SELECT 1 FROM pg_class ic JOIN pg_index i ON i.indexrelid = ic.oid "
                          "WHERE i.indrelid = {} AND ic.relname = {}) OR ({})").format(
                relid(tname), sql.Literal(idx), leading_index_exists(tname, column)),
            changes=(name,), repairs=repairs))
        done = [parent.id]
        for p in table.leaf_partitions:
            pidx = short_name(p.name.name, column, suffix="idx")
            self.our_indexes.append(pidx)
            self.index_claims.append((p.name.schema, pidx, p.name.name, column))
            build = self.add(self.concurrent_index(f"index:{p.name}{suffix}", p.name, column, pidx, [parent.id],
                                                   leading_index_exists(p.name, column, pidx), repairs))
            attach = self.add(Step(
                id=f"attach-index:{p.name}{suffix}", description=f"Attach index {pidx} to {idx} (the tables: ACCESS SHARE; the indexes: "
                "SHARE UPDATE EXCLUSIVE and ACCESS EXCLUSIVE, on the index only)",
                statements=(sql.SQL("ALTER INDEX {} ATTACH PARTITION {}").format(
                    sql.Identifier(tname.schema, idx), sql.Identifier(p.name.schema, pidx)),),
                lock=LockMode.ACCESS_SHARE, tables=(name, str(p.name)), depends_on=(build.id,),
                guard=sql.SQL("SELECT EXISTS (SELECT 1 FROM pg_inherits h JOIN pg_class pc ON pc.oid = h.inhrelid "
                              "JOIN pg_class ic ON ic.oid = h.inhparent WHERE pc.relname = {} AND ic.relname = {} "
                              "AND pc.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = {})) OR ({})").format(
                    sql.Literal(pidx), sql.Literal(idx), sql.Literal(p.name.schema),
                    leading_index_exists(tname, column)),
                changes=(name,), repairs=repairs))
            done.append(attach.id)
        return done

    def concurrent_index(self, step_id, table: QualifiedName, column: str, idx: str, after, guard,
                         repairs: tuple[str, ...] = ("unindexed_fk_columns",)) -> Step:
        return Step(
            id=step_id, description=f"CREATE INDEX CONCURRENTLY {idx} on {table} ({column}); writers keep going",
            statements=(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(table.schema, idx)),
                        sql.SQL("CREATE INDEX CONCURRENTLY {} ON {} ({})").format(
                            sql.Identifier(idx), table_ref(table), sql.Identifier(column))),
            lock=LockMode.SHARE_UPDATE_EXCLUSIVE, tables=(str(table),), depends_on=tuple(after),
            transactional=False, guard=guard, changes=(str(table),), repairs=repairs)

    def existing_fk(self, fks: list[ForeignKey], table: QualifiedName) -> ForeignKey | None:
        for fk in fks:
            if fk.table == table and fk.columns == (self.key,) and self.ctx.is_master_fk(fk):
                return fk
        return None

    def fk_steps(self, k: KeyTable, after: list[str]) -> str:
        """Catch-up, FK NOT VALID, catch-up again, VALIDATE; returns the last step's id."""
        name = str(k.name)
        m = str(self.master)
        key = k.key.name
        fk_name = short_name(k.name.name, key, suffix="fkey")
        catchup_stmts = (self.backfill_all(),) if self.ctx.source is not None and self.ctx.source.key_checkable else ()
        if not k.is_source:
            catchup_stmts += self.orphan_statements(k)

        def catchup(step_id, deps, why):
            if not catchup_stmts:
                return list(deps)
            guards = []
            if self.ctx.source is not None and self.ctx.source.key_checkable:
                guards.append(self.backfill_guard(self.ctx.source.name, self.key_after(self.ctx.source)))
            if not k.is_source:
                guards.append(self.orphan_guard(k))
            return [self.add(Step(
                id=step_id, description=f"Catch-up {why}: register sessions created since the backfill"
                + ("" if k.is_source else f"; {self.options.orphans} new orphans of {name}"),
                statements=catchup_stmts, lock=LockMode.ROW_EXCLUSIVE,
                tables=(m,) if k.is_source else (m, name), depends_on=tuple(deps),
                guard=sql.SQL("SELECT {}").format(sql.SQL(" AND ").join(sql.SQL("({})").format(g) for g in guards)), changes=(m,) if k.is_source else (m, name),
                repairs=("missing_master_rows",) if k.is_source else ("missing_master_rows", "orphaned_session_ids"))).id]

        spec = FkSpec((key,), self.master, (self.key,), on_delete="c")
        existing = self.existing_fk(k.table.foreign_keys, k.name)
        if existing is not None and existing.validated:
            return after[-1]
        pre = catchup(f"catchup:{name}", after, "before the foreign key")

        def partition_constraint(p) -> str:
            found = self.existing_fk(k.table.partition_foreign_keys, p.name)
            return found.name if found is not None else fk_name

        return self.fk_sequence(
            k.table, spec, existing.name if existing is not None else fk_name, pre, whole=existing is not None,
            settle=lambda deps: catchup(f"settle:{name}", deps, "after NOT VALID, before VALIDATE"),
            partition_constraint=partition_constraint)

    def add_fk(self, step_id: str, table: QualifiedName, spec: FkSpec, constraint: str, deps,
               not_valid: bool = True, repairs: tuple[str, ...] = ("unconstrained_fk", "unvalidated_fk")) -> str:
        """ADD CONSTRAINT ... NOT VALID (new rows checked, no scan; a brief lock), or without NOT VALID on a
        partitioned parent whose partitions all hold the validated FK already (attached, no scan)."""
        ref = str(spec.ref_table)
        return self.add(Step(
            id=step_id, description=f"Foreign key {constraint} {table}({', '.join(spec.columns)}) -> {ref} "
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
            guard=spec.exists(table, validated=False), changes=(str(table),), repairs=repairs)).id

    def validate_fk(self, step_id: str, table: QualifiedName, spec: FkSpec, constraint: str, deps,
                    repairs: tuple[str, ...] = ("unconstrained_fk", "unvalidated_fk")) -> str:
        return self.add(Step(
            id=step_id, description=f"VALIDATE CONSTRAINT {constraint} on {table} (reads every row; "
            "writers keep going)",
            statements=(sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
                table_ref(table), sql.Identifier(constraint)),),
            lock=LockMode.SHARE_UPDATE_EXCLUSIVE, tables=(str(table),), depends_on=tuple(deps),
            guard=spec.exists(table, validated=True), changes=(str(table),), repairs=repairs)).id

    def fk_sequence(self, table: Table, spec: FkSpec, constraint: str, pre: list[str], *, suffix: str = "",
                    whole: bool = False, settle=None, partition_constraint=None) -> str:
        """FK NOT VALID, then VALIDATE in a transaction of its own; on a partitioned table before
        PostgreSQL 18 (which refuses NOT VALID there): per partition, then the FK on the parent, which
        attaches them. `whole`: on the table itself whatever the version (its NOT VALID FK exists).
        `settle(deps)` adds steps between NOT VALID and VALIDATE. Returns the last step's id."""
        settle = settle or list
        name = str(table.name)
        if not table.is_partitioned or self.version >= PG_NOT_VALID_ON_PARTITIONED or whole:
            added = self.add_fk(f"fk-add:{name}{suffix}", table.name, spec, constraint, pre)
            return self.validate_fk(f"fk-validate:{name}{suffix}", table.name, spec, constraint, settle([added]))
        names = {p.name: partition_constraint(p) if partition_constraint else constraint
                 for p in table.leaf_partitions}
        adds = [self.add_fk(f"fk-add:{p.name}{suffix}", p.name, spec, names[p.name], pre)
                for p in table.leaf_partitions]
        settled = settle(adds)
        validated = [self.validate_fk(f"fk-validate:{p.name}{suffix}", p.name, spec, names[p.name], settled)
                     for p in table.leaf_partitions]
        return self.add_fk(f"fk-add:{name}{suffix}", table.name, spec, constraint, validated, not_valid=False)

    def verify_query(self, tables: list[KeyTable]) -> sql.Composable:
        parts = [sql.SQL("SELECT {} WHERE NOT ({})").format(
            sql.Literal(f"{k.name}.{k.key.name} has no validated foreign key to {self.master}"),
            fk_exists(k.name, k.key.name, self.master, validated=True)) for k in tables]
        return sql.SQL(" UNION ALL ").join(parts)


def build_plan(ctx: AuditContext, options: FixOptions | None = None, evidence: dict | None = None) -> Plan:
    """The ordered steps for this database (guards not evaluated: `Plan.done` is empty).

    `evidence`: with `include=("schema",)`, the rows of `schema_plan.probes(ctx)` by probe key (what
    the data says about implied and drifting foreign keys); a probe absent from it plans nothing.
    """
    options = options or FixOptions()
    builder = _Builder(ctx, options, ctx.catalog.server_version_num)
    steps = builder.build(evidence)
    return Plan(steps=steps, server_version_num=ctx.catalog.server_version_num, options=options,
                notes=list(ctx.notes) + builder.notes)

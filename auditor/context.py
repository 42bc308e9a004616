"""The audit context: which tables hold session keys, where the master, source and users tables are.

Built once from a catalog snapshot and the configuration; checks and the planner read it, never the
database. Key tables are discovered: every ordinary or partitioned table in scope with the key
column, the master excluded.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from . import keytype
from .catalog import Catalog, Column, QualifiedName, Table, read_catalog
from .errors import NothingToAudit
from .keytype import KeyType

# The master's comment while its user_id FK is pending: a master the migration created without it (its
# backfill then pays no FK trigger per session), the FK added NOT VALID after the backfill and validated; the
# comment goes with the VALIDATE. A resumed plan reads it (`AuditContext.master_user_fk_pending`).
PENDING_USER_FK = ("yumai-audit: the foreign key of user_id is added after the backfill; "
                   "fix --apply adds it (the next run resumes)")

if TYPE_CHECKING:    # annotations only: the configuration validates check ids, and the checks read the context
    from .config import Config


# the types a session's times are taken from (the master's session_start and session_end, the bridge's, the
# early-writes probe's order): another type of created_at (an epoch in bigint, text) holds no such time
TIME_TYPES = frozenset({"timestamp", "timestamptz", "date"})


@dataclass(frozen=True)
class KeyTable:
    table: Table
    key: Column
    user: Column | None
    is_source: bool

    @property
    def name(self) -> QualifiedName:
        return self.table.name

    @property
    def key_checkable(self) -> bool:
        """Whether key values can be compared with the key type at all (a column of the key type, an integer
        width of an integer key, or text)."""
        return self.key.is_native_key or self.key.is_text

    def __hash__(self) -> int:
        return hash(self.table.name)

    def __eq__(self, other) -> bool:
        return isinstance(other, KeyTable) and other.table.name == self.table.name


@dataclass
class AuditContext:
    config: Config
    catalog: Catalog
    key_tables: list[KeyTable]
    master: Table | None
    source: KeyTable | None
    users: Table | None
    notes: list[str] = field(default_factory=list)
    key_type: KeyType = keytype.UUID
    # the master carries the migration's mark: created by a run that adds its user_id FK after the backfill,
    # which has not validated it yet (fix/ops/master.py: PENDING_USER_FK)
    master_user_fk_pending: bool = False

    @property
    def key(self) -> str:
        return self.config.key_column

    @property
    def key_noun(self) -> str:
        """What one key value is called in messages: yumai's "session" for session_id, else the column's name
        ("device_id value")."""
        return "session" if self.key == "session_id" else f"{self.key} value"

    @property
    def key_label(self) -> str:
        """What the key column is called in messages: "session id" for session_id, else its name."""
        return "session id" if self.key == "session_id" else self.key

    @property
    def key_type_phrase(self) -> str:
        """The key type with its article: "a uuid", "a bigint", "an integer"."""
        name = self.key_type.name
        return f"an {name}" if name[0] in "aeio" else f"a {name}"   # a uuid, an integer

    @property
    def master_key(self) -> Column | None:
        found = self.master.columns.get(self.key) if self.master else None
        return dataclasses.replace(found, key_type=self.key_type) if found is not None else None

    @property
    def master_user(self) -> Column | None:
        return self.master.columns.get(self.config.user_column) if self.master else None

    @property
    def has_known_sessions(self) -> bool:
        return self.master is not None or self.source is not None

    @property
    def others(self) -> list[KeyTable]:
        """Key tables other than the source table."""
        return [k for k in self.key_tables if not k.is_source]

    def created_at(self, table: Table) -> Column | None:
        """`table`'s created_at column when it holds times (TIME_TYPES); None when it has none, or one of
        another type: its sessions are then registered without times, as for a table without the column."""
        column = table.columns.get(self.config.created_at_column)
        return column if column is not None and column.typname in TIME_TYPES else None

    def is_user_fk(self, fk) -> bool:
        return (self.users is not None and fk.ref_table == self.users.name
                and fk.ref_columns == (self.config.users_key,))

    def is_master_fk(self, fk) -> bool:
        return fk.ref_table == self.config.master and fk.ref_columns == (self.key,)


def decided_key_type(catalog: Catalog, config: Config, text_source: KeyType | None = None) -> KeyType:
    """The master's key type if it exists, else the source table's key column's type; `text_source` for a
    text source key (what its values parse as); uuid otherwise (yumai's)."""
    for name in (config.master, config.source):
        table = catalog.get(name)
        column = table.columns.get(config.key_column) if table is not None else None
        if column is None:
            continue
        found = keytype.of_typname(column.typname)
        if found is not None:
            return found
        if column.is_text and name == config.source and text_source is not None:
            return text_source
        if name == config.master:
            break
    return keytype.UUID


def build_context(catalog: Catalog, config: Config, text_source: KeyType | None = None) -> AuditContext:
    key_type = decided_key_type(catalog, config, text_source)
    master = catalog.get(config.master)
    users = catalog.get(config.users)
    notes = []
    if users is not None and config.users_key not in users.columns:
        notes.append(f"{config.users} has no column {config.users_key}: user checks are skipped")
        users = None
    key_tables = []
    source = None
    for table in catalog.tables.values():
        if table.name == config.master or config.key_column not in table.columns:
            continue
        key = dataclasses.replace(table.columns[config.key_column], key_type=key_type)
        kt = KeyTable(table=table, key=key,
                      user=table.columns.get(config.user_column), is_source=table.name == config.source)
        key_tables.append(kt)
        if kt.is_source:
            source = kt
    if key_type != keytype.UUID:
        notes.append(f"the key type is {key_type.name} (from {config.master if master is not None else config.source})")
    return AuditContext(config=config, catalog=catalog, key_tables=key_tables, master=master,
                        source=source, users=users, notes=notes, key_type=key_type)


def text_source_type(conn: psycopg.Connection, catalog: Catalog, config: Config) -> KeyType | None:
    """For a text source key (and no master yet): uuid when every non-empty value parses as one, else bigint
    when every one is an integer in bigint's range, else None (uuid, yumai's). Reads the source table until
    the first value that does not parse."""
    source = catalog.get(config.source)
    column = source.columns.get(config.key_column) if source is not None else None
    if catalog.get(config.master) is not None or source is None or column is None or not column.is_text:
        return None
    value = sql.SQL("btrim({}::text, {})").format(sql.Identifier(column.name), sql.Literal(keytype.TRIM_CHARS))
    low, high = keytype.BIGINT.bounds
    row = conn.execute(sql.SQL(
        "SELECT NOT EXISTS (SELECT 1 FROM {t} WHERE {v} <> '' AND {v} !~ {uuid}), "
        "NOT EXISTS (SELECT 1 FROM {t} WHERE {v} <> '' AND CASE WHEN {v} ~ {int} "
        "THEN {v}::numeric NOT BETWEEN {low} AND {high} ELSE true END), "
        "EXISTS (SELECT 1 FROM {t} WHERE {v} <> '')").format(
        t=sql.Identifier(source.name.schema, source.name.name), v=value, uuid=sql.Literal(keytype.UUID_INPUT_PATTERN),
        int=sql.Literal(keytype.INTEGER_INPUT_PATTERN), low=sql.Literal(low), high=sql.Literal(high))).fetchone()
    if row is None or not row[2]:
        return None
    return keytype.UUID if row[0] else keytype.BIGINT if row[1] else None



# --- read from the database: the scan, the migration and the maintenance commands start here -----------

def exclude_tables(catalog: Catalog, config: Config) -> Catalog:
    """The catalog less the tables `exclude_tables` matches (never the master, source or users table):
    no check measures them and no fix step is planned for them, as for a schema out of scope."""
    named = {config.master, config.source, config.users}
    kept = {n: t for n, t in catalog.tables.items() if n in named or not config.excludes_table(n)}
    if len(kept) == len(catalog.tables):
        return catalog
    catalog.tables = kept
    catalog.invalid_indexes = [i for i in catalog.invalid_indexes if i.table in kept]
    return catalog


def audit_context(conn: psycopg.Connection, config: Config) -> AuditContext:
    catalog = exclude_tables(read_catalog(conn, config.schemas), config)
    if not catalog.tables:
        scope = ", ".join(config.schemas) if config.schemas else "any user schema"
        raise NothingToAudit(f"nothing to audit: database {catalog.database} has no table in {scope}")
    ctx = build_context(catalog, config, text_source_type(conn, catalog, config))
    if ctx.master is not None:
        row = conn.execute("SELECT obj_description(%s::oid, 'pg_class') = %s",
                           (ctx.master.oid, PENDING_USER_FK)).fetchone()
        ctx.master_user_fk_pending = bool(row is not None and row[0])
    if not ctx.key_tables:
        # A database without session tables is a normal case: the session checks are skipped and
        # the schema-wide checks still run.
        ctx.notes.append(f"no table has a column {config.key_column!r}: the session checks are skipped")
    return ctx

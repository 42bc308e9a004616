"""The audit context: which tables hold session keys, where the master, source and users tables are.

Built once from a catalog snapshot and the configuration; checks and the planner read it, never the
database. Key tables are discovered: every ordinary or partitioned table in scope with the key
column, the master excluded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg

from .catalog import Catalog, Column, QualifiedName, Table, read_catalog
from .errors import NothingToAudit

if TYPE_CHECKING:    # annotations only: the configuration validates check ids, and the checks read the context
    from .config import Config


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
        """Whether key values can be compared with uuids at all (uuid or text columns)."""
        return self.key.is_uuid or self.key.is_text

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

    @property
    def key(self) -> str:
        return self.config.key_column

    @property
    def master_key(self) -> Column | None:
        return self.master.columns.get(self.key) if self.master else None

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

    def is_user_fk(self, fk) -> bool:
        return (self.users is not None and fk.ref_table == self.users.name
                and fk.ref_columns == (self.config.users_key,))

    def is_master_fk(self, fk) -> bool:
        return fk.ref_table == self.config.master and fk.ref_columns == (self.key,)


def build_context(catalog: Catalog, config: Config) -> AuditContext:
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
        kt = KeyTable(table=table, key=table.columns[config.key_column],
                      user=table.columns.get(config.user_column), is_source=table.name == config.source)
        key_tables.append(kt)
        if kt.is_source:
            source = kt
    return AuditContext(config=config, catalog=catalog, key_tables=key_tables, master=master,
                        source=source, users=users, notes=notes)


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
    ctx = build_context(catalog, config)
    if not ctx.key_tables:
        # A database without session tables is a normal case: the session checks are skipped and
        # the schema-wide checks still run.
        ctx.notes.append(f"no table has a column {config.key_column!r}: the session checks are skipped")
    return ctx

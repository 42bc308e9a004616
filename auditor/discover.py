"""What `yumai-audit init` proposes for a database it has never seen: the source table, the key column,
the master, the users table and its column, the timestamp column, each with why and what else was weighed.

Read from the catalog only (auditor/catalog.py, one READ ONLY transaction); no table's rows are read. The
choice itself (`propose`) is a pure function of the catalog, so its rules can be read and tested apart:

- source: the partitioned tables, the most rows first (the statistics of their leaf partitions, then
  their size); the first whose key column is found. Without a partitioned table, every table.
- key column: a column of the source of a key-like type (integer, uuid, text) that other tables repeat,
  not the source's own row id (`id`, `event_id` in events), not referencing another table (by a foreign key, or by name:
  `account_id` -> a table `accounts` whose primary key has a compatible type); names ending in `_id`
  first, then the most tables holding it.
- users, users_key, user_column: the source's column that references a users-like table (users,
  accounts, customers, ...) by a foreign key, else by name, and that table's primary key.
- created_at_column: the source's partition key when it is a timestamp column, else `created_at`, else
  the first NOT NULL timestamp column.
- master: `<source schema>.<key without _id>_master`, or the table the key already references by a
  foreign key whose referenced column is the key itself (a database migrated before).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psycopg

from . import lockbudget
from .catalog import Catalog, Column, QualifiedName, Table, read_catalog
from .config import DEFAULT_EXCLUDE_TABLES, Config
from .connection import APPLICATION_NAME, Target, connect, set_local
from .errors import AuditError, ConfigError, NothingToAudit

INTEGER_TYPES = {"int2", "int4", "int8"}
UUID_TYPES = {"uuid"}
TEXT_TYPES = {"text", "varchar", "bpchar", "citext"}
TIMESTAMP_TYPES = {"timestamptz", "timestamp", "date"}
# the name stems of a users table, the most usual first: `user_id` -> users, `account_id` -> accounts
USER_STEMS = ("user", "account", "customer", "member", "owner", "person", "client", "tenant")
MAX_LISTED = 6     # alternatives listed per key; the rest are counted


def family(column: Column) -> str | None:
    """The kind of key a column can hold, or None when it cannot be a key (a timestamp, jsonb, ...)."""
    if column.typname in INTEGER_TYPES:
        return "integer"
    if column.typname in UUID_TYPES:
        return "uuid"
    if column.typname in TEXT_TYPES:
        return "text"
    return None


def configurable(name: QualifiedName) -> bool:
    """Whether the configuration can name the table (config_name reads back as the same name)."""
    try:
        return QualifiedName.parse(config_name(name), "table") == name
    except ConfigError:
        return False


def config_name(name: QualifiedName) -> str:
    """`schema.table` as the configuration spells it: a part holding a dot or edge spaces in double quotes."""
    return ".".join(f'"{p}"' if "." in p or p != p.strip() else p for p in (name.schema, name.name))


def printable(text: str) -> str:
    """`text` with every control character (a newline, an escape, ...) written as an escape: a name from
    the database can then neither end a comment of the file nor drive a terminal."""
    return "".join(f"\\u{ord(ch):04X}" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch for ch in text)


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


@dataclass(frozen=True)
class Choice:
    """One key of the proposal: its value (None: nothing fits, the key stays commented out), why it was
    chosen, and the alternatives weighed (one line each)."""

    value: str | None
    why: str
    alternatives: tuple[str, ...] = ()


@dataclass(frozen=True)
class Proposal:
    database: str
    source: Choice
    key_column: Choice
    master: Choice
    users: Choice
    users_key: Choice
    user_column: Choice
    created_at_column: Choice
    schemas: tuple[str, ...] = ()    # init --schema: the file audits these schemas only

    def settings(self) -> dict[str, str]:
        """The keys with a value, in the order the file writes them."""
        return {k: c.value for k, c in self.choices() if c.value is not None}

    def summary(self) -> str:
        """One line for the terminal: what was proposed."""
        return printable("; ".join(f"{k} {v}" for k, v in self.settings().items()))

    def choices(self) -> list[tuple[str, Choice]]:
        return [("source", self.source), ("key_column", self.key_column), ("master", self.master),
                ("users", self.users), ("users_key", self.users_key), ("user_column", self.user_column),
                ("created_at_column", self.created_at_column)]


@dataclass(frozen=True)
class Candidate:
    """A column of the source weighed as the key: the tables holding it (the source included) and, when
    it cannot be the key, why."""

    column: str
    tables: tuple[QualifiedName, ...]
    excluded: str | None = None
    master: QualifiedName | None = None    # the table it already references as its master

    @property
    def rank(self) -> tuple:
        return (not self.column.endswith("_id"), -len(self.tables), self.column)

    def line(self) -> str:
        shown = ", ".join(str(t) for t in self.tables[:MAX_LISTED])
        more = f" and {len(self.tables) - MAX_LISTED} more" if len(self.tables) > MAX_LISTED else ""
        return f"{self.column}: {plural(len(self.tables), 'table')} ({shown}{more})" + (
            f"; not the key: {self.excluded}" if self.excluded else "")


def _compatible(a: Column, b: Column) -> bool:
    return family(a) is not None and family(a) == family(b)


def _stem(column: str) -> str | None:
    return column[:-3] if column.lower().endswith("_id") and len(column) > 3 else None


def _plurals(stem: str) -> set[str]:
    s = stem.lower()
    return {s, s + "s", s + "es"} | ({s[:-1] + "ies"} if s.endswith("y") else set())


def user_stems(table: Table, column: str) -> list[int]:
    """The places in USER_STEMS of the stems that the table's name or the column's (`<stem>_id`) is."""
    names = {table.name.name.lower(), (_stem(column) or "").lower()}
    return [i for i, stem in enumerate(USER_STEMS) if _plurals(stem) & names]


def users_like(table: Table, column: str) -> bool:
    return bool(user_stems(table, column))


class Tables:
    """The tables a proposal may name (configurable, not the excluded templates), with lookups by name."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.all = [t for t in catalog.tables.values() if configurable(t.name)
                    and not Config(exclude_tables=DEFAULT_EXCLUDE_TABLES).excludes_table(t.name)]
        self.by_name = {t.name: t for t in self.all}

    def holding(self, column: str) -> list[Table]:
        """The tables with `column` in a key-like type, ordered by name."""
        return sorted((t for t in self.all if column in t.columns and family(t.columns[column])),
                      key=lambda t: t.name)

    def single_pk(self, table: Table) -> Column | None:
        if len(table.primary_key) == 1 and table.primary_key[0] in table.columns:
            return table.columns[table.primary_key[0]]
        return None

    def named_target(self, source: Table, column: str) -> Table | None:
        """The table `column` names (`account_id` -> accounts, account), its one-column primary key of a
        compatible type: in the source's schema first, then in the others by name."""
        stem = _stem(column)
        if stem is None:
            return None
        names = _plurals(stem)
        found = [t for t in self.all if t.name.name.lower() in names and t.name != source.name
                 and (pk := self.single_pk(t)) is not None and _compatible(source.columns[column], pk)]
        found.sort(key=lambda t: (t.name.schema != source.name.schema, t.name))
        return found[0] if found else None

    def fk_target(self, source: Table, column: str) -> tuple[Table, str] | None:
        """The table (and column) the source's declared one-column foreign key on `column` references."""
        for fk in source.fks_on(column):
            target = self.by_name.get(fk.ref_table)
            if target is not None and len(fk.ref_columns) == 1:
                return target, fk.ref_columns[0]
        return None


def rows_text(table: Table) -> str:
    leaves = len(table.leaf_partitions)
    where = f" in {plural(leaves, 'partition')}" if table.is_partitioned else ""
    if table.estimated_rows == 0:    # never analyzed (or empty): its size is what is known
        return f"{table.name}: no row estimate, {max(table.bytes // 1024, 1):,} kB{where}"
    return f"{table.name}: about {plural(table.estimated_rows, 'row')}{where}"


def own_id(table: Table, column: str) -> bool:
    """Whether `column` is the table's own row id: `id`, or `<table's name in the singular>_id`."""
    stem = _stem(column)
    return column.lower() == "id" or (stem is not None and table.name.name.lower() in _plurals(stem))


def key_candidates(tables: Tables, source: Table) -> list[Candidate]:
    """The source's columns that other tables repeat, in a key-like type, best first; those that cannot
    be the key come last, each with its reason."""
    found = []
    for name, column in source.columns.items():
        if family(column) is None:
            continue
        holding = tables.holding(name)
        if len(holding) < 2:
            continue
        names = tuple(t.name for t in holding)
        excluded, master = None, None
        fk = tables.fk_target(source, name)
        named = tables.named_target(source, name)
        if own_id(source, name):
            excluded = "the source's own row id"
        elif name in source.primary_key and not name.endswith("_id"):
            excluded = "in the source's primary key"
        elif fk is not None and fk[1] == name and not users_like(fk[0], name):
            master = fk[0].name           # references a table keyed by this very column: its master
        elif fk is not None:
            excluded = f"references {fk[0].name}.{fk[1]} by a foreign key"
        elif named is not None:
            excluded = f"references {named.name} by name"
        found.append(Candidate(name, names, excluded, master))
    found.sort(key=lambda c: (c.excluded is not None, c.rank))
    return found


def _more(lines: list[str]) -> tuple[str, ...]:
    if len(lines) <= MAX_LISTED:
        return tuple(lines)
    return (*lines[:MAX_LISTED], f"... and {len(lines) - MAX_LISTED} more")


def choose_source(tables: Tables) -> tuple[Choice, Table, list[Candidate]]:
    partitioned = [t for t in tables.all if t.is_partitioned]
    pool = partitioned or tables.all
    if not pool:
        raise NothingToAudit("init: the database has no table to propose a configuration from")
    pool = sorted(pool, key=lambda t: (-t.estimated_rows, -t.bytes, t.name))
    kind = "partitioned table" if partitioned else "table"
    for table in pool:
        candidates = key_candidates(tables, table)
        if candidates and candidates[0].excluded is None:
            break
    else:
        raise NothingToAudit(f"init: no {kind} has a column that other tables repeat and that could be the key; "
                             "write yumai-audit.toml by hand (see yumai-audit.toml.example)")
    unanalyzed = all(t.estimated_rows == 0 for t in pool)
    order = "by size (no statistics yet: ANALYZE gives row estimates)" if unanalyzed else "the most rows first"
    most = f"the largest {kind}" if unanalyzed else f"the {kind} with the most rows"
    why = ("" if partitioned else "no partitioned table: ") + \
        f"{most} whose key column other tables repeat ({rows_text(table)})"
    others = [rows_text(t) for t in pool if t is not table]
    alternatives = (f"other {'partitioned ' if partitioned else ''}tables, {order}:", *_more(others)) \
        if others else ()
    return Choice(config_name(table.name), why, alternatives), table, candidates


def choose_key(source: Table, candidates: list[Candidate]) -> tuple[Choice, Candidate]:
    key = candidates[0]
    others = [t for t in key.tables if t != source.name]
    why = (f"in {source.name} and {plural(len(others), 'other table')}; preferred: a name ending in _id, "
           "not the source's own row id, referencing no other table, then the most tables")
    weighed = ("columns weighed (tables holding them):", *_more([c.line() for c in candidates]))
    return Choice(key.column, why, weighed), key


def choose_master(tables: Tables, source: Table, key: Candidate) -> Choice:
    if key.master is not None:
        return Choice(config_name(key.master), f"{source.name}.{key.column} already references {key.master} "
                      "by a foreign key (a master made before)")
    stem = _stem(key.column) or key.column
    name = QualifiedName(source.name.schema, f"{stem}_master")
    alternatives: tuple[str, ...] = ()
    existing = tables.catalog.get(name)
    if existing is not None:
        alternatives = (f"a table {name} exists already: it can be the master only if {key.column} is its "
                        "primary key; name another table if it is something else",)
    return Choice(config_name(name), "the table `fix` creates: <source schema>.<key without _id>_master; "
                  "any name that is free will do", alternatives)


def choose_users(tables: Tables, source: Table, key: Candidate) -> tuple[Choice, Choice, Choice]:
    """The users table, its key and the user column of the key tables."""
    found: list[tuple[tuple, str, Table, str, str]] = []
    for name in source.columns:
        if name == key.column or name in source.primary_key:
            continue
        fk = tables.fk_target(source, name)
        if fk is not None:
            target, ref, how = fk[0], fk[1], "by a foreign key"
        else:
            named = tables.named_target(source, name)
            pk = tables.single_pk(named) if named is not None else None
            if named is None or pk is None:
                continue
            target, ref, how = named, pk.name, "by name"
        stems = user_stems(target, name)
        rank = (not stems, fk is None, min(stems, default=len(USER_STEMS)), name)
        found.append((rank, name, target, ref, how))
    found.sort(key=lambda f: f[0])
    usable = [f for f in found if not f[0][0]]
    lines = [f"{name} -> {target.name}.{ref} ({how})" + ("" if not rank[0] else "; not a users-like table")
             for rank, name, target, ref, how in found]
    weighed = ("references of the source weighed:", *_more(lines)) if lines else ()
    if not usable:
        none = Choice(None, f"no column of {source.name} references a users-like table ("
                      + ", ".join(USER_STEMS[:3]) + ", ...); set users, users_key and user_column by hand, "
                      "or leave them: only the user checks use them", weighed)
        return none, Choice(None, "see users"), Choice(None, "see users")
    _, name, target, ref, how = usable[0]
    others = [t for t in tables.holding(name) if t.name != source.name and t.name != target.name]
    users = Choice(config_name(target.name), f"{source.name}.{name} references it {how}", weighed)
    users_key = Choice(ref, f"the primary key of {target.name}")
    user_column = Choice(name, f"the column of {source.name} that references {target.name}; "
                         f"also in {plural(len(others), 'other table')}")
    return users, users_key, user_column


def choose_created_at(tables: Tables, source: Table, key: Candidate, partition_key: tuple[str, ...]) -> Choice:
    stamps = [c for c in source.columns.values() if c.typname in TIMESTAMP_TYPES]
    chosen, why = None, ""
    for name in partition_key:
        if name in source.columns and source.columns[name].typname in TIMESTAMP_TYPES:
            chosen, why = source.columns[name], f"the partition key of {source.name}"
            break
    if chosen is None:
        named = [c for c in stamps if c.name == "created_at"]
        not_null = [c for c in stamps if c.not_null]
        if named:
            chosen, why = named[0], f"a timestamp column of {source.name} named created_at"
        elif not_null:
            chosen, why = not_null[0], f"the first NOT NULL timestamp column of {source.name}"
    if chosen is None:
        return Choice(None, f"{source.name} has no timestamp column; set created_at_column by hand (first "
                      "activity, weekly charts, watch --since and close-idle need it)")
    key_tables = [tables.by_name[n] for n in key.tables if n != source.name]
    lacking = [str(t.name) for t in key_tables if chosen.name not in t.columns]
    rest = [c.name for c in stamps if c is not chosen]
    alternatives = [f"other timestamp columns of {source.name}: " + ", ".join(rest)] if rest else []
    if lacking:
        alternatives.append("key tables without it (no timestamps from them): " + ", ".join(lacking[:MAX_LISTED])
                            + (f" and {len(lacking) - MAX_LISTED} more" if len(lacking) > MAX_LISTED else ""))
    return Choice(chosen.name, why, tuple(alternatives))


def propose(catalog: Catalog, partition_keys: dict[QualifiedName, tuple[str, ...]],
            schemas: tuple[str, ...] = ()) -> Proposal:
    """The configuration the catalog suggests (`partition_keys`: each partitioned table's key columns in
    order, "" for an expression). Raises NothingToAudit when no table can be the source."""
    tables = Tables(catalog)
    source_choice, source, candidates = choose_source(tables)
    key_choice, key = choose_key(source, candidates)
    users, users_key, user_column = choose_users(tables, source, key)
    return Proposal(
        database=catalog.database, source=source_choice, key_column=key_choice,
        master=choose_master(tables, source, key), users=users, users_key=users_key, user_column=user_column,
        created_at_column=choose_created_at(tables, source, key, partition_keys.get(source.name, ())),
        schemas=schemas)


_PARTITION_KEYS = """
SELECT n.nspname, c.relname,
       ARRAY(SELECT coalesce(a.attname, '') FROM unnest(pt.partattrs::int2[]) WITH ORDINALITY k(num, ord)
             LEFT JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = k.num ORDER BY k.ord)::text[]
FROM pg_partitioned_table pt JOIN pg_class c ON c.oid = pt.partrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT c.relispartition
"""


def read_partition_keys(conn: psycopg.Connection) -> dict[QualifiedName, tuple[str, ...]]:
    return {QualifiedName(s, t): tuple(cols) for s, t, cols in conn.execute(_PARTITION_KEYS)}


# the catalog read takes ACCESS SHARE on every table (their sizes): how long it waits for one that another
# session holds exclusively (an ALTER TABLE), and for the whole read
LOCK_TIMEOUT_SECONDS = 10.0
STATEMENT_TIMEOUT_SECONDS = 300.0


def discover(target: Target, schemas: Iterable[str] = ()) -> Proposal:
    """Read the catalog in one READ ONLY transaction (its settings local to it: nothing is left on the
    connection) and propose."""
    schemas = tuple(schemas)
    with connect(target) as conn:
        conn.read_only = True
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        try:
            with conn.transaction():
                set_local(conn, {"application_name": APPLICATION_NAME + " init",
                                 "lock_timeout": f"{round(LOCK_TIMEOUT_SECONDS * 1000)}ms",
                                 "statement_timeout": f"{round(STATEMENT_TIMEOUT_SECONDS * 1000)}ms"})
                lockbudget.check(conn, schemas, 1, "init", fewer=None)
                catalog = read_catalog(conn, schemas)
                keys = read_partition_keys(conn)
        except psycopg.errors.LockNotAvailable:
            raise AuditError(f"init: waited {LOCK_TIMEOUT_SECONDS:g} s for a table's ACCESS SHARE lock to read its "
                             "size: another session holds a table exclusively (pg_locks shows which); "
                             "run init again when it is done") from None
        except psycopg.errors.QueryCanceled:
            raise AuditError(f"init: reading the catalog took more than {STATEMENT_TIMEOUT_SECONDS:g} s; "
                             "try again with --schema to read fewer tables") from None
        finally:
            if not conn.closed:
                conn.rollback()
    return propose(catalog, keys, schemas)

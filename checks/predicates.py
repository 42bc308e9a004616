"""SQL predicates shared by the checks and the fix steps, so that what is counted is what is repaired.

Every function returns a `psycopg.sql.Composable`; identifiers always go through `sql.Identifier`.
The alias of the audited table is `t`; the known-session join is `kn` (session_id, in_master, in_source;
see `Known` and `Lookup` below); the users join is `u`.
"""
from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from yumai_audit.catalog import Column, QualifiedName
from yumai_audit.keytype import INTEGER_INPUT_PATTERN, TRIM_CHARS, UUID_INPUT_PATTERN
from yumai_audit.keytype import UUID as UUID_KEY
from yumai_audit.keytype import KeyType as KeyType
from yumai_audit.sqlparts import T, col
from yumai_audit.sqlparts import row_id as row_id  # re-exported for the checks
from yumai_audit.sqlparts import table_ref as table_ref

# The canonical text form, as uuid_out writes it.
CANONICAL_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"



def trimmed(column: Column, alias: str = T) -> sql.Composed:
    return sql.SQL("btrim({}::text, {})").format(col(column, alias), sql.Literal(TRIM_CHARS))


# CANONICAL_PATTERN without its bounded repetitions, which make PostgreSQL's regex engine several
# times slower per row: the 8-4-4-4-12 shape (LIKE), no fifth hyphen, only hex digits and hyphens
# (one character class, which the regex engine runs fast: 0.3 us a key, where ltrim(key, chars), used
# before, took 1.3 us on a UTF-8 database: it measures every character of a multibyte string).
CANONICAL_SHAPE = "________-____-____-____-____________"
CANONICAL_CHARS = "^[-0-9a-f]+$"


class Shared(sql.Composed):
    """An expression over one row that several measures of a pass test (a text key's canonical test:
    in a malformed count, a non-canonical count and their samples). It renders as it is; a table pass
    computes each one that occurs more than once once per row (`scan/pass_sql.hoist_shared`): the
    server does not share equal expressions."""


def canonical(text: sql.Composable) -> sql.Composable:
    """`text ~ CANONICAL_PATTERN`, exactly, but cheap. In the "C" collation, byte by byte: LIKE is not
    allowed under a nondeterministic collation, and the character class then means ASCII."""
    c = sql.SQL('({} COLLATE "C")').format(text)
    return Shared([sql.SQL("({t} LIKE {shape} AND {t} NOT LIKE {five} AND {t} ~ {chars})").format(
        t=c, shape=sql.Literal(CANONICAL_SHAPE), five=sql.Literal("%-%-%-%-%-%"), chars=sql.Literal(CANONICAL_CHARS))])


def key_valid(column: Column, alias: str = T) -> sql.Composable:
    """The key holds a value that casts to the key type (after trimming, for text keys)."""
    if column.is_native_key:
        return sql.SQL("{} IS NOT NULL").format(col(column, alias))
    if column.is_text and column.key_type.is_integer:
        # digits within the type's range; CASE, so that the cast runs only on digits
        low, high = column.key_type.bounds
        return sql.SQL("(CASE WHEN {v} ~ {p} THEN {v}::numeric BETWEEN {low} AND {high} ELSE false END)").format(
            v=trimmed(column, alias), p=sql.Literal(INTEGER_INPUT_PATTERN), low=sql.Literal(low),
            high=sql.Literal(high))
    if column.is_text:
        # A canonical key is valid: most keys are, and OR stops before the slow general pattern.
        return sql.SQL("({} OR {} ~ {})").format(
            canonical(sql.SQL("{}::text").format(col(column, alias))), trimmed(column, alias),
            sql.Literal(UUID_INPUT_PATTERN))
    return sql.SQL("false")


def key_malformed(column: Column, alias: str = T) -> sql.Composable:
    """A non-NULL key that does not parse as the key type (always false for columns of that type)."""
    if column.is_native_key:
        return sql.SQL("false")
    # IS NOT TRUE, not NOT: the same for a non-NULL key (`key_valid` is then never NULL), but in a WHERE the
    # planner pushes a NOT into the OR and orders the pieces by their count of operators, so that the general
    # uuid pattern ran before the cheap canonical test on every row (5-8x slower on a text key)
    return sql.SQL("({} IS NOT NULL AND ({}) IS NOT TRUE)").format(col(column, alias), key_valid(column, alias))


def key_noncanonical(column: Column, alias: str = T) -> sql.Composable:
    """A text key that parses but is not written as uuid_out would write it (case, padding, braces); uuid
    keys only."""
    if not column.is_text or not column.key_type.is_uuid:
        return sql.SQL("false")
    # The cheaper test first: most keys are canonical, and AND stops there.
    return sql.SQL("(NOT {} AND {})").format(
        canonical(sql.SQL("{}::text").format(col(column, alias))), key_valid(column, alias))


def null_key(key_type: KeyType) -> sql.Composed:
    """NULL of the key type."""
    return sql.SQL("NULL::{}").format(sql.SQL(key_type.name))


def key_uuid(column: Column, alias: str = T) -> sql.Composable:
    """The key in the key type (uuid for yumai's keys, hence the name), NULL where it is NULL or malformed.
    An integer column of another width is read as it is: comparisons across the integer family use its
    index."""
    if column.is_native_key:
        return col(column, alias)
    if column.is_text:
        return sql.SQL("(CASE WHEN {} THEN {}::{} END)").format(
            key_valid(column, alias), trimmed(column, alias), sql.SQL(column.key_type.name))
    return null_key(column.key_type)


def valid_key_uuid(column: Column, alias: str = T) -> sql.Composable:
    """The key in the key type, for rows already filtered by `key_valid` (a WHERE of the same scan: the
    server checks it before computing the output): the conversion without testing the key again."""
    if column.is_native_key:
        return col(column, alias)
    if column.is_text:
        return sql.SQL("{}::{}").format(trimmed(column, alias), sql.SQL(column.key_type.name))
    return null_key(column.key_type)


def key_null(column: Column, alias: str = T) -> sql.Composed:
    return sql.SQL("{} IS NULL").format(col(column, alias))


# --- Known sessions: the one home of "is this key known to the master / the source table" and of
# "orphaned". A key is looked up in three ways, one per reader, and each is a `Lookup`:
#   JOINED      the row's key joined to `kn` (the scan's table passes and watch: `Known.join_*`);
#   OVER_SET    over the scan's set of sessions itself (one row per session, `scan/pass_sql.session_set`);
#   Exists      per row, EXISTS subqueries (the planner's guards, quarantine, deletes and counts).
# The scan needs set-based SQL (hash joins, one materialized set, parallel plans) and the planner
# row-wise SQL (counted guards over one hashed anti-join); the logic (`not_in_master`, `orphaned`)
# is written once, over whichever lookup it is given.

@dataclass(frozen=True)
class Known:
    """Where session keys are known: the master and the source table, each a relation and its key
    column (None where the database has none). Every read of their keys is built here."""
    master: QualifiedName | None = None
    master_key: Column | None = None
    source: QualifiedName | None = None
    source_key: Column | None = None
    master_unique: bool = False           # the master's key is unique (no DISTINCT needed)
    key_type: KeyType = UUID_KEY

    @classmethod
    def of(cls, ctx) -> Known:
        """As the audit context finds them (the planner makes its own: the master as it will be, the
        source's key after conversion). A source whose key is neither uuid nor text knows nothing."""
        master = ctx.master if ctx.master is not None and ctx.master_key is not None else None
        src = ctx.source if ctx.source is not None and ctx.source.key_checkable else None
        return cls(master.name if master else None, ctx.master_key if master else None,
                   src.name if src else None, src.key if src else None,
                   master is not None and any(i.valid and i.unique and i.columns == (ctx.master_key.name,)
                                              for i in master.indexes), ctx.key_type)

    def master_keys(self, distinct: bool = False, extra: sql.Composable = sql.SQL("")) -> sql.Composable:
        """SELECT session_id (and `extra` columns): the master's keys as uuid (alias m)."""
        return _keys(self.master, self.master_key, "m", distinct, extra)

    def source_keys(self, extra: sql.Composable = sql.SQL("")) -> sql.Composable:
        """SELECT session_id (and `extra` columns): the source table's keys as uuid (alias s)."""
        return _keys(self.source, self.source_key, "s", False, extra)

    # set-based (the scan) ----------------------------------------------------------------------
    def sessions(self) -> sql.Composed:
        """One row per valid key of the master or the source table: session_id, in_master, in_source."""
        parts = []
        if self.master is not None:
            parts.append(self.master_keys(extra=sql.SQL(", true AS in_master")))
        if self.source is not None:
            parts.append(self.source_keys(extra=sql.SQL(", false AS in_master")))
        if not parts:
            parts.append(sql.SQL("SELECT {} AS session_id, false AS in_master").format(null_key(self.key_type)))
        return sql.SQL(
            "SELECT session_id, bool_or(in_master) AS in_master, bool_or(NOT in_master) AS in_source FROM ({}) x "
            "WHERE session_id IS NOT NULL GROUP BY session_id"
        ).format(sql.SQL(" UNION ALL ").join(parts))

    def join_master(self, key: sql.Composable) -> sql.Composable:
        """`kn` for a row whose session is `key` (a uuid expression), looked up in the master alone:
        `kn.in_master` is TRUE when the master has the key, NULL when not (`not_in_master` reads it so).
        One join the planner can hash (in parallel); no DISTINCT when the master's key is unique (its
        primary key, as the guide declares it), so the master is read as it is. No master: no key is in it."""
        if self.master is None:
            return sql.SQL("CROSS JOIN LATERAL (SELECT NULL::boolean AS in_master) kn")
        return sql.SQL("LEFT JOIN ({}) kn ON kn.session_id = {}").format(
            self.master_keys(not self.master_unique, sql.SQL(", true AS in_master")), key)

    def join_own_source(self, key: sql.Composable) -> sql.Composed:
        """`kn` for a row of the source table itself, without reading the known set: the row's own valid
        key (it is known), in_master looked up in the master alone. The same values `sessions` gives."""
        if self.master is None:
            return sql.SQL("CROSS JOIN LATERAL (SELECT {k} AS session_id, false AS in_master, "
                           "{k} IS NOT NULL AS in_source) kn").format(k=key)
        return sql.SQL(
            "LEFT JOIN ({keys}) km ON km.session_id = {k} "
            "CROSS JOIN LATERAL (SELECT {k} AS session_id, km.session_id IS NOT NULL AS in_master, "
            "{k} IS NOT NULL AS in_source) kn").format(keys=self.master_keys(distinct=True), k=key)

    # per row, by key (watch and the planner) ----------------------------------------------------
    def join_row(self, key: sql.Composable) -> sql.Composed:
        """`kn` for one row, by key (watch: an index probe per new row): session_id (the key when the
        master or the source table has it) and in_master. COALESCE probes the source table only for
        keys the master lacks, so `in_source` is not computed: `JOINED.unknown` does not need it."""
        mst = _first(self.master, self.master_key, "m", key) if self.master is not None else null_key(self.key_type)
        src = _first(self.source, self.source_key, "s", key) if self.source is not None else null_key(self.key_type)
        return sql.SQL("LEFT JOIN LATERAL (SELECT coalesce(x.mk, {src}) AS session_id, x.mk IS NOT NULL AS in_master "
                       "FROM (SELECT {mst} AS mk) x) kn ON true").format(src=src, mst=mst)

    def in_master(self, key: sql.Composable) -> sql.Composable:
        """EXISTS: the master has `key` (false with no master)."""
        return _exists(self.master, self.master_key, "m", key)

    def in_source(self, key: sql.Composable) -> sql.Composable:
        """EXISTS: the source table has `key` (false with no source table)."""
        return _exists(self.source, self.source_key, "s", key)


def _keys(table, column: Column, alias: str, distinct: bool, extra: sql.Composable) -> sql.Composed:
    return sql.SQL("SELECT {}{} AS session_id{} FROM {} {}").format(
        sql.SQL("DISTINCT ") if distinct else sql.SQL(""), key_uuid(column, alias), extra, table_ref(table),
        sql.Identifier(alias))


def _first(table, column: Column, alias: str, key: sql.Composable) -> sql.Composed:
    k = key_uuid(column, alias)
    return sql.SQL("(SELECT {k} FROM {t} {a} WHERE {k} = {key} LIMIT 1)").format(
        k=k, t=table_ref(table), a=sql.Identifier(alias), key=key)


def _exists(table, column: Column | None, alias: str, key: sql.Composable) -> sql.Composable:
    if table is None:
        return sql.SQL("false")
    return sql.SQL("EXISTS (SELECT 1 FROM {} {} WHERE {} = {})").format(
        table_ref(table), sql.Identifier(alias), key_uuid(column, alias), key)


class Lookup:
    """How a key's membership is read: `absent_from_master(key)` and `unknown(key)` (neither in the
    master nor in the source table), boolean SQL for a valid key."""

    def absent_from_master(self, key: sql.Composable) -> sql.Composable:
        raise NotImplementedError

    def unknown(self, key: sql.Composable) -> sql.Composable:
        raise NotImplementedError


class _Joined(Lookup):
    """The row's key joined to `kn` (`Known.sessions`, `join_master`, `join_own_source`, `join_row`):
    no `kn` row means unknown; `kn.in_master` TRUE, or NULL/FALSE when the master lacks the key."""

    def absent_from_master(self, key):
        return sql.SQL("kn.in_master IS NOT TRUE")

    def unknown(self, key):
        return sql.SQL("kn.session_id IS NULL")


class _OverSet(Lookup):
    """Over the set of sessions itself (`kn` is the session: in_master, in_source never NULL)."""

    def absent_from_master(self, key):
        return sql.SQL("NOT kn.in_master")

    def unknown(self, key):
        return sql.SQL("NOT kn.in_master AND NOT kn.in_source")


@dataclass(frozen=True)
class Exists(Lookup):
    """Per row, EXISTS subqueries on the master and the source table (the planner: as top-level
    conjuncts they become anti-joins, hashed or by index, so a counted guard stays one pass)."""
    known: Known

    def absent_from_master(self, key):
        return sql.SQL("NOT {}").format(self.known.in_master(key))

    def unknown(self, key):
        return sql.SQL("NOT {} AND NOT {}").format(self.known.in_master(key), self.known.in_source(key))


JOINED: Lookup = _Joined()
OVER_SET: Lookup = _OverSet()


def not_in_master(column: Column, alias: str = T, lookup: Lookup = JOINED) -> sql.Composed:
    """A valid key the master lacks (the scan counts it, the backfill registers it). The lookup first:
    for a registered key AND stops there."""
    return sql.SQL("({} AND {})").format(lookup.absent_from_master(key_uuid(column, alias)), key_valid(column, alias))


def orphaned(column: Column, alias: str = T, lookup: Lookup = JOINED) -> sql.Composed:
    """A valid key present neither in the master nor in the source table (the scan counts it, the fix
    quarantines, deletes or registers it). The lookup first: for a known key AND stops there."""
    return sql.SQL("({} AND {})").format(lookup.unknown(key_uuid(column, alias)), key_valid(column, alias))


def session_not_in_master() -> sql.Composed:
    """Over the set itself (one row per session): a session of the source table with no master row.
    Per session, the same as `not_in_master` over the source table's rows."""
    return sql.SQL("(kn.in_source AND {})").format(OVER_SET.absent_from_master(sql.SQL("kn.session_id")))


def session_orphaned(rows: sql.Composable) -> sql.Composed:
    """Over the set itself: a session that rows of a table carry (`rows`: their count in the set) and
    that neither the master nor the source table knows. Per session, the same as `orphaned`."""
    return sql.SQL("({} > 0 AND {})").format(rows, OVER_SET.unknown(sql.SQL("kn.session_id")))


def session_unregistered(rows: sql.Composable) -> sql.Composed:
    """Over the set itself: a session that rows of a table carry (`rows`: their count in the set) and
    that the master lacks. Per session, the same as `not_in_master` over that table's rows."""
    return sql.SQL("({} > 0 AND {})").format(rows, OVER_SET.absent_from_master(sql.SQL("kn.session_id")))


def session_rows(ctx, target) -> sql.Composable:
    """In the set `kn`: how many rows of `target` carry the session (with USES_SESSION_ROWS)."""
    return sql.Identifier("kn", f"rows_{ctx.key_tables.index(target)}")


def user_sources(ctx) -> list[tuple]:
    """(table, key column, user column) of every table whose rows name a session's user: the key
    tables with a user column and a comparable key, and the master if it has a user column."""
    parts = [(k.table, k.key, k.user) for k in ctx.key_tables if k.user is not None and k.key_checkable]
    if ctx.master is not None and ctx.master_user is not None and ctx.master_key is not None:
        parts.append((ctx.master, ctx.master_key, ctx.master_user))
    return parts


def session_conflicting() -> sql.Composable:
    """Over the set itself: a session whose rows, over every table with a user column, name more than
    one user (min <> max of the non-NULL user ids)."""
    return sql.SQL("(kn.min_user <> kn.max_user)")


def user_orphaned(column: Column, users_key: str, alias: str = T) -> sql.Composed:
    return sql.SQL("({} IS NOT NULL AND {} IS NULL)").format(col(column, alias), sql.Identifier("u", users_key))

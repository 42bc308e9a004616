"""SQL predicates shared by the checks and the fix steps, so that what is counted is what is repaired.

Every function returns a `psycopg.sql.Composable`; identifiers always go through `sql.Identifier`.
The alias of the audited table is `t`; the known-session join is `kn` (session_id, in_master);
the users join is `u`.
"""
from __future__ import annotations

from psycopg import sql

from yumai_audit.catalog import Column

# What PostgreSQL's uuid input accepts: 32 hex digits, optionally in braces, with an optional hyphen
# after any group of four digits (src/backend/utils/adt/uuid.c, string_to_uuid).
UUID_INPUT_PATTERN = r"^(\{[0-9A-Fa-f]{4}(-?[0-9A-Fa-f]{4}){7}\}|[0-9A-Fa-f]{4}(-?[0-9A-Fa-f]{4}){7})$"
# The canonical text form, as uuid_out writes it.
CANONICAL_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
# Characters trimmed from both ends before parsing.
TRIM_CHARS = " \t\r\n"

T = "t"


def col(column: str | Column, alias: str = T) -> sql.Composable:
    name = column.name if isinstance(column, Column) else column
    return sql.Identifier(alias, name) if alias else sql.Identifier(name)


def trimmed(column: Column, alias: str = T) -> sql.Composable:
    return sql.SQL("btrim({}::text, {})").format(col(column, alias), sql.Literal(TRIM_CHARS))


# CANONICAL_PATTERN without its bounded repetitions, which make PostgreSQL's regex engine several
# times slower per row: the 8-4-4-4-12 shape (LIKE), no fifth hyphen, only hex digits and hyphens.
CANONICAL_SHAPE = "________-____-____-____-____________"


def canonical(text: sql.Composable) -> sql.Composable:
    """`text ~ CANONICAL_PATTERN`, exactly, but cheap: no regular expression at all (one took most of the
    time of reading a text key); `ltrim(t, chars) = ''` holds when every character is one of `chars`."""
    return sql.SQL("({t} LIKE {shape} AND {t} NOT LIKE {five} AND ltrim({t}, {chars}) = '')").format(
        t=text, shape=sql.Literal(CANONICAL_SHAPE), five=sql.Literal("%-%-%-%-%-%"), chars=sql.Literal("-0123456789abcdef"))


def key_valid(column: Column, alias: str = T) -> sql.Composable:
    """The key holds a value that casts to uuid (after trimming, for text keys)."""
    if column.is_uuid:
        return sql.SQL("{} IS NOT NULL").format(col(column, alias))
    if column.is_text:
        # A canonical key is valid: most keys are, and OR stops before the slow general pattern.
        return sql.SQL("({} OR {} ~ {})").format(
            canonical(sql.SQL("{}::text").format(col(column, alias))), trimmed(column, alias),
            sql.Literal(UUID_INPUT_PATTERN))
    return sql.SQL("false")


def key_malformed(column: Column, alias: str = T) -> sql.Composable:
    """A non-NULL key that is not a uuid (always false for uuid columns)."""
    if column.is_uuid:
        return sql.SQL("false")
    return sql.SQL("({} IS NOT NULL AND NOT {})").format(col(column, alias), key_valid(column, alias))


def key_noncanonical(column: Column, alias: str = T) -> sql.Composable:
    """A text key that parses but is not written as uuid_out would write it (case, padding, braces)."""
    if not column.is_text:
        return sql.SQL("false")
    # The cheaper test first: most keys are canonical, and AND stops there.
    return sql.SQL("(NOT {} AND {})").format(
        canonical(sql.SQL("{}::text").format(col(column, alias))), key_valid(column, alias))


def key_uuid(column: Column, alias: str = T) -> sql.Composable:
    """The key as a uuid, NULL where it is NULL or malformed."""
    if column.is_uuid:
        return col(column, alias)
    if column.is_text:
        return sql.SQL("(CASE WHEN {} THEN {}::uuid END)").format(key_valid(column, alias), trimmed(column, alias))
    return sql.SQL("NULL::uuid")


def valid_key_uuid(column: Column, alias: str = T) -> sql.Composable:
    """The key as a uuid, for rows already filtered by `key_valid` (a WHERE of the same scan: the
    server checks it before computing the output): the conversion without testing the key again."""
    if column.is_uuid:
        return col(column, alias)
    if column.is_text:
        return sql.SQL("{}::uuid").format(trimmed(column, alias))
    return sql.SQL("NULL::uuid")


def key_null(column: Column, alias: str = T) -> sql.Composable:
    return sql.SQL("{} IS NULL").format(col(column, alias))


# Predicates over the known-session join `kn` (LEFT JOIN on the key as uuid).
def not_in_master(column: Column, alias: str = T) -> sql.Composable:
    return sql.SQL("({} IS NOT NULL AND kn.in_master IS NOT TRUE)").format(key_uuid(column, alias))


def session_not_in_master() -> sql.Composable:
    """Over the known set itself (one row per session): a session of the source table with no master
    row. Per session, the same as `not_in_master` over the source table's rows."""
    return sql.SQL("(kn.in_source AND NOT kn.in_master)")


def session_orphaned(rows: sql.Composable) -> sql.Composable:
    """Over the set itself: a session that rows of a table carry (`rows`: their count in the set) and
    that neither the master nor the source table knows. Per session, the same as `orphaned`."""
    return sql.SQL("({} > 0 AND NOT kn.in_master AND NOT kn.in_source)").format(rows)


def session_conflicting() -> sql.Composable:
    """Over the set itself: a session whose rows, over every table with a user column, name more than
    one user (min <> max of the non-NULL user ids)."""
    return sql.SQL("(kn.min_user <> kn.max_user)")


def orphaned(column: Column, alias: str = T) -> sql.Composable:
    """Valid key present neither in the master nor in the source table."""
    # The join's result first: for a known key AND stops before parsing the key again.
    return sql.SQL("(kn.session_id IS NULL AND {} IS NOT NULL)").format(key_uuid(column, alias))


def master_lookup(master, master_key: Column, key: sql.Composable) -> sql.Composable:
    """`kn` for a row whose session is `key` (a uuid expression), looked up in the master alone:
    `kn.in_master` is TRUE when the master has the key, NULL when not (`not_in_master` reads it so).
    One join the planner can hash (in parallel); no DISTINCT when the master's key is unique (its
    primary key, as the guide declares it), so the master is read as it is."""
    unique = any(i.valid and i.unique and i.columns == (master_key.name,) for i in master.indexes)
    return sql.SQL("LEFT JOIN (SELECT {d}{mk} AS session_id, true AS in_master FROM {m} m) kn "
                   "ON kn.session_id = {k}").format(
        d=sql.SQL("") if unique else sql.SQL("DISTINCT "), mk=key_uuid(master_key, "m"),
        m=table_ref(master.name), k=key)


def user_orphaned(column: Column, users_key: str, alias: str = T) -> sql.Composable:
    return sql.SQL("({} IS NOT NULL AND {} IS NULL)").format(col(column, alias), sql.Identifier("u", users_key))


def table_ref(name) -> sql.Composable:
    return sql.Identifier(name.schema, name.name)


def row_id(table) -> sql.Composable:
    """A row's identity for samples: its primary key as text, or (with no primary key) its ctid."""
    if len(table.primary_key) == 1:
        return sql.SQL("{}::text").format(col(table.primary_key[0]))
    if table.primary_key:
        return sql.SQL("ROW({})::text").format(sql.SQL(", ").join(col(c) for c in table.primary_key))
    return sql.SQL("(t.tableoid::regclass::text || ':' || t.ctid::text)")

"""Refusals the preflight can know before the first change, as declared queries.

Each function returns SELECTs whose rows (one text column) are reasons not to start; the planner's
preflight step UNIONs them with its own. They read only the catalog, so they are cheap, and they
run on the live database right before the first change (`fix --apply`) or when a dry `fix` plans.
What the preflight cannot know (a column added between the plan and its step) is refused by the
step itself before it changes anything: `columns_unchanged`, `quarantine_catch_up`.

Each query names the object to act on (a partition, a trigger, a view, a column) and what to do.
"""
from __future__ import annotations

from psycopg import sql

from ..catalog import QualifiedName
from .ddl import TREE, relid


def _tables(names: list[QualifiedName]) -> sql.Composed:
    """`tbl(oid, root)`: each named table and every partition below it (a table absent: no row)."""
    values = sql.SQL(", ").join(sql.SQL("({}, {})").format(sql.Literal(n.schema), sql.Literal(n.name))
                                for n in names)
    return sql.SQL(
        "(SELECT DISTINCT c.oid AS root, x.oid AS oid FROM (VALUES {}) AS w(nsp, rel) "
        "JOIN pg_namespace n ON n.nspname = w.nsp JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.rel "
        "CROSS JOIN LATERAL ({}) AS x) AS tbl"
    ).format(values, TREE)


def partition_owners(names: list[QualifiedName]) -> list[sql.Composed]:
    """Every partition of a table the plan alters must be ours too (ALTER on a parent recurses)."""
    if not names:
        return []
    return [sql.SQL(
        "SELECT format('%s (a partition of %s) is owned by %s: connect as its owner or a superuser, "
        "or ALTER TABLE ... OWNER TO the owner of %s', tbl.oid::regclass, tbl.root::regclass, "
        "pg_get_userbyid(p.relowner), tbl.root::regclass) FROM {} JOIN pg_class p ON p.oid = tbl.oid "
        "WHERE tbl.oid <> tbl.root AND NOT pg_has_role(current_user, p.relowner, 'MEMBER')").format(_tables(names))]


def master_shape(master: QualifiedName, key: str, filled: tuple[str, ...]) -> list[sql.Composed]:
    """An existing master must take the backfill and be the target of the foreign keys: a unique,
    immediate, non-partial index on exactly the key; no NOT NULL column without a default that the
    backfill does not fill (`filled`: the columns it inserts)."""
    rel = relid(master)
    key_num = sql.SQL("(SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = {} AND a.attname = {})").format(
        rel, sql.Literal(key))
    return [
        sql.SQL("SELECT {} WHERE {} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = {} "
                "AND i.indisunique AND i.indimmediate AND i.indisvalid AND i.indpred IS NULL AND i.indnkeyatts = 1 "
                "AND i.indkey[0] = {})").format(
            sql.Literal(f"{master} exists but has no primary key or unique constraint on ({key}): the foreign keys "
                        f"cannot reference it (add PRIMARY KEY ({key}), or name another table with --master)"),
            rel, rel, key_num),
        sql.SQL("SELECT format('%s.%I is NOT NULL without a default, and the backfill does not fill it "
                "(it inserts %s): give it a default or drop NOT NULL, then run again', {}, a.attname, {}) "
                "FROM pg_attribute a WHERE a.attrelid = {} AND a.attnum > 0 AND NOT a.attisdropped "
                "AND a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = '' "
                "AND a.attname <> ALL({})").format(
            sql.Literal(str(master)), sql.Literal(", ".join(filled)), rel, sql.Literal(list(filled))),
    ]


def row_triggers(names: list[QualifiedName], event: str) -> list[sql.Composed]:
    """Enabled BEFORE row triggers (and DO INSTEAD rules) for `event` ("DELETE" or "INSERT") on these
    tables and their partitions: they can turn the quarantine's DELETE (or the backfill's INSERT) into
    nothing, leaving rows that the foreign key then refuses, or rows in two places."""
    if not names:
        return []
    bit, rule_type = {"DELETE": (8, "4"), "INSERT": (4, "3")}[event]
    return [
        sql.SQL("SELECT format('trigger %I on %s runs BEFORE {event} FOR EACH ROW and can make the migration''s "
                "{event} skip rows: disable it (ALTER TABLE %s DISABLE TRIGGER %I) for the migration, then run again',"
                " tg.tgname, tg.tgrelid::regclass, tg.tgrelid::regclass, tg.tgname) FROM {} "
                "JOIN pg_trigger tg ON tg.tgrelid = tbl.oid WHERE NOT tg.tgisinternal AND tg.tgenabled IN ('O', 'A') "
                "AND tg.tgtype & 1 = 1 AND tg.tgtype & 2 = 2 AND tg.tgtype & 64 = 0 AND tg.tgtype & {bit} = {bit}"
                ).format(_tables(names), event=sql.SQL(event), bit=sql.Literal(bit)),
        sql.SQL("SELECT format('rule %I on %s rewrites {event}: drop it for the migration, then run again', "
                "r.rulename, r.ev_class::regclass) FROM {} JOIN pg_rewrite r ON r.ev_class = tbl.oid "
                "WHERE r.ev_type = {} AND r.ev_enabled IN ('O', 'A')").format(
            _tables(names), sql.Literal(rule_type), event=sql.SQL(event)),
    ]


# --- what only the step can know -----------------------------------------------------------------

def columns_unchanged(table: QualifiedName, columns: list[str]) -> sql.Composed:
    """A statement that fails (before anything changes) when `table`'s columns are no longer the ones
    the plan was made with: a column added since would not be copied to the quarantine."""
    body = sql.SQL(
        "BEGIN IF ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = {rel} AND a.attnum > 0 "
        "AND NOT a.attisdropped ORDER BY a.attnum) IS DISTINCT FROM {cols}::text[] THEN "
        "RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state', MESSAGE = {msg}; END IF; END").format(
        rel=relid(table), cols=sql.Literal(list(columns)),
        msg=sql.Literal(f"the columns of {table} changed after the plan was made; nothing was moved: "
                        "run fix --apply again (the new plan copies every column)"))
    return sql.SQL("DO {}").format(sql.Literal(body.as_string(None)))


def quarantine_catch_up(quarantine: QualifiedName, table: QualifiedName) -> sql.Composed:
    """Adds to the quarantine table every column `table` has that it lacks: columns the table gained
    since an earlier attempt created it (nullable: rows quarantined before have no value). Read from
    the catalog when the step runs, so it holds for any table a quarantine reaches."""
    body = sql.SQL(
        "DECLARE r record; BEGIN FOR r IN SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS typ "
        "FROM pg_attribute a WHERE a.attrelid = {rel} AND a.attnum > 0 AND NOT a.attisdropped "
        "AND NOT EXISTS (SELECT 1 FROM pg_attribute q WHERE q.attrelid = {qrel} AND q.attname = a.attname "
        "AND NOT q.attisdropped) ORDER BY a.attnum LOOP "
        "EXECUTE format('ALTER TABLE %s ADD COLUMN %I %s', {qname}, r.attname, r.typ); END LOOP; END").format(
        rel=relid(table), qrel=relid(quarantine),
        qname=sql.Literal(sql.Identifier(quarantine.schema, quarantine.name).as_string(None)))
    return sql.SQL("DO {}").format(sql.Literal(body.as_string(None)))


# --- composed for a plan ---------------------------------------------------------------------------

def backfill_columns(ctx, origin) -> tuple[str, ...]:
    """The master columns the backfill inserts for sessions of `origin` (as `register_sessions` does)."""
    have = set(ctx.master.columns) if ctx.master is not None else set()
    out = [ctx.config.key_column]
    if origin is not None and ctx.created_at(origin.table) is not None:
        out += [c for c in ("session_start", "session_end", "is_active") if c in have]
    if origin is not None and origin.user is not None and "user_id" in have:
        out.append("user_id")
    return tuple(out)


def refusals(ctx, options, tables: list, altered: list[QualifiedName]) -> list[sql.Composed]:
    """The owners of what a plan migrating `tables` (KeyTables) and altering `altered` (schema steps) changes,
    and what an existing master must be (its key, the columns the backfill fills, no INSERT trigger)."""
    names = [k.name for k in tables]
    parts = partition_owners(names + [n for n in altered if n not in names])
    if not tables:
        return parts
    source = ctx.source if ctx.source in tables else None
    if ctx.master is not None:
        origins = [source] + ([k for k in tables if not k.is_source] if options.orphans == "register" else [])
        filled = set.intersection(*(set(backfill_columns(ctx, o)) for o in origins))
        parts += master_shape(ctx.config.master, ctx.config.key_column,
                              tuple(c for c in ctx.master.columns if c in filled))
        parts += row_triggers([ctx.config.master], "INSERT")
    return parts


def delete_triggers(options, tables: list) -> list[sql.Composed]:
    """Row triggers and rules that can make the plan's deletes skip rows, on the tables it deletes rows of
    (a text key's malformed rows; the orphans, unless registered)."""
    deleted = [k.name for k in tables if k.key.is_text or (not k.is_source and options.orphans != "register")]
    return row_triggers(deleted, "DELETE")


# --- privileges and publications: what the server refuses of any plan -------------------------------

def database_create(schemas: tuple[str, ...]) -> list[sql.Composable]:
    """The migration creates its own schemas (`CREATE SCHEMA IF NOT EXISTS`), which PostgreSQL refuses
    without CREATE on the database, even when the schema exists (the privilege is checked first)."""
    return [sql.SQL(
        "SELECT format('role %I has no CREATE privilege on database %I, and the migration creates its schemas "
        "(%s) with CREATE SCHEMA IF NOT EXISTS, which needs it: as the database owner or an administrator run "
        "GRANT CREATE ON DATABASE %I TO %I; then run again', current_user, current_database(), {}, "
        "current_database(), current_user) WHERE NOT has_database_privilege(current_database(), 'CREATE')"
    ).format(sql.Literal(", ".join(schemas)))]


def tool_schema_privileges(schemas: tuple[str, ...]) -> list[sql.Composable]:
    """A schema of the tool's that exists already (created by an administrator, or by another role's
    earlier run) must let this role create and use its tables."""
    return [sql.SQL(
        "SELECT format('schema %I exists and role %I cannot create in it or use it: as its owner (%s) or an "
        "administrator run GRANT USAGE, CREATE ON SCHEMA %I TO %I; then run again', n.nspname, current_user, "
        "pg_get_userbyid(n.nspowner), n.nspname, current_user) FROM pg_namespace n WHERE n.nspname = ANY({}) "
        "AND NOT (has_schema_privilege(n.oid, 'CREATE') AND has_schema_privilege(n.oid, 'USAGE'))"
    ).format(sql.Literal(list(schemas)))]


def schema_usage(names: list[QualifiedName]) -> list[sql.Composable]:
    """The schemas of the tables the plan reads and changes must be usable (USAGE) by this role."""
    if not names:
        return []
    return [sql.SQL(
        "SELECT format('role %I has no USAGE privilege on schema %I: as its owner or an administrator run "
        "GRANT USAGE ON SCHEMA %I TO %I; then run again', current_user, n.nspname, n.nspname, current_user) "
        "FROM pg_namespace n WHERE n.nspname = ANY({}) AND NOT has_schema_privilege(n.oid, 'USAGE')"
    ).format(sql.Literal(list(dict.fromkeys(n.schema for n in names))))]


def replica_identity(names: list[QualifiedName]) -> list[sql.Composable]:
    """Tables the plan deletes rows from or updates (partitions included) that a publication publishing
    deletes or updates covers (listed, FOR ALL TABLES, FOR TABLES IN SCHEMA, or through a partitioned
    ancestor), and that have no replica identity: PostgreSQL refuses the DELETE/UPDATE there ("does not
    have a replica identity and publishes deletes"), in the middle of the run."""
    if not names:
        return []
    return [sql.SQL(
        "SELECT DISTINCT format('%s has no replica identity (%s) and publication %I publishes its %s, so the "
        "migration''s DELETE/UPDATE on it would fail: run ALTER TABLE %s REPLICA IDENTITY FULL (or add a primary "
        "key), then run again', x.oid::regclass, CASE x.relreplident WHEN 'n' THEN 'REPLICA IDENTITY NOTHING' "
        "WHEN 'i' THEN 'its replica identity index is gone' ELSE 'no primary key' END, p.pubname, "
        "concat_ws(' and ', CASE WHEN p.pubdelete THEN 'deletes' END, CASE WHEN p.pubupdate THEN 'updates' END), "
        "x.oid::regclass) FROM {} JOIN pg_class x ON x.oid = tbl.oid AND x.relkind = 'r' "
        # the table or a partitioned ancestor, each read once per table (as a join condition, OR ... IN (SELECT
        # ... pg_partition_ancestors(x.oid)) read pg_class whole per table: 0.54 s at 365 partitions)
        "CROSS JOIN LATERAL (SELECT x.oid AS oid UNION SELECT relid FROM pg_partition_ancestors(x.oid)) anc "
        "JOIN pg_class a ON a.oid = anc.oid JOIN pg_namespace an ON an.oid = a.relnamespace "
        "JOIN pg_publication_tables pt ON pt.schemaname = an.nspname AND pt.tablename = a.relname "
        "JOIN pg_publication p ON p.pubname = pt.pubname AND (p.pubdelete OR p.pubupdate) "
        "WHERE x.relreplident = 'n' "
        "OR (x.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = x.oid "
        "AND i.indisprimary)) "
        "OR (x.relreplident = 'i' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = x.oid "
        "AND i.indisreplident))").format(_tables(names))]

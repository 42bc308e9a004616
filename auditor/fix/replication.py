"""Logical replication: which publications and slots the migration reaches, and what a subscriber needs.

A subscription's apply worker stops at the first change of a table it does not have ("logical
replication target relation ... does not exist", retried every few seconds) and, stopped, applies
nothing more of any table while the slot keeps the primary's WAL. A publication `FOR ALL TABLES`
publishes every table created later too (the tool's journal, its quarantine, the master); one
`FOR TABLES IN SCHEMA s` every table created in `s` later (the master in the application's schema).
PostgreSQL up to 18 cannot leave a table out of `FOR ALL TABLES` (19's EXCEPT names tables one by
one, not a schema), so the tool's tables cannot be kept out of such a publication. Instead each
subscriber creates them first, from the script `fix --subscriber-sql FILE` writes
(auditor/fix/subscriber.py): every schema and table the plan creates, in the order the plan creates
them, plain: columns and primary key (the apply finds the row to update or delete by it); no foreign
key, trigger or other index (the apply worker runs as a replica, where foreign keys and triggers do
not fire, and the publisher enforces them). A table a subscriber has but its subscription does not
list yet gets no changes (and no error) until `ALTER SUBSCRIPTION ... REFRESH PUBLICATION`, which
then copies it whole.

A text key converted to uuid is rewritten on the publisher, and a rewrite is not replicated: the
subscriber's column stays text (it takes the uuids as text) until the second script, run after the
apply once the subscriber has caught up (its rows not uuids are gone by then: the quarantine's
deletes are replicated), converts it the same way.
"""
from __future__ import annotations

from psycopg import sql

from ..catalog import TOOL_SCHEMAS
from ..engine.steps import Step
from ..pgversion import SCHEMA_PUBLICATIONS

REMEDY = ("prepare each subscriber with the script of fix --subscriber-sql FILE (the tables the migration creates), "
          "then run fix --apply --subscribers-ready and, on each subscriber, ALTER SUBSCRIPTION ... REFRESH "
          "PUBLICATION (docs/production-topologies.md, Logical replication)")


def touched(plan_steps: list[Step]) -> list[str]:
    """Every table (schema.table, catalog spelling) the steps lock, create or change."""
    return list(dict.fromkeys(t for s in plan_steps for t in (*s.tables, *s.changes) if t))


def covering(names: list[str], version: int) -> sql.Composed:
    """`(pubname, how)` of every publication that publishes one of `names` (schema.table as the catalog
    spells it) or a table created in their schemas or the tool's: FOR ALL TABLES, FOR TABLES IN SCHEMA,
    and explicit lists naming a table, one of its partitions or one of its ancestors."""
    in_schema = sql.SQL("")
    if version >= SCHEMA_PUBLICATIONS:
        in_schema = sql.SQL(
            "UNION ALL SELECT p.pubname, 'FOR TABLES IN SCHEMA ' || string_agg(quote_ident(n.nspname), ', ' "
            "ORDER BY n.nspname) FROM pg_publication_namespace pn JOIN pg_publication p ON p.oid = pn.pnpubid "
            "JOIN nsp n ON n.oid = pn.pnnspid GROUP BY p.pubname ")
    return sql.SQL(
        "WITH w(name) AS (SELECT unnest({names}::text[])), "
        "rel AS (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN w ON w.name = n.nspname || '.' || c.relname), "
        "tree AS (SELECT rel.oid FROM rel UNION SELECT t.relid FROM rel, pg_partition_tree(rel.oid) t "
        "UNION SELECT a.relid FROM rel, pg_partition_ancestors(rel.oid) a), "
        "nsp AS (SELECT n.oid, n.nspname FROM pg_namespace n WHERE n.nspname = ANY({tool}::text[]) "
        "OR EXISTS (SELECT 1 FROM w WHERE left(w.name, length(n.nspname) + 1) = n.nspname || '.')) "
        "SELECT p.pubname, 'FOR ALL TABLES' AS how FROM pg_publication p WHERE p.puballtables "
        "{in_schema}"
        "UNION ALL SELECT p.pubname, 'FOR TABLE ' || string_agg(pr.prrelid::regclass::text, ', ' "
        "ORDER BY pr.prrelid::regclass::text) || CASE WHEN p.pubviaroot THEN ' (publish_via_partition_root)' "
        "ELSE '' END FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid "
        "WHERE pr.prrelid IN (SELECT oid FROM tree) GROUP BY p.pubname, p.pubviaroot").format(
        names=sql.Literal(names), tool=sql.Literal(list(TOOL_SCHEMAS)), in_schema=in_schema)


SLOTS = sql.SQL("SELECT slot_name, plugin, active FROM pg_replication_slots "
                "WHERE slot_type = 'logical' AND database = current_database()")


def reached(names: list[str], version: int) -> sql.Composed:
    """One text row per publication that covers the migration's tables and per logical slot of this database."""
    return sql.SQL(
        "SELECT format('publication %I (%s)', c.pubname, c.how) FROM ({covering}) c "
        "UNION ALL SELECT format('logical slot %I (%s, %s)', s.slot_name, s.plugin, "
        "CASE WHEN s.active THEN 'streaming' ELSE 'no consumer connected' END) FROM ({slots}) s").format(
        covering=covering(names, version), slots=SLOTS)


def refusal(names: list[str], version: int) -> sql.Composed:
    """The preflight's part: one row naming every publication and slot reached, when there is one."""
    return sql.SQL(
        "SELECT 'logical replication: ' || string_agg(r.what, ', ' ORDER BY r.what) || ' publish or decode the "
        "tables this migration creates and changes; a subscriber that lacks one stops applying every change "
        "(\"logical replication target relation ... does not exist\"): ' || {remedy} "
        "FROM ({reached}) r(what) HAVING count(*) > 0").format(
        remedy=sql.Literal(REMEDY), reached=reached(names, version))


def dry_run_notes(rows: list[str], ready: bool) -> list[str]:
    """The dry run's note about what `reached` found."""
    if not rows:
        return []
    head = f"logical replication: {', '.join(rows)}"
    if ready:
        return [f"{head}; --subscribers-ready: each subscriber has run the script of --subscriber-sql; afterwards "
                "ALTER SUBSCRIPTION ... REFRESH PUBLICATION on each"]
    return [f"{head}; fix --apply refuses until the subscribers are prepared: {REMEDY}"]

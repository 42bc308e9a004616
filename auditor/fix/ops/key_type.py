"""Operation: a text key column converted to the key type (`to-uuid:<table>` steps).

ALTER COLUMN ... TYPE <key type> USING trim(...)::<key type> rewrites the table under ACCESS
EXCLUSIVE, right after the quarantine of its malformed rows (moved again in the same transaction: rows
written since). Guard: the column has the key type. Views, rules, policies, trigger conditions,
generated columns, a partition key and an index with a text operator class or a collation of its own
(Django's `_like` index) that use the column make the change fail: refused by the preflight (`refusals`).
"""
from __future__ import annotations

import re

from psycopg import sql

from yumai_audit.checks.key_type_mismatch import KeyTypeMismatch
from yumai_audit.checks.malformed_session_ids import MalformedSessionIds
from yumai_audit.checks.noncanonical_session_ids import NoncanonicalSessionIds
from yumai_audit.checks.predicates import key_malformed, trimmed

from ...catalog import QualifiedName
from ...context import KeyTable
from ...engine.steps import LockMode, Step
from ...operations import Operation
from ...sqlparts import table_ref
from .. import cascade
from ..ddl import TREE, column_has_type
from ..draft import Draft
from . import Declared, Deliberate, Needs
from .quarantine import move_rows

REPAIRS = (KeyTypeMismatch.id, NoncanonicalSessionIds.id, MalformedSessionIds.id)

LINT = (
    Deliberate(("changing-column-type",), Operation.CONVERT_TO_UUID,
               re.compile(r"ALTER COLUMN .* TYPE (uuid|bigint|integer|smallint) USING ", re.S),
               "the text key takes the key type: a rewrite under ACCESS EXCLUSIVE, with its table's size in the plan "
               "and the --apply confirmation; malformed values were quarantined first"),
)


def note(d: Draft, k: KeyTable) -> str:
    """What the conversion changes for the application's statements."""
    key_type = d.ctx.key_type
    return (f"{k.name}.{k.key.name} becomes {key_type.name}: statements that send it as a typed text parameter "
            f"then fail (a varchar or text parameter, as JDBC's setString sends unless stringtype=unspecified: "
            f"'column is of type {key_type.name} but expression is of type character varying', 'operator does "
            f"not exist: {key_type.name} = text'); untyped parameters and literals keep working. Check the "
            f"application's statements on {k.name} before the cutover.")


def convert_step(d: Draft, k: KeyTable, after: str) -> Step:
    name = str(k.name)
    key_type = d.ctx.key_type
    # all of them: the quarantine table too, which the malformed step (nothing to move) may not have created
    moved = move_rows(d, k, key_malformed(k.key), "malformed")
    return cascade.widen(Declared(
        id=f"to-uuid:{name}", operation=Operation.CONVERT_TO_UUID,
        description=f"Convert {name}.{k.key.name} from {k.key.type} to {key_type.name} (rewrites the table, "
                    f"{k.table.bytes} bytes, under ACCESS EXCLUSIVE)",
        statements=(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(table_ref(k.name)),)
        + moved.statements
        + (sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {kt} USING {}::{kt}").format(
            table_ref(k.name), sql.Identifier(k.key.name), trimmed(k.key, ""), kt=sql.SQL(key_type.name)),),
        lock=LockMode.ACCESS_EXCLUSIVE, tables=(name,), depends_on=(after,),
        guard=sql.SQL("SELECT {}").format(column_has_type(k.name, k.key.name, key_type.name)), rewrites=True,
        table_bytes=((name, k.table.bytes),), changes=(name,), target=name, column=k.key.name,
        repairs=REPAIRS, needs=moved.needs + Needs(retyped=((k.name, k.key.name),))),
        cascade.of_table(d.ctx.catalog, k.table))


def refusals(columns: list[tuple[QualifiedName, str]], key_type: str = "uuid") -> list[sql.Composed]:
    """Objects that make ALTER COLUMN ... TYPE <key_type> fail on these (table, column) pairs, partitions
    included: views, materialized views and rules using the column, policies, trigger conditions,
    generated columns, a partition key, an index with an operator class or a collation of its own for it."""
    if not columns:
        return []
    values = sql.SQL(", ").join(sql.SQL("({}, {}, {})").format(
        sql.Literal(t.schema), sql.Literal(t.name), sql.Literal(c)) for t, c in columns)
    cols = sql.SQL(
        "(VALUES {}) AS w(nsp, rel, col) JOIN pg_namespace n ON n.nspname = w.nsp "
        "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.rel "
        "CROSS JOIN LATERAL ({}) AS x JOIN pg_attribute a ON a.attrelid = x.oid AND a.attname = w.col "
        "AND NOT a.attisdropped").format(values, TREE)
    return [
        sql.SQL(
            "SELECT format('%s.%I is used by %s: its type cannot be changed to %s while that exists; drop it, "
            "run again, then create it again', x.oid::regclass, a.attname, "
            "CASE WHEN d.classid = 'pg_rewrite'::regclass THEN (SELECT CASE WHEN r.ev_class = x.oid THEN "
            "'rule ' || quote_ident(r.rulename) || ' on ' || x.oid::regclass::text ELSE "
            "CASE v.relkind WHEN 'm' THEN 'materialized view ' ELSE 'view ' END || v.oid::regclass::text END "
            "FROM pg_rewrite r JOIN pg_class v ON v.oid = r.ev_class WHERE r.oid = d.objid) "
            "ELSE pg_describe_object(d.classid, d.objid, d.objsubid) END, {}) "
            "FROM {} JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = x.oid "
            "AND d.refobjsubid = a.attnum "
            "WHERE d.classid IN ('pg_rewrite'::regclass, 'pg_policy'::regclass, 'pg_trigger'::regclass) "
            "OR (d.classid = 'pg_class'::regclass AND d.objid = x.oid AND d.objsubid <> a.attnum)").format(
                sql.Literal(key_type), cols),
        sql.SQL(
            "SELECT format('%s.%I is the partition key of %s: its type cannot be changed', c.oid::regclass, "
            "a.attname, x.oid::regclass) FROM {} JOIN pg_partitioned_table pt ON pt.partrelid = x.oid "
            "WHERE a.attnum = ANY(pt.partattrs::int2[])").format(cols),
        # an index naming an operator class of its own for the column (varchar_pattern_ops: Django's `_like`
        # index of every indexed CharField) or a collation of its own: the rebuild keeps it, and neither
        # applies to the key type ('operator class "varchar_pattern_ops" does not accept data type uuid')
        sql.SQL(
            "SELECT DISTINCT format('%s.%I is indexed by %s with %s, which a %s column cannot have: drop that index, "
            "then run again', x.oid::regclass, a.attname, i.indexrelid::regclass, "
            "CASE WHEN NOT o.opcdefault THEN 'operator class ' || quote_ident(o.opcname) ELSE 'collation ' || "
            "(SELECT quote_ident(l.collname) FROM pg_collation l WHERE l.oid = k.coll) END, {}) "
            "FROM {} JOIN pg_index i ON i.indrelid = x.oid "
            "CROSS JOIN LATERAL unnest(i.indkey::int2[], i.indclass::oid[], i.indcollation::oid[]) "
            "AS k(attnum, opc, coll) JOIN pg_opclass o ON o.oid = k.opc "
            # a partition's index attached to a partitioned one goes with it: the top one named
            "WHERE k.attnum = a.attnum AND (NOT o.opcdefault OR k.coll <> a.attcollation) "
            "AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid)").format(
                sql.Literal(key_type), cols),
    ]

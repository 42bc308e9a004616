"""The cutover bridge's state: where its trigger is installed, what its log counted, how it is removed,
and the line the scan summary and the report show (the bridge itself: auditor/fix/ops/bridge.py).

The scan (scan/stats.py), the report (reports/render.py) and `bridge status|remove` read it here,
without importing the migration.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from .catalog import QualifiedName
from .sqlparts import table_ref

SCHEMA = "yumai_audit"
LOG = QualifiedName(SCHEMA, "bridge_log")
TRIGGER = "yumai_audit_bridge"

Execute = Callable[[sql.Composed], Sequence[Sequence[Any]]]   # a query -> its rows


# --- status and removal ----------------------------------------------------------------------------

def installed_query() -> sql.Composed:
    """(schema, table, function's schema, function) of every bridge trigger, a partition's clone of its
    parent's left out."""
    return sql.SQL(
        "SELECT n.nspname::text, c.relname::text, pn.nspname::text, p.proname::text FROM pg_trigger t "
        "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace pn ON pn.oid = p.pronamespace "
        "WHERE t.tgname = {name} AND NOT EXISTS (SELECT 1 FROM pg_inherits h JOIN pg_trigger pt "
        "ON pt.tgrelid = h.inhparent AND pt.tgname = t.tgname WHERE h.inhrelid = t.tgrelid) "
        "ORDER BY 1, 2").format(name=sql.Literal(TRIGGER))


def log_exists_query() -> sql.Composed:
    return sql.SQL("SELECT to_regclass({}) IS NOT NULL").format(sql.Literal(table_ref(LOG).as_string(None)))


def hourly_query() -> sql.Composed:
    """Sessions the bridge registered per hour of the last 24 hours (hours with none left out)."""
    return sql.SQL(
        "SELECT date_trunc('hour', registered_at) AS hour, count(*) FROM {} "
        "WHERE registered_at >= now() - interval '24 hours' GROUP BY 1 ORDER BY 1").format(table_ref(LOG))


def recent_query(interval: str) -> sql.Composed:
    return sql.SQL("SELECT count(*) FROM {} WHERE registered_at >= now() - {}::interval").format(
        table_ref(LOG), sql.Literal(interval))


def drop_statements(installed: list[tuple[str, str, str, str]]) -> tuple[sql.Composed, ...]:
    """DROP TRIGGER on each table (a parent's drops its partitions' clones), then the functions."""
    out = [sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(TRIGGER), sql.Identifier(s, t))
           for s, t, _fs, _fn in installed]
    functions = sorted({(fs, fn) for _s, _t, fs, fn in installed})
    out += [sql.SQL("DROP FUNCTION IF EXISTS {}()").format(sql.Identifier(fs, fn)) for fs, fn in functions]
    return tuple(out)


@dataclass
class BridgeStatus:
    tables: list[str]                          # where a bridge trigger is installed
    hourly: list[tuple[str, int]]              # (hour, sessions registered by the bridge), last 24 hours
    last_hour: int = 0

    @property
    def last_day(self) -> int:
        return sum(n for _h, n in self.hourly)

    def to_dict(self) -> dict[str, Any]:
        return {"installed": bool(self.tables), "tables": list(self.tables), "registered_last_day": self.last_day,
                "registered_last_hour": self.last_hour,
                "hourly": [{"hour": h, "sessions": n} for h, n in self.hourly]}


def read_status(execute: Execute) -> BridgeStatus:
    """The bridge's state via `execute(query) -> rows` (read-only; works before anything was installed)."""
    installed = execute(installed_query())
    tables = [str(QualifiedName(s, t)) for s, t, _fs, _fn in installed]
    hourly: list[tuple[str, int]] = []
    last_hour = 0
    if execute(log_exists_query())[0][0]:
        hourly = [(h.isoformat(timespec="minutes") if hasattr(h, "isoformat") else str(h), int(n))
                  for h, n in execute(hourly_query())]
        last_hour = int(execute(recent_query("1 hour"))[0][0])
    return BridgeStatus(tables, hourly, last_hour)


def scan_stats(execute: Execute, noun: str = "session", label: str = "session id") -> dict[str, Any]:
    """The scan's small summary: where the bridge is installed and its last day's count, with what one key
    value is called (`noun`: "session", "device_id value") and the key column (`label`: "session id")."""
    status = read_status(execute)
    return {"tables": status.tables, "registered_last_day": status.last_day, "noun": noun, "label": label}


def bridge_line(stats: dict[str, Any]) -> str | None:
    """"Cutover bridge on T: N sessions registered by it in the last 24 hours", or None (not installed)."""
    b = (stats or {}).get("bridge") or {}
    if not b.get("tables"):
        return None
    n = int(b.get("registered_last_day") or 0)
    noun = b.get("noun") or "session"
    return (f"Cutover bridge installed on {', '.join(b['tables'])}: {n} {noun}{'s' if n != 1 else ''} registered "
            "by it in the last 24 hours (the application's own registrations not counted)")

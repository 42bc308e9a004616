"""The one line at the top of a report written before the cutover, as `terraform plan` gives it: what the
plan will do, in totals (foreign keys added, tables rewritten with their size and lock, rows that leave
their tables, user ids set NULL, the backup), read from the plan's steps (their `operation`, `rewrites`,
`changes`) and the findings they declare they repair, and the apply's estimated time and WAL (the plan's
`estimate`, auditor/fix/estimate.py). Pure functions over plain data: no markup."""
from __future__ import annotations

from collections.abc import Callable

from yumai_audit.durations import duration_text
from yumai_audit.model import ScanResult
from yumai_audit.scan.verdict import partition_parents, plural, repairing_steps

# the operations that move a finding's rows out of its table, and the option that says how
MOVES = {"orphans": "orphans", "quarantine-malformed": None, "missing-users": "missing_users"}
VERB = {"quarantine": "quarantined", "delete": "deleted", "null": "set NULL", None: "quarantined"}


def _moved(result: ScanResult, plan: dict, pending: list[dict]) -> dict[tuple[str, str], dict[str, int]]:
    """{(noun, what happens to them): {table: rows}} for the findings a pending step moves or nulls."""
    options = plan.get("options") or {}
    pending_ids = {s.get("id") for s in pending}
    parents = partition_parents(result)
    out: dict[tuple[str, str], dict[str, int]] = {}
    for f in result.findings:
        if not f.rows:
            continue
        for s in repairing_steps(f, plan, parents):
            operation = s.get("operation")
            if s.get("id") not in pending_ids or operation not in MOVES:
                continue
            option = MOVES[operation]
            mode = options.get(option) if option else None
            if mode not in VERB:      # register (orphans), keep (users): nothing leaves its table
                break
            what = ("user id", VERB[mode]) if mode == "null" else ("row", VERB[mode])
            by_table = out.setdefault(what, {})
            by_table[f.table] = by_table.get(f.table, 0) + f.rows
            break
    return out


def plan_totals(result: ScanResult, plan: dict | None, size: Callable[[int | None], str]) -> list[str]:
    """The parts of the totals line (joined by the template); [] without a plan or with nothing to do.
    `size` formats a number of bytes."""
    if not plan:
        return []
    pending = [s for s in plan.get("steps") or [] if not s.get("done") and s.get("kind") not in ("check", "gate")]
    if not pending:
        return []
    parts = []
    fks = sum(1 for s in pending if s.get("operation") == "fk-add")
    if fks:
        parts.append(f"{plural(fks, 'foreign key')} to add")
    rewritten = [(str(t), b, str(s.get("lock") or "")) for s in pending if s.get("rewrites")
                 for t, b in (s.get("table_bytes") or {}).items()]
    if rewritten:
        parts.append(f"{plural(len(rewritten), 'table')} rewritten: "
                     + ", ".join(f"{t} ({size(b)}, {lock})" for t, b, lock in rewritten))
    else:
        parts.append("no table rewritten")
    for (noun, verb), by_table in _moved(result, plan, pending).items():
        parts.append(f"{plural(sum(by_table.values()), noun)} {verb}: "
                     + ", ".join(f"{t} {n:,}" for t, n in sorted(by_table.items())))
    parents = partition_parents(result)
    sizes = {t.table: t.bytes for t in result.inventory}
    # what the backup dumps: the existing tables the plan changes (a partition counts as its table)
    changed = sorted({parents.get(str(t), str(t)) for s in pending for t in s.get("changes") or ()} & set(sizes))
    if changed:
        known = [sizes[t] for t in changed if t in sizes]
        on_disk = f", {size(sum(known))} on disk" if known else ""
        parts.append(f"a pg_dump backup of {plural(len(changed), 'table')}{on_disk} before the first change "
                     "(fix --apply; --no-backup skips it)")
    estimate = estimate_text(plan, size)
    if estimate:
        parts.append(estimate)
    return parts


def estimate_text(plan: dict, size: Callable[[int | None], str]) -> str:
    """The apply's estimated time and WAL (plan.json's `estimate`), or "" when the plan has none."""
    estimate = plan.get("estimate") or {}
    seconds, wal = estimate.get("seconds"), estimate.get("wal_bytes")
    if not isinstance(seconds, (int, float)) or not isinstance(wal, int):
        return ""
    return (f"about {duration_text(seconds)} and {size(wal)} of WAL to apply (estimated from the plan's "
            f"{plural(int(estimate.get('steps') or 0), 'step')} and the key tables' estimated rows)")

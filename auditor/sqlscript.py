"""Render a plan as the annotated SQL script that `fix --apply` would run (`fix --sql FILE`).

Each step becomes a block: its id, description, lock and tables as comments, its guard (the step is
skipped when the guard is true), then its statements, wrapped in BEGIN/COMMIT when transactional.
"""
from __future__ import annotations

from .lint import ignore_comments
from .planner import Plan
from .steps import Kind, Step


def _comment(text: str) -> str:
    return "\n".join(f"-- {line}" if line else "--" for line in text.splitlines())


def render_step(step: Step, number: int, total: int, lock_timeout: float, done: bool | None = None) -> str:
    lines = [f"-- [{number}/{total}] {step.id}" + ("  (already done)" if done else ""),
             _comment(step.description)]
    on = f" on {', '.join(step.tables)}" if step.tables else ""
    lines.append(f"-- lock: {step.lock.label}{on}")
    if step.rewrites:
        sizes = ", ".join(f"{t} {b} bytes" for t, b in step.table_bytes)
        lines.append(f"-- REWRITES the table under ACCESS EXCLUSIVE ({sizes})")
    if step.depends_on:
        lines.append(f"-- after: {', '.join(step.depends_on)}")
    if step.guard is not None:
        lines.append("-- skipped when this returns true:")
        lines.append(_comment(step.guard.as_string(None)))
    body = []
    for statement in step.statements:
        text = statement.as_string(None)
        body += ignore_comments(step, text) + [text + ";"]
    if step.kind is Kind.CHECK:
        lines.append("-- a check: every row it returns is a problem that stops the run")
        lines.extend(body)
    elif step.transactional:
        if step.kind is Kind.BATCHED:
            lines.append("-- run in its own transaction again and again until a batch inserts fewer rows than its LIMIT")
        lines.append("BEGIN;")
        if step.takes_lock_timeout:
            lines.append(f"SET LOCAL lock_timeout = '{int(lock_timeout * 1000)}ms';")
        lines.append("SET LOCAL statement_timeout = 0;")
        lines.extend(body)
        lines.append("COMMIT;")
    else:
        lines.append("-- outside a transaction (CONCURRENTLY)")
        lines.extend(body)
    return "\n".join(lines)


def render_script(plan: Plan) -> str:
    """The whole plan as one SQL script, runnable with psql (batched steps run once there)."""
    head = [
        "-- yumai-audit fix: the session_master migration, step by step"
        + (" (and the schema's implied and drifting foreign keys)" if "schema" in plan.options.include else ""),
        f"-- server_version_num {plan.server_version_num}; options: "
        + ", ".join(f"{k}={v}" for k, v in plan.options.to_dict().items()),
    ]
    head += [f"-- note: {n}" for n in plan.notes]
    total = len(plan.steps)
    blocks = [render_step(s, i, total, plan.options.lock_timeout, plan.done.get(s.id))
              for i, s in enumerate(plan.steps, 1)]
    return "\n".join(head) + "\n\n" + "\n\n".join(blocks) + "\n"

"""Render a plan as the annotated SQL script that `fix --apply` runs (`fix --sql FILE`).

The statements come from `steps.step_block`, the function the executor runs them with, and the
session settings from `steps.run_settings`: the script is what the online run sends. Each step
is a block: its id, description, lock and tables as comments, its guard (the step is skipped when
the guard is true), then its statements: in BEGIN/COMMIT when transactional, a batched step as a
DO block that commits each batch and stops after a short one (a walk: once its `until` query says the
walk has ended), CONCURRENTLY outside a transaction.
"""
from __future__ import annotations

from psycopg import sql

from ..pgversion import version_text
from .plan import Plan
from .steps import Block, Step, run_settings, step_block


def _comment(text: str) -> str:
    return "\n".join(f"-- {line}" if line else "--" for line in text.splitlines())


def _dollar_quoted(body: str) -> str:
    tag = "yumai"
    while f"${tag}$" in body:
        tag += "_"
    return f"${tag}$\n{body}\n${tag}$"


def ignore_comments(step: Step, statement: str) -> list[str]:
    """The comment lines to put right above `statement` of `step`: the reason of each linter rule it
    breaks on purpose (`Step.lint_exceptions`), then Squawk's ignore line."""
    found = [e for e in step.lint_exceptions if e.statement.search(statement)]
    if not found:
        return []
    lines = [f"-- deliberate ({', '.join(e.rules)}): {e.reason}" for e in found]
    lines.append("-- squawk-ignore " + ", ".join(r for e in found for r in e.rules))
    return lines


def render_block(block: Block, step: Step | None = None) -> list[str]:
    """The statements of a block as psql runs them; a statement of `step` that breaks a linter rule on
    purpose gets the reason and Squawk's ignore comment above it (`ignore_comments`)."""
    body: list[str] = []
    for statement in block.statements:
        text = statement.as_string(None)
        body += (ignore_comments(step, text) if step is not None else []) + [text + ";"]
    if block.check:
        return ["-- a check: every row it returns is a problem that stops the run", *body]
    if block.gate:
        return ["-- a gate: the sweep below registers what the master lacks; --apply then watches the writes for",
                "-- --gate-window seconds and runs this count; a session counted: the sweep again, and the run",
                "-- stops here (exit code 1) before the foreign key; a later run resumes here",
                body[0], *(["BEGIN;", *body[1:], "COMMIT;"] if len(body) > 1 else [])]
    if not block.transactional:
        return ["-- outside a transaction (CONCURRENTLY)", *body]
    if not block.batched:
        return ["BEGIN;", *body, "COMMIT;"]
    # a batched step: each batch a transaction of its own, until one affects fewer rows than its LIMIT, or
    # (a walk) until its last query says the walk has ended
    loop: list[str]
    execute = [f"    EXECUTE {sql.Literal(s.as_string(None)).as_string(None)};" for s in block.statements]
    if block.until is not None:
        loop = ["DECLARE ended boolean;", "BEGIN", "  LOOP", *execute,
                f"    EXECUTE {sql.Literal(block.until.as_string(None)).as_string(None)} INTO ended;",
                "    COMMIT;", "    EXIT WHEN ended;"]
        head = "-- batches: each in its own transaction, until the walk has ended (the query last in each batch)"
    else:
        loop = ["DECLARE n bigint;", "BEGIN", "  LOOP", *execute, "    GET DIAGNOSTICS n = ROW_COUNT;",
                "    COMMIT;", f"    EXIT WHEN n < {block.repeat_below};"]
        head = f"-- batches: each in its own transaction, until one affects fewer than {block.repeat_below} rows"
    body_text = "\n".join(loop + ["  END LOOP;", "END"])
    return [head, f"DO {_dollar_quoted(body_text)};"]


def render_step(step: Step, number: int, total: int, block: Block, done: bool | None = None) -> str:
    lines = [f"-- [{number}/{total}] {step.id}" + ("  (already done)" if done else ""),
             _comment(step.description)]
    on = f" on {', '.join(step.tables)}" if step.tables else ""
    lines.append(f"-- lock: {step.lock.label}{on}")
    if step.repairs:
        lines.append(f"-- repairs: {', '.join(step.repairs)}")
    if step.rewrites:
        sizes = ", ".join(f"{t} {b} bytes" for t, b in step.table_bytes)
        lines.append(f"-- REWRITES the table under ACCESS EXCLUSIVE ({sizes})")
    if step.depends_on:
        lines.append(f"-- after: {', '.join(step.depends_on)}")
    if step.guard is not None:
        lines.append("-- skipped when this returns true:")
        lines.append(_comment(step.guard.as_string(None)))
    if step.on_demand:
        lines.append("-- on demand: --apply runs it only when a later step (its VALIDATE) finds a row violating")
        lines.append("-- the key, then that step again; here it runs in its turn")
    lines.extend(render_block(block, step))
    return "\n".join(lines)


def render_script(plan: Plan, title: str | None = None, options: tuple[str, ...] | None = None) -> str:
    """The whole plan as one SQL script, runnable with psql (not in --single-transaction: CONCURRENTLY).
    `title`: the head line (default: the plan's own); `options`: the option names it lists (default: all)."""
    head = [
        title or plan.title or "-- yumai-audit: a plan, step by step",
        f"-- PostgreSQL {version_text(plan.server_version_num)}; options: {plan.options_line(options)}",
    ]
    head += [f"-- note: {n}" for n in plan.notes]
    head += ["-- the migration session's settings"] + [s.as_string(None) + ";"
                                                       for s in run_settings(plan.server_version_num)]
    total = len(plan.steps)
    opts = plan.options
    blocks = [render_step(s, i, total, step_block(s, opts.lock_timeout, opts.batch_size), plan.done.get(s.id))
              for i, s in enumerate(plan.steps, 1)]
    return "\n".join(head) + "\n\n" + "\n\n".join(blocks) + "\n"

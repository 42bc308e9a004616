"""The fix planner: composes the planners into one ordered `Plan`.

`session_plan` plans the session_master migration; with `include=("schema",)`, `schema_plan` adds
the schema-wide foreign keys after it, with "users" `users_plan` the user foreign keys. They fill one
`Draft` with the steps of the operations of fix/ops/; the preflight is built once, last, from what
those steps declare (tables, index names, referenced tables, removals), and the steps are ordered.
"""
from __future__ import annotations

from ..context import AuditContext
from ..engine.plan import order_steps
from .ddl import short_name
from .draft import Draft
from .estimate import Estimate
from .lint import with_lint_exceptions
from .ops import gathered
from .ops.foreign_key import PG_NOT_VALID_ON_PARTITIONED, FkSpec
from .plan import FixOptions, MigrationPlan, PlanError
from .preflight import PREFLIGHT, preflight
from .session_plan import plan_sessions

__all__ = ["build_plan", "FixOptions", "MigrationPlan", "PlanError", "order_steps", "FkSpec", "short_name",
           "PG_NOT_VALID_ON_PARTITIONED"]


def build_plan(ctx: AuditContext, options: FixOptions | None = None,
               evidence: dict[str, list[tuple]] | None = None) -> MigrationPlan:
    """The ordered steps for this database (guards not evaluated: `Plan.done` is empty).

    `evidence`: the rows of the planners' probes by probe key (what the data says): with
    `include=("schema",)` `schema_plan.probes(ctx)` (implied and drifting foreign keys), with "users"
    `users_plan.probes(ctx)`, with `--bridge auto` `bridge.probes(ctx)`; a probe absent from it plans nothing.
    """
    options = options or FixOptions()
    draft = Draft(ctx, options, ctx.catalog.server_version_num, evidence=evidence or {})
    session_last = plan_sessions(draft)
    schema = "schema" in options.include
    if not draft.migrated and not schema:
        raise PlanError(f"nothing to migrate: no key column of type {ctx.key_type.name} or text")
    if schema:
        from .schema_plan import plan_schema

        plan_schema(draft, evidence or {}, session_last or [PREFLIGHT])
    if "users" in options.include:
        from .users_plan import plan_users

        plan_users(draft, evidence or {}, session_last or [PREFLIGHT])
    draft.steps.insert(0, preflight(draft))
    title = ("-- yumai-audit fix: the session_master migration, step by step"
             + (" (and the schema's implied and drifting foreign keys)" if schema else ""))
    guess = Estimate.of(sum(not s.kind.inspects for s in draft.steps),
                        sum(k.table.estimated_rows for k in ctx.key_tables))
    needs = gathered(draft.steps)
    return MigrationPlan(steps=order_steps([with_lint_exceptions(s) for s in draft.steps]),
                         server_version_num=ctx.catalog.server_version_num, options=options,
                         notes=list(ctx.notes) + draft.notes + [guess.note()], title=title,
                         removals=list(needs.removals), nulled=list(needs.nulled),
                         estimate=guess.to_dict())

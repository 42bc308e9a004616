"""The (table, column, wanted reference) pairs that the FK checks look at, shared by several checks."""
from __future__ import annotations

from dataclasses import dataclass

from yumai_audit.context import AuditContext, KeyTable


@dataclass(frozen=True)
class Reference:
    target: KeyTable
    column: str
    references: str        # schema.table.column
    to_master: bool        # True: key column -> master; False: user column -> users


def wanted_references(ctx: AuditContext) -> list[Reference]:
    """Every FK the migration wants: each key column to the master, each user column to the users table."""
    out = [Reference(k, k.key.name, ctx.config.master_reference, True) for k in ctx.key_tables]
    if ctx.users is not None:
        out += [Reference(k, k.user.name, ctx.config.users_reference, False) for k in ctx.key_tables if k.user]
        if ctx.master is not None and ctx.master_user is not None and ctx.master_key is not None:
            master = KeyTable(ctx.master, ctx.master_key, ctx.master_user, is_source=False)
            out.append(Reference(master, ctx.master_user.name, ctx.config.users_reference, False))
    return out


def matching_fks(ctx: AuditContext, ref: Reference):
    fks = ref.target.table.fks_on(ref.column)
    return [fk for fk in fks if (ctx.is_master_fk(fk) if ref.to_master else ctx.is_user_fk(fk))]

"""Reading a query's one row: what an aggregate or a SELECT without FROM always returns."""
from __future__ import annotations

from typing import Any

import psycopg

from .errors import AuditError


def one_row(cursor: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    """The row of a query that returns exactly one (a count, a setting, `SELECT now()`); none is a bug."""
    row = cursor.fetchone()
    if row is None:
        raise AuditError("a query that always returns one row returned none")
    return tuple(row)

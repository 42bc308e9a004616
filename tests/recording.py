"""An executor that records every statement it sends, to compare with the `--sql` script (fix, sessions)."""
from __future__ import annotations

import psycopg

from yumai_audit.engine.executor import Executor


class RecordingCursor(psycopg.Cursor):
    sent: list[str] = []

    def execute(self, query, params=None, **kw):
        text = query.as_string(self.connection) if hasattr(query, "as_string") else str(query)
        RecordingCursor.sent.append(text)
        return super().execute(query, params, **kw)


class RecordingExecutor(Executor):
    def _connect(self):
        conn = super()._connect()
        conn.cursor_factory = RecordingCursor
        return conn

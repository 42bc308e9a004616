"""Whether the server's lock table can hold what a scan or an apply will lock, asked before either starts.

Every relation a statement reads (a table, each partition, each index the planner opens) stays locked
(ACCESS SHARE) until its transaction ends, one lock per connection that read it. A scan reads every
table of the audited schemas on its first connection (the catalog read and the table passes), and each
of its `--jobs` connections builds a part of the set of sessions, which reads every key table and its
partitions and indexes: the scan's lock need is about (relations) x (connections). An apply runs one
transaction at a time, the largest touching a partitioned table whole: about (relations) once.

PostgreSQL sizes its lock table for max_locks_per_transaction x (max_connections + the background
processes' slots + max_prepared_transactions) locks, shared by every session; past it, a lock comes out
of the shared memory left over, if any, and else fails with `out of shared memory` (on PostgreSQL 15
and 18, with a small max_locks_per_transaction, one session took about 1.6-2x the reserved size before
failing: not something to count on). So the budget is the reserved size, less the locks other sessions
hold now; a need over it is refused in one line (`LockBudgetExceeded`, exit 2) naming the settings,
the numbers and what to do.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from psycopg import sql

from .errors import AuditError

# locks on system catalogs and the like, beyond the audited relations (measured: ~20 a connection)
CATALOG_LOCKS = 50


class LockBudgetExceeded(AuditError):
    """The server's lock table cannot hold the locks the command would take."""


@dataclass(frozen=True)
class LockSettings:
    """What sizes the server's lock table, and the locks other sessions hold now."""

    max_locks_per_transaction: int
    max_connections: int
    max_prepared_transactions: int
    background: int            # autovacuum workers (slots on 18) + launcher + max_worker_processes + max_wal_senders
    in_use: int                # lock table entries held by other sessions now (pg_locks, not fast-path)

    @property
    def slots(self) -> int:
        return self.max_connections + self.max_prepared_transactions + self.background

    @property
    def capacity(self) -> int:
        return self.max_locks_per_transaction * self.slots

    @property
    def free(self) -> int:
        return self.capacity - self.in_use

    def formula(self) -> str:
        return (f"max_locks_per_transaction {self.max_locks_per_transaction} x (max_connections "
                f"{self.max_connections} + max_prepared_transactions {self.max_prepared_transactions} + "
                f"{self.background} background process slots)")

    def needed_setting(self, locks: int) -> int:
        """The max_locks_per_transaction with which `locks` more fit beside what is in use now."""
        return math.ceil((locks + self.in_use) / self.slots)


def settings_query() -> sql.Composable:
    return sql.SQL(
        "SELECT current_setting('max_locks_per_transaction')::int, current_setting('max_connections')::int, "
        "current_setting('max_prepared_transactions')::int, "
        "coalesce(current_setting('autovacuum_worker_slots', true), current_setting('autovacuum_max_workers'))::int "
        "+ 1 + current_setting('max_worker_processes')::int + current_setting('max_wal_senders')::int, "
        "(SELECT count(*) FROM pg_locks WHERE NOT fastpath AND pid IS DISTINCT FROM pg_backend_pid())::int")


def relations_query(schemas: tuple[str, ...]) -> sql.Composable:
    """The relations a connection may lock reading the audited schemas (every schema when empty, but the
    system's and the tool's): tables, partitions, materialized views and their indexes. Read from
    pg_class alone, which locks none of them."""
    return sql.SQL(
        "SELECT count(*)::int FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p', 'm', 'i', 'I') AND n.nspname <> 'information_schema' "
        "AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname NOT IN ('yumai_audit', 'yumai_quarantine') "
        "AND (cardinality({s}::text[]) = 0 OR n.nspname = ANY({s}::text[]))").format(s=sql.Literal(list(schemas)))


def read(conn, schemas: tuple[str, ...]) -> tuple[LockSettings, int]:
    """The server's settings and the relations of the audited schemas (plus CATALOG_LOCKS)."""
    with conn.transaction():
        settings = LockSettings(*conn.execute(settings_query()).fetchone())
        relations = int(conn.execute(relations_query(schemas)).fetchone()[0]) + CATALOG_LOCKS
    return settings, relations


def shortfall(settings: LockSettings, relations: int, connections: int, what: str,
              fewer: str | None = "--jobs") -> str | None:
    """The one line saying that `connections` connections each locking `relations` relations do not fit
    the lock table; None when they fit."""
    need = relations * connections
    if need <= settings.free:
        return None
    per = f" ({relations:,} relations x {connections} connections)" if connections > 1 else ""
    fit = settings.free // relations if relations else 0
    advice = []
    if fewer and connections > 1 and fit >= 1:
        advice.append(f"run with {fewer} {fit} (about {relations * fit:,} locks)")
    advice.append(f"raise max_locks_per_transaction to at least {settings.needed_setting(need)} (takes a restart)")
    if settings.in_use:
        advice.append("run when other sessions hold fewer locks")
    return (f"{what} would take about {need:,} locks{per}, more than the server's lock table holds: "
            f"{settings.capacity:,} = {settings.formula()}, {settings.in_use:,} of them held by other sessions now; "
            "it can fail with 'out of shared memory': " + ", or ".join(advice))


def check(conn, schemas: tuple[str, ...], connections: int, what: str, fewer: str | None = "--jobs") -> None:
    """Raise LockBudgetExceeded when the command cannot fit (before it takes any lock)."""
    settings, relations = read(conn, schemas)
    line = shortfall(settings, relations, connections, what, fewer)
    if line:
        raise LockBudgetExceeded(line)

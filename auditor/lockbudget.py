"""Whether the server's lock table can hold what a scan or an apply will lock, asked before either starts.

Every relation a statement reads (a table, each partition, each index the planner opens) stays locked
(ACCESS SHARE) until its transaction ends, one lock per connection that read it (and per parallel worker
that scans it). An apply runs one transaction at a time, the largest touching a partitioned table whole:
about (relations) once. A scan reads every table of the audited schemas on its first connection, which
holds those locks until the scan ends (so no table is truncated or rewritten under it, as pg_dump's
first connection does); its other `--jobs` connections each run one piece of work at a time (a part of
the set of sessions, a table's pass) in a savepoint rolled back once its rows are read, which releases
that piece's locks. So the scan needs (relations) once, plus what the other connections hold at one
time: the scan gives them only the pieces that fit beside it (`spare`, `parts_that_fit`), and builds the
set of sessions in fewer parts, on fewer connections, when two parts (each reading every key table) do
not fit; it says so in one line.

PostgreSQL sizes its lock table for max_locks_per_transaction x (max_connections + the background
processes' slots + max_prepared_transactions) locks, shared by every session; past it, a lock comes out
of the shared memory left over, if any, and else fails with `out of shared memory` (on PostgreSQL 15
and 18, with a small max_locks_per_transaction, one session took about 1.6-2x the reserved size before
failing: not something to count on). So the budget is the reserved size, less the locks other sessions
hold now; a need over it (for the scan: its first connection's) is refused in one line
(`LockBudgetExceeded`, exit 2) naming the settings, the numbers and what to do.
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


def check(conn, schemas: tuple[str, ...], connections: int, what: str,
          fewer: str | None = "--jobs") -> tuple[LockSettings, int]:
    """Raise LockBudgetExceeded when the command cannot fit (before it takes any lock); else the settings and
    the relations (`read`)."""
    settings, relations = read(conn, schemas)
    line = shortfall(settings, relations, connections, what, fewer)
    if line:
        raise LockBudgetExceeded(line)
    return settings, relations


@dataclass(frozen=True)
class Held:
    """What reading a table locks: `relations` (the table, its partitions and all their indexes: what a
    statement's planner opens) and `tables` (the table and its partitions: what a parallel worker opens)."""

    relations: int
    tables: int

    def __add__(self, other: Held) -> Held:
        return Held(self.relations + other.relations, self.tables + other.tables)


def held_query(oids: list[int]) -> sql.Composable:
    """Per table oid: its relations and tables (`Held`), from the catalog alone (no lock taken)."""
    return sql.SQL(
        "SELECT t.root, (count(*) + sum((SELECT count(*) FROM pg_index i WHERE i.indrelid = t.relid)))::int, "
        "count(*)::int FROM (SELECT r AS root, p.relid FROM unnest({oids}::oid[]) r, "
        "LATERAL (SELECT relid FROM pg_partition_tree(r::regclass) UNION SELECT r::regclass) p) t "
        "GROUP BY t.root").format(oids=sql.Literal(oids))


def held(conn, oids: list[int]) -> dict[int, Held]:
    """What reading each table (by oid) locks; a table gone since the catalog read counts nothing."""
    if not oids:
        return {}
    return {int(oid): Held(int(rel), int(tab)) for oid, rel, tab in conn.execute(held_query(oids)).fetchall()}


def parts_that_fit(spare: int, part: int, helpers: int) -> int:
    """How many of `helpers` further connections may each hold `part` locks at once within `spare`."""
    if part <= 0:
        return helpers
    return max(0, min(helpers, spare // part))


def spare_line(settings: LockSettings, relations: int, part: int, parts: int, connections: int) -> str:
    """The one line saying that the set of sessions is built in fewer parts than connections, and why."""
    return (f"the set of sessions in {parts} part{'s' if parts > 1 else ''}, not {connections}: each part locks "
            f"about {part:,} relations, and beside the scan's first connection (about {relations:,}) the server's "
            f"lock table has {max(settings.free - relations, 0):,} free ({settings.capacity:,} = "
            f"{settings.formula()}, {settings.in_use:,} held by other sessions now)")

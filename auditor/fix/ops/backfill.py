"""The backfill: every session of the source table registered in the master, each partition read once.

Two kinds of walk, each resumable (its position is a row of PROGRESS, moved in the transaction of its
batch):

1. per source partition, or per group of small partitions (one statement over all of them): each
   session's first row (by created_at, then the primary key: the order `register_sessions` uses), the
   earliest and latest created_at, into STAGING: one candidate per session and walk. A partition is read
   in key ranges of about `batch_rows` rows by its key index (a range scan; rows outside the range are
   never read), so the work is linear in its rows whatever the number of partitions;
2. over STAGING in key order (the parent's walk): each session's first candidate (same order), the latest
   end, its user when that user exists, into the master when the master lacks the session (rows that
   exist are never overwritten).

A candidate is a partial aggregate: the first row of a subset of a session's rows, with that subset's
earliest and latest times; the first of the firsts (same order) and the latest of the latests are the
session's, exactly, however the rows were split into walks. A walk that reached the end stands at END;
the catch-up (which registers whatever the master still lacks, sessions written behind a walk's position
included) drops both tables.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from psycopg import sql

from yumai_audit.checks.missing_master_rows import MissingMasterRows

from ...bridge_state import SCHEMA as BRIDGE_SCHEMA
from ...catalog import Column, Partition, QualifiedName, Table
from ...context import KeyTable
from ...engine.steps import Kind, LockMode, Step
from ...keytype import UUID, KeyType
from ...operations import Operation
from ...sqlparts import LEAVES_PER_STATEMENT, table_ref
from .. import partition_groups
from ..ddl import Built
from ..draft import Draft
from ..registration import backfill_guard, key_after, master_columns, master_values, source
from . import Deliberate

PROGRESS = QualifiedName(BRIDGE_SCHEMA, "backfill_progress")
STAGING = QualifiedName(BRIDGE_SCHEMA, "backfill_sessions")
END = UUID.end   # a walk's position once it has read its last key (a uuid key's; `Candidate.end`)
ROWS_PER_SESSION = 4    # rows a batch reads per session of --batch-size (a partition's key range)


@dataclass(frozen=True)
class Candidate:
    """What a candidate holds, from the source's columns: its key (of the key type by then), created_at
    (None: the table has none), the columns that break ties on created_at (the primary key, else the user
    column), the user column (None: none), the key type."""

    key: str
    created: Column | None
    ties: tuple[Column, ...]
    user: Column | None
    key_type: KeyType = UUID

    @classmethod
    def of(cls, table: Table, key: str, created_at: str, user: Column | None,
           key_type: KeyType = UUID) -> Candidate:
        ties = tuple(table.columns[c] for c in table.primary_key) or ((user,) if user is not None else ())
        return cls(key, table.columns.get(created_at), ties, user, key_type)

    @property
    def end(self) -> str:
        """A walk's position once it has read its last key: the key type's largest value."""
        return self.key_type.end

    def staged(self) -> list[tuple[str, str]]:
        """STAGING's columns after (sid, walk), with their types."""
        out = [("first_at", self.created.type)] if self.created is not None else []
        out += [(f"tie_{i}", c.type) for i, c in enumerate(self.ties, 1)]
        out += [("uid", self.user.type)] if self.user is not None else []
        out += [("last_at", self.created.type)] if self.created is not None else []
        return out

    def order(self, alias: str, staged: bool) -> list[sql.Composable]:
        """The first row's order after the key: created_at, then the ties (ascending, NULLs last)."""
        names = (["first_at"] if self.created is not None else []) + [f"tie_{i}" for i in range(1, len(self.ties) + 1)]
        if not staged:
            names = ([self.created.name] if self.created is not None else []) + [c.name for c in self.ties]
        return [sql.Identifier(alias, n) for n in names]

    def read(self, alias: str, staged: bool) -> list[sql.Composable]:
        """The candidate's columns read from the source (`staged` False) or from STAGING, in STAGING's order;
        the latest time as a window over the session's rows (the sort DISTINCT ON needs anyway)."""
        k = sql.Identifier(alias, "sid" if staged else self.key)
        order = self.order(alias, staged)
        cols: list[sql.Composable] = [k, *order]
        if self.user is not None:
            cols.append(sql.Identifier(alias, "uid" if staged else self.user.name))
        if self.created is not None:
            last = sql.Identifier(alias, "last_at" if staged else self.created.name)
            cols.append(sql.SQL("max({}) OVER (PARTITION BY {} ORDER BY {} ROWS BETWEEN UNBOUNDED PRECEDING AND "
                                "UNBOUNDED FOLLOWING)").format(last, k, sql.SQL(", ").join(order)))
        return cols

    def first(self, relation: sql.Composable, where: sql.Composable, staged: bool) -> sql.Composed:
        """SELECT, per session of `relation` (alias t) matching `where`, its candidate."""
        k = sql.Identifier("t", "sid" if staged else self.key)
        return sql.SQL("SELECT DISTINCT ON ({k}) {cols} FROM {rel} t WHERE {k} IS NOT NULL AND {where} "
                       "ORDER BY {order}").format(
            k=k, cols=sql.SQL(", ").join(self.read("t", staged)), rel=relation, where=where,
            order=sql.SQL(", ").join([k, *self.order("t", staged)]))


def tables(c: Candidate) -> tuple[sql.SQL | sql.Composed, ...]:
    """PROGRESS and STAGING, created when missing (by the master's step and by every batch, as the bridge's
    log and the quarantine are by their steps); the IF NOT EXISTS notices kept out of the output. STAGING is
    UNLOGGED: a crash of the server empties it (the catch-up then registers what it held, the slow way). Its
    rows need not be unique: a batch commits with its walk's position (never staged twice by one walk), and
    the walks of a later plan, grouped otherwise, may stage a session again: a copy of a candidate changes
    neither the first nor the latest. `walk` numbers a plan's walks (for the curious reader)."""
    kt = sql.SQL(c.key_type.name)
    cols: list[sql.Composable] = [sql.SQL("sid {} NOT NULL").format(kt), sql.SQL("walk int NOT NULL")]
    cols += [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in c.staged()]
    return (sql.SQL("SET LOCAL client_min_messages = warning"),
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(PROGRESS.schema)),
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (walk text PRIMARY KEY, last_key {} NOT NULL, "
                    "moved_at timestamptz NOT NULL DEFAULT now())").format(table_ref(PROGRESS),
                                                                          sql.SQL(c.key_type.stored)),
            sql.SQL("CREATE UNLOGGED TABLE IF NOT EXISTS {} ({})").format(table_ref(STAGING), sql.SQL(", ").join(cols)),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (sid)").format(
                sql.Identifier(STAGING.name + "_sid_idx"), table_ref(STAGING)))


def _range(c: Candidate, walk: str, relation: sql.Composable, key: sql.Composable, rows: int) -> sql.Composed:
    """CTEs `pos` (the walk's position, NULL before its first batch) and `b` (lo, hi: the next key range of
    about `rows` rows of `relation` after it, both ends included and whole sessions; lo NULL: nothing left;
    `last`: the range reaches the last key), read from `relation`'s index on `key`. `n` is MATERIALIZED: inlined
    into `b`, which reads `hi` twice, its OFFSET walk over the range's index entries would run twice."""
    return sql.SQL(
        "pos AS (SELECT (SELECT p.last_key FROM {progress} p WHERE p.walk = {walk}) AS last_key), "
        "lo AS (SELECT CASE WHEN pos.last_key IS NULL "
        "THEN (SELECT {k} FROM {rel} t WHERE {k} IS NOT NULL ORDER BY {k} LIMIT 1) "
        "WHEN pos.last_key = {end} THEN NULL "
        "ELSE (SELECT {k} FROM {rel} t WHERE {k} > pos.last_key ORDER BY {k} LIMIT 1) END AS lo FROM pos), "
        "n AS MATERIALIZED (SELECT lo.lo, (SELECT {k} FROM {rel} t WHERE {k} >= lo.lo ORDER BY {k} OFFSET {skip} "
        "LIMIT 1) AS hi "
        "FROM lo), "
        "b AS (SELECT n.lo, coalesce(n.hi, (SELECT {k} FROM {rel} t WHERE {k} IS NOT NULL ORDER BY {k} DESC LIMIT 1)) "
        "AS hi, n.hi IS NULL AS last FROM n)").format(
        progress=table_ref(PROGRESS), walk=sql.Literal(walk), k=key, rel=relation, end=sql.Literal(c.end),
        skip=sql.Literal(max(rows - 1, 0)))


def _move(c: Candidate, walk: str) -> sql.Composed:
    """The CTE that moves the walk to the end of its range (to END when the range reached the last key, or
    nothing was left)."""
    return sql.SQL(
        "moved AS (INSERT INTO {progress} (walk, last_key) SELECT {walk}, CASE WHEN b.last THEN {end}::{kt} "
        "ELSE b.hi END FROM b ON CONFLICT (walk) DO UPDATE SET last_key = excluded.last_key, moved_at = now())").format(
        progress=table_ref(PROGRESS), walk=sql.Literal(walk), end=sql.Literal(c.end), kt=sql.SQL(c.key_type.name))


def _stage(c: Candidate, select: sql.Composable, walk_no: int) -> sql.Composed:
    names = [sql.Identifier(n) for n, _t in c.staged()]
    return sql.SQL("INSERT INTO {staging} (sid, walk, {names}) SELECT s.sid, {no}, {snames} FROM ({select}) "
                   "AS s (sid, {names})").format(
        staging=table_ref(STAGING), names=sql.SQL(", ").join(names), no=sql.Literal(walk_no),
        snames=sql.SQL(", ").join(sql.Identifier("s", n) for n, _t in c.staged()), select=select)


def partition_batch(c: Candidate, part: QualifiedName, walk: str, walk_no: int, rows: int) -> sql.Composed:
    """One batch of a partition's walk: the next key range of about `rows` rows, its sessions' candidates
    into STAGING (the statement's row count), the position moved to the range's end."""
    k = sql.Identifier("t", c.key)
    where = sql.SQL("{k} >= (SELECT b.lo FROM b) AND {k} <= (SELECT b.hi FROM b)").format(k=k)
    return sql.SQL("WITH {range}, {moved} {stage}").format(
        range=_range(c, walk, table_ref(part), k, rows), moved=_move(c, walk),
        stage=_stage(c, c.first(table_ref(part), where, staged=False), walk_no))


def group_batch(c: Candidate, parts: list[QualifiedName], walk: str, walk_no: int) -> sql.Composed:
    """The one batch of a group of small partitions: all their rows in one statement (each partition a
    sequential scan), their sessions' candidates into STAGING; the walk then stands at END (a rerun of
    the step reads nothing)."""
    names = [c.key] + [x.name for x in ([c.created] if c.created is not None else []) + list(c.ties)
                       + ([c.user] if c.user is not None else [])]
    cols = sql.SQL(", ").join(sql.Identifier(n) for n in dict.fromkeys(names))
    union = sql.SQL(" UNION ALL ").join(sql.SQL("SELECT {} FROM {}").format(cols, table_ref(p)) for p in parts)
    where = sql.SQL("(SELECT p.last_key FROM {} p WHERE p.walk = {}) IS NULL").format(
        table_ref(PROGRESS), sql.Literal(walk))
    return sql.SQL("WITH moved AS (INSERT INTO {progress} (walk, last_key) VALUES ({walk}, {end}) "
                   "ON CONFLICT (walk) DO NOTHING RETURNING 1) {stage}").format(
        progress=table_ref(PROGRESS), walk=sql.Literal(walk), end=sql.Literal(c.end),
        stage=_stage(c, c.first(sql.SQL("({})").format(union), where, staged=False), walk_no))


def merge_batch(c: Candidate, walk: str, rows: int, into: sql.Composable) -> sql.Composed:
    """One batch of the parent's walk over STAGING: the next `rows` candidates' sessions, each session's
    first candidate and latest end, as `into` registers them (an INSERT ... SELECT over `f`: sid, first_at,
    uid, last_at)."""
    k = sql.Identifier("t", "sid")
    where = sql.SQL("{k} >= (SELECT b.lo FROM b) AND {k} <= (SELECT b.hi FROM b)").format(k=k)
    names = sql.SQL(", ").join(sql.Identifier(n) for n, _t in c.staged())
    return sql.SQL("WITH {range}, {moved}, f (sid, {names}) AS ({first}) {into}").format(
        range=_range(c, walk, table_ref(STAGING), k, rows), moved=_move(c, walk), names=names,
        first=c.first(table_ref(STAGING), where, staged=True), into=into)


def walk_ended(walk: str, end: str = END) -> sql.Composed:
    """A walk's `until`: it stands at `end` (`Candidate.end`)."""
    return sql.SQL("SELECT EXISTS (SELECT 1 FROM {} p WHERE p.walk = {} AND p.last_key = {})").format(
        table_ref(PROGRESS), sql.Literal(walk), sql.Literal(end))


def guard(done_without_walks: sql.Composable) -> sql.Composed:
    """A walk's guard. While PROGRESS exists (the walks have begun and no catch-up has run) the walk runs:
    one that has ended reads nothing, one cut off resumes after its last batch. Without it (before the
    first walk, or after the catch-up dropped it): `done_without_walks`, evaluated only then."""
    return sql.SQL("SELECT CASE WHEN to_regclass({}) IS NOT NULL THEN false ELSE ({}) END").format(
        sql.Literal(table_ref(PROGRESS).as_string(None)), done_without_walks)


def drop_tables() -> sql.Composed:
    """The catch-ups' last statement: every session the master lacked is registered, so no walk's position
    or candidate matters any more (nor those of a run cut off and never resumed)."""
    return sql.SQL("DROP TABLE IF EXISTS {}, {}").format(table_ref(PROGRESS), table_ref(STAGING))


def progress_gone() -> sql.Composed:
    return sql.SQL("SELECT to_regclass({}) IS NULL").format(sql.Literal(table_ref(PROGRESS).as_string(None)))


# --- the operation: the walks as steps ------------------------------------------------------------------

REPAIRS = (MissingMasterRows.id,)   # sessions the master lacks

LINT = tuple(
    Deliberate(("prefer-bigint-over-int",), operation,
               re.compile(r"^CREATE UNLOGGED TABLE IF NOT EXISTS " + re.escape(f'"{STAGING.schema}"."{STAGING.name}"')),
               "the backfill's staging table in the tool's schema: its columns copy the source's types (an int "
               "user column stays int, as the master's user_id), and `walk` numbers a plan's walks")
    for operation in (Operation.CREATE_MASTER, Operation.BACKFILL))


def candidate(d: Draft) -> Candidate:
    """What the backfill's walks keep of each session: the source's columns `register_sessions` reads."""
    src = source(d)
    have = master_columns(d)
    timed = {"session_start", "session_end"} & have and d.ctx.created_at(src.table) is not None
    created = d.ctx.config.created_at_column if timed else ""
    user = src.user if "user_id" in have else None
    return Candidate.of(src.table, key_after(src).name, created, user, d.ctx.key_type)


def merge_into_master(d: Draft, c: Candidate, users_unchecked: bool = False) -> sql.Composed:
    """The parent's walk registers `f` (a session's first candidate, its latest end) when the master lacks it
    (ON CONFLICT DO NOTHING: the unique index's own check, no probe of ours beside it). `users_unchecked`:
    the user as the source names it (ops/master.py, `merge_writes_users_unchecked`: the master's user_id FK
    comes after the merge, and its validation step sets NULL those that do not exist)."""
    src = source(d)
    cols, values = master_values(d, src, "b.first_at" if c.created is not None else "NULL",
                                 "b.last_at" if c.created is not None else "NULL",
                                 "b.uid" if c.user is not None else "NULL", user_checked=not users_unchecked)
    return sql.SQL("INSERT INTO {master} ({cols}) SELECT {values} FROM f b ON CONFLICT DO NOTHING").format(
        master=table_ref(d.master), cols=sql.SQL(", ").join(cols), values=sql.SQL(", ").join(values))


def backfill_steps(d: Draft, src: KeyTable, depends_on: tuple[str, ...], users_unchecked: bool = False) -> Built:
    """The walks over the source (a partition each, small ones grouped), then the parent's walk over their
    candidates into the master; returns the ids of all of them. `users_unchecked`: `merge_into_master`'s."""
    out = Built()
    m = str(d.master)
    c = candidate(d)
    key = key_after(src)
    rows = d.options.batch_size * ROWS_PER_SESSION
    parts = src.table.leaf_partitions if src.table.is_partitioned else [
        Partition(src.name, "", True, 1, src.table.bytes, src.table.estimated_rows)]
    walks = []
    # a group is one statement's UNION ALL of its partitions: at most LEAVES_PER_STATEMENT, however small they are
    for number, group in enumerate(partition_groups.groups(parts, rows, count=LEAVES_PER_STATEMENT)):
        names = [p.name for p in group]
        step_id = partition_groups.group_id("backfill", group)
        if len(group) == 1:
            statement = partition_batch(c, names[0], step_id, number, rows)
            how = (f"{group[0].name}, in key ranges of about {rows} rows (its key index)")
        else:
            statement = group_batch(c, names, step_id, number)
            how = (f"{len(names)} small partitions ({names[0]} ... {names[-1]}, about "
                   f"{sum(p.estimated_rows for p in group)} rows: together, one statement, rather than a step each)")
        walks.append(out.add(Step(
            id=step_id, operation=Operation.BACKFILL,
            description=f"Read each session's first row, first and last time from {how} into {STAGING}",
            statements=tables(c) + (statement,),
            until=walk_ended(step_id, c.end) if len(group) == 1 else None,
            # it reads the partitions (blocking no writer) and writes the tool's own tables only
            lock=LockMode.ACCESS_SHARE, tables=tuple(str(n) for n in names),
            kind=Kind.BATCHED if len(group) == 1 else Kind.CHANGE, depends_on=depends_on,
            guard=guard(sql.SQL(" AND ").join(sql.SQL("({})").format(backfill_guard(d, n, key))
                                                       for n in names)),
            changes=(), target=m, repairs=REPAIRS)).id)    # only the tool's own tables: nothing to back up
    merge_id = f"backfill:{m}"
    merge = out.add(Step(
        id=merge_id, operation=Operation.BACKFILL,
        description=f"Register in {m} every session it lacks from {STAGING}: its first row's time and "
        f"user, its last time (existing rows never overwritten), {d.options.batch_size} candidates a batch",
        statements=tables(c) + (merge_batch(c, merge_id, d.options.batch_size,
                                                              merge_into_master(d, c, users_unchecked)),),
        until=walk_ended(merge_id, c.end), lock=LockMode.ROW_EXCLUSIVE, tables=(m,), kind=Kind.BATCHED,
        # no walk when a partitioned source has no partition yet (partitions made later, by a job): after what
        # the walks would have come after (the master's creation among it), not first of the plan
        depends_on=tuple(walks) or depends_on, guard=guard(backfill_guard(d, src.name, key)),
        changes=(m,), target=m, repairs=REPAIRS))
    out.last = [*walks, merge.id]
    return out

"""The backfill (auditor/fix/session_plan.py, `walk_batch`): one walk over each source partition in key
order, `batch_size` sessions a batch, its position in yumai_audit.backfill_progress. What it reads
grows with the partition, not with the partition times its batches; counts stay exact; a run cut off
(an exception in a batch, or kill -9) resumes after the last committed batch."""
from __future__ import annotations

import os
import signal
import subprocess

import psycopg
import pytest
from test_executor import CLI, _apply_until_converged, _started, _wait_for

from yumai_audit import api
from yumai_audit.config import Config
from yumai_audit.connection import resolve_target
from yumai_audit.engine.executor import Executor, StepFailed
from yumai_audit.operations import Operation

SESSIONS = 1200          # in the default partition, 5 rows each
SPANNING = 100           # sessions of the January partition with one more row in the default partition
JANUARY = 300
NIL = "00000000-0000-0000-0000-000000000000"
MAX = "ffffffff-ffff-ffff-ffff-ffffffffffff"

SOURCE = f"""
CREATE SCHEMA chatbot;
CREATE TABLE chatbot.users (id int PRIMARY KEY);
INSERT INTO chatbot.users SELECT generate_series(1, 9);
CREATE TABLE chatbot.conversations (
    id bigserial, session_id uuid, user_id int, created_at timestamptz NOT NULL, PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE chatbot.conversations_2026_01 PARTITION OF chatbot.conversations
    FOR VALUES FROM ('2026-01-01 00:00+00') TO ('2026-02-01 00:00+00');
CREATE TABLE chatbot.conversations_default PARTITION OF chatbot.conversations DEFAULT;
-- the default partition: {SESSIONS} sessions of 5 rows, their users changing (the first row's counts),
-- one of them a user that does not exist (10)
INSERT INTO chatbot.conversations (session_id, user_id, created_at)
    SELECT md5('s' || s)::uuid, 1 + (s + r) % 10, timestamptz '2025-06-01' + s * interval '1 minute' + r * interval '1 second'
    FROM generate_series(1, {SESSIONS}) s, generate_series(1, 5) r;
-- the January partition, {SPANNING} of its sessions with a row in the default partition too (later)
INSERT INTO chatbot.conversations (session_id, user_id, created_at)
    SELECT md5('j' || s)::uuid, 1 + s % 9, timestamptz '2026-01-02' + s * interval '1 minute' + r * interval '1 second'
    FROM generate_series(1, {JANUARY}) s, generate_series(1, 3) r;
INSERT INTO chatbot.conversations (session_id, user_id, created_at)
    SELECT md5('j' || s)::uuid, 2, timestamptz '2026-03-01' + s * interval '1 minute' FROM generate_series(1, {SPANNING}) s;
-- the ends of the key order, and rows without a session
INSERT INTO chatbot.conversations (session_id, user_id, created_at) VALUES
    ('{NIL}', 3, '2025-05-01'), ('{NIL}', 4, '2025-05-02'), ('{MAX}', 5, '2025-05-03'), (NULL, 1, '2025-05-04'),
    (NULL, 2, '2025-05-05');
ANALYZE chatbot.conversations;
"""
DEFAULT_SESSIONS = SESSIONS + SPANNING + 2      # walked by backfill:chatbot.conversations_default
ALL_SESSIONS = SESSIONS + JANUARY + 2

# what the master must hold: each session's first and last created_at, the user of its earliest row when
# that user exists
EXPECTED = """
SELECT c.session_id, min(c.created_at), max(c.created_at),
       (SELECT u.id FROM chatbot.users u WHERE u.id = (array_agg(c.user_id ORDER BY c.created_at, c.id))[1])
FROM chatbot.conversations c WHERE c.session_id IS NOT NULL GROUP BY 1 ORDER BY 1
"""
MASTER = "SELECT session_id, session_start, session_end, user_id FROM chatbot.session_master ORDER BY 1"

# what a statement reads from the source: rows of its partitions' seq scans, entries of their indexes (counted in
# the running transaction, so measured before and after the statement on its own connection)
READS = """
SELECT coalesce(sum(pg_stat_get_xact_tuples_returned(c.oid)), 0)::bigint FROM pg_class c
WHERE c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'chatbot.conversations'::regclass)
   OR c.oid IN (SELECT i.indexrelid FROM pg_index i JOIN pg_inherits h ON h.inhrelid = i.indrelid
                WHERE h.inhparent = 'chatbot.conversations'::regclass)
"""


class CountingExecutor(Executor):
    """`fix --apply`'s executor, measuring what each batch of a backfill step reads (`reads[step]`: per batch)."""

    def __init__(self, target, plan, **kw):
        super().__init__(target, plan, **kw)
        self.batch = {s.statements[-1].as_string(None): s.id for s in plan.steps if s.operation is Operation.BACKFILL}
        self.reads: dict[str, list[int]] = {}

    def _connect(self):
        conn = super()._connect()
        executor = self

        class Counting(psycopg.Cursor):
            def execute(self, query, params=None, **kw):
                step = executor.batch.get(query.as_string(self.connection) if hasattr(query, "as_string") else "")
                if step is None:
                    return super().execute(query, params, **kw)
                before = self.connection.execute(READS).fetchone()[0]
                super().execute(query, params, **kw)
                executor.reads.setdefault(step, []).append(self.connection.execute(READS).fetchone()[0] - before)
                return self

        conn.cursor_factory = Counting
        return conn


def run(db, batch_size: int, stop_after: tuple[str, int] | None = None, during=None) -> CountingExecutor:
    """Plan and apply with `batch_size`; `stop_after` (step, batch): that batch fails (rolled back, the earlier
    ones stay, as when the run is killed there); `during(step, batch)`: called at the end of each batch."""
    def cut(step, conn):
        batch = len(executor.reads.get(step.id, []))
        if during is not None:
            during(step.id, batch)
        if stop_after is not None and (step.id, batch) == stop_after:
            raise psycopg.OperationalError("cut off by the test")

    target = resolve_target(db.conninfo)
    executor = CountingExecutor(target, api.plan(target, Config(), options=api.FixOptions(batch_size=batch_size)), step_hook=cut)
    executor.outcome = executor.run()
    return executor


def source_rows(db) -> int:
    return db.scalar("SELECT count(*) FROM chatbot.conversations")


def backfills(result) -> dict[str, tuple[int, int]]:
    """{partition: (rows, batches)} of the backfill steps the run did (a batch is a try: none was retried here)."""
    return {o.step.split(".")[-1]: (o.rows, o.tries) for o in result.outcomes
            if o.step.startswith("backfill:") and o.outcome == "done"}


def test_the_backfill_reads_each_partition_once_whatever_the_batch_size(db):
    db.execute(SOURCE)
    rows = source_rows(db)
    ran = run(db, batch_size=50)
    assert ran.outcome.ok, ran.outcome.problems
    # linear: an index probe per session walked, each registered session's rows twice (its first and last
    # time, its first user); the old backfill read the whole partition again in each batch (> 20x the rows)
    assert sum(map(sum, ran.reads.values())) <= 3 * rows, ran.reads
    assert max(map(max, ran.reads.values())) <= 3 * 50 * 6, ran.reads     # a batch: O(batch), not O(partition)
    # exact counts: every session once, the January ones (spanning included) by the January walk; each walk
    # ends with its first short batch
    assert backfills(ran.outcome) == {
        "conversations_2026_01": (JANUARY, JANUARY // 50 + 1),
        "conversations_default": (DEFAULT_SESSIONS - SPANNING, DEFAULT_SESSIONS // 50 + 1)}
    assert db.fetchall(MASTER) == db.fetchall(EXPECTED)
    assert db.scalar("SELECT count(*) FROM chatbot.session_master WHERE session_id IN (%s, %s)", (NIL, MAX)) == 2
    # every walk ended, and the catch-up dropped the walks' table
    assert db.scalar("SELECT to_regclass('yumai_audit.backfill_progress')") is None


def test_sessions_written_during_the_walk_are_registered_by_it_or_by_the_catch_up(db):
    """The application writes two new sessions while the default partition is walked: the one ahead of the
    walk's position is registered by the walk, the one behind it by the catch-up (one row each)."""
    db.execute(SOURCE)
    behind, ahead = "00000000-0000-0000-0000-000000000001", "ffffffff-ffff-ffff-ffff-fffffffffffe"

    def write(step, batch):
        if (step, batch) == ("backfill:chatbot.conversations_default", 3):
            db.execute("INSERT INTO chatbot.conversations (session_id, user_id, created_at) VALUES "
                       "(%s, 1, '2025-07-01'), (%s, 2, '2025-07-02')", (behind, ahead))

    ran = run(db, batch_size=50, during=write)
    assert ran.outcome.ok, ran.outcome.problems
    assert backfills(ran.outcome)["conversations_default"][0] == DEFAULT_SESSIONS - SPANNING + 1
    assert [o.rows for o in ran.outcome.outcomes if o.step == "catchup:chatbot.conversations"] == [1]
    assert db.fetchall(MASTER) == db.fetchall(EXPECTED)


def test_a_backfill_cut_off_resumes_after_its_last_committed_batch(db):
    db.execute(SOURCE)
    step = "backfill:chatbot.conversations_default"
    with pytest.raises(StepFailed, match="cut off by the test"):
        run(db, batch_size=50, stop_after=(step, 5))
    # four batches of the default partition committed: the walk stands on its 200th key
    fourth = db.scalar("SELECT session_id FROM (SELECT DISTINCT session_id FROM chatbot.conversations_default "
                       "WHERE session_id IS NOT NULL ORDER BY 1 LIMIT 200) k ORDER BY 1 DESC LIMIT 1")
    assert db.fetchall("SELECT walk, last_key FROM yumai_audit.backfill_progress") == [(step, fourth)]
    missing = ALL_SESSIONS - db.scalar("SELECT count(*) FROM chatbot.session_master")
    assert 0 < missing < DEFAULT_SESSIONS
    assert step in [s.id for s in api.plan(db.conninfo, Config()).pending]     # its guard: sessions are missing
    resumed = run(db, batch_size=50)
    assert resumed.outcome.ok, resumed.outcome.problems
    # the rest of the walk only: 200 keys fewer, exactly the missing sessions registered
    assert backfills(resumed.outcome) == {"conversations_default": (missing, (DEFAULT_SESSIONS - 200) // 50 + 1)}
    assert db.fetchall(MASTER) == db.fetchall(EXPECTED)
    assert db.scalar("SELECT to_regclass('yumai_audit.backfill_progress')") is None
    assert api.plan(db.conninfo, Config()).pending == []


def test_a_walk_cut_off_and_never_resumed_is_dropped_by_the_catch_up(db):
    """The partition's sessions registered by other means after the cut: its backfill is done (guard), and the
    walk's position, moot, goes with the catch-up."""
    db.execute(SOURCE)
    with pytest.raises(StepFailed, match="cut off by the test"):
        run(db, batch_size=50, stop_after=("backfill:chatbot.conversations_default", 2))
    db.execute(EXPECTED.replace("SELECT c.session_id", "INSERT INTO chatbot.session_master "
                                "(session_id, session_start, session_end, user_id) SELECT c.session_id")
               .replace("ORDER BY 1", "") + " ON CONFLICT DO NOTHING")
    resumed = run(db, batch_size=50)
    assert resumed.outcome.ok, resumed.outcome.problems
    assert backfills(resumed.outcome) == {}
    assert [o.rows for o in resumed.outcome.outcomes if o.step == "catchup:chatbot.conversations"] == [0]
    assert db.scalar("SELECT to_regclass('yumai_audit.backfill_progress')") is None
    assert api.plan(db.conninfo, Config()).pending == []


def test_a_killed_backfill_resumes_with_exact_counts(db):
    """kill -9 of `fix --apply` while it walks (a batch of one session at a time), then a rerun."""
    db.execute(SOURCE)
    proc = subprocess.Popen(CLI + ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--batch-size", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _started(db, "backfill:chatbot.conversations_default") and db.scalar(
            "SELECT to_regclass('yumai_audit.backfill_progress')") and db.scalar(
            "SELECT count(*) FROM yumai_audit.backfill_progress WHERE walk LIKE '%default'"), "the walk to start")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert db.scalar("SELECT count(*) FROM yumai_audit.backfill_progress") == 1     # the walk stands somewhere
    registered = db.scalar("SELECT count(*) FROM chatbot.session_master")
    done = _apply_until_converged(db)
    assert "resumed after an interrupted run: backfill:chatbot.conversations_default" in done.stdout, done.stdout
    assert db.fetchall(MASTER) == db.fetchall(EXPECTED)
    assert db.scalar("SELECT to_regclass('yumai_audit.backfill_progress')") is None
    journal = db.fetchall("SELECT step, outcome, rows FROM yumai_audit.journal WHERE step LIKE 'backfill:%' ORDER BY id")
    # exact: the rerun registered what the killed run had not committed
    assert journal == [("backfill:chatbot.conversations_2026_01", "done", JANUARY),
                       ("backfill:chatbot.conversations_default", "interrupted", None),
                       ("backfill:chatbot.conversations_default", "done", ALL_SESSIONS - registered)]


def test_the_walk_needs_an_ordered_index_on_the_key(db):
    """A hash index on the source's key serves lookups but cannot be walked in key order: the plan builds a btree."""
    db.execute(SOURCE + "CREATE INDEX conversations_session_hash ON chatbot.conversations USING hash (session_id);")
    plan = api.plan(db.conninfo, Config())
    assert {"index:chatbot.conversations", "index:chatbot.conversations_default"} <= {s.id for s in plan.steps}
    assert set(plan.step("backfill:chatbot.conversations_default").depends_on) >= {
        "attach-index:chatbot.conversations_default", "attach-index:chatbot.conversations_2026_01"}
    db.execute("CREATE INDEX ON chatbot.conversations (session_id, created_at)")     # a btree leading with it
    assert not any(s.id.startswith("index:chatbot.conversations") for s in api.plan(db.conninfo, Config()).steps)

"""The backfill (auditor/fix/ops/backfill.py): one walk over each source partition in key ranges (small ones
grouped), each session's candidate into yumai_audit.backfill_sessions, then one walk over those into the
master; positions in yumai_audit.backfill_progress. What it reads grows with the rows, not with the
partitions times the sessions; the master is exactly what registering each session from the whole source
gives; a run cut off (an exception in a batch, or kill -9) resumes after the last committed batch."""
from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid

import psycopg
import pytest
from fixtures import daily_conversations
from test_executor import CLI, _started, _wait_for

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


DEFAULT_WALK = 1       # the walks' numbers in the staging table: the partitions in catalog order


def staged(db, walk: int = DEFAULT_WALK) -> int:
    """Candidates a walk has put in the staging table so far."""
    return db.scalar("SELECT count(*) FROM yumai_audit.backfill_sessions s WHERE s.walk = %s", (walk,))


def test_the_backfill_reads_each_partition_once_whatever_the_batch_size(db):
    db.execute(SOURCE)
    rows = source_rows(db)
    ran = run(db, batch_size=50)
    assert ran.outcome.ok, ran.outcome.problems
    # linear: each row once by its partition's key range, each range's ends probed by the key index; the
    # first backfill read the whole partition again in each batch (> 20x the rows), the second probed every
    # partition for each session (sessions x partitions)
    walks = {k: v for k, v in ran.reads.items() if k != "backfill:chatbot.session_master"}
    assert sum(map(sum, walks.values())) <= 3 * rows, ran.reads
    assert max(map(max, walks.values())) <= 3 * 4 * 50 + 20, ran.reads     # a batch: O(batch), not O(partition)
    assert sum(ran.reads["backfill:chatbot.session_master"]) == 0           # the merge reads no partition
    # exact counts: each partition's walk keeps one candidate per session of it (the spanning ones in both),
    # the merge registers every session once; a walk of about 200 rows a batch ends with the batch that
    # reaches its last key
    got = backfills(ran.outcome)
    assert {k: v[0] for k, v in got.items()} == {
        "conversations_2026_01": JANUARY, "conversations_default": DEFAULT_SESSIONS, "session_master": ALL_SESSIONS}
    assert got["conversations_2026_01"][1] == 5       # 900 rows, 67 sessions (201 rows) a batch
    assert 6100 // 205 <= got["conversations_default"][1] <= 6100 // 200 + 1
    assert db.fetchall(MASTER) == db.fetchall(EXPECTED)
    assert db.scalar("SELECT count(*) FROM chatbot.session_master WHERE session_id IN (%s, %s)", (NIL, MAX)) == 2
    # the catch-up found nothing left, and dropped the walks' tables
    assert [o.rows for o in ran.outcome.outcomes if o.step == "catchup:chatbot.conversations"] == [0]
    assert db.scalar("SELECT to_regclass('yumai_audit.backfill_progress')") is None
    assert db.scalar("SELECT to_regclass('yumai_audit.backfill_sessions')") is None


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
    assert backfills(ran.outcome)["conversations_default"][0] == DEFAULT_SESSIONS + 1
    assert backfills(ran.outcome)["session_master"][0] == ALL_SESSIONS + 1
    assert [o.rows for o in ran.outcome.outcomes if o.step == "catchup:chatbot.conversations"] == [1]
    assert db.fetchall(MASTER) == db.fetchall(EXPECTED)


def test_a_backfill_cut_off_resumes_after_its_last_committed_batch(db):
    db.execute(SOURCE)
    step = "backfill:chatbot.conversations_default"
    with pytest.raises(StepFailed, match="cut off by the test"):
        run(db, batch_size=50, stop_after=(step, 5))
    # four batches of the default partition committed: the walk stands on the last key they staged
    done = staged(db)
    last = db.scalar("SELECT max(sid::text)::uuid FROM yumai_audit.backfill_sessions s WHERE s.walk = %s",
                     (DEFAULT_WALK,))
    assert db.fetchall("SELECT walk, last_key FROM yumai_audit.backfill_progress ORDER BY walk") == [
        ("backfill:chatbot.conversations_2026_01", uuid.UUID(MAX)), (step, last)]
    assert 4 * 40 <= done <= 4 * 200 < DEFAULT_SESSIONS     # 200 rows or more a batch, a session 1-5 rows
    assert db.scalar("SELECT count(*) FROM chatbot.session_master") == 0    # the merge comes after the walks
    assert step in [s.id for s in api.plan(db.conninfo, Config(), api.FixOptions(batch_size=50)).pending]   # its guard: walks begun
    resumed = run(db, batch_size=50)
    assert resumed.outcome.ok, resumed.outcome.problems
    # the rest of the walk only, the January walk ended (one empty batch), every session registered once
    got = backfills(resumed.outcome)
    assert got["conversations_default"][0] == DEFAULT_SESSIONS - done
    assert got["conversations_2026_01"] == (0, 1)
    assert got["session_master"][0] == ALL_SESSIONS
    assert db.fetchall(MASTER) == db.fetchall(EXPECTED)
    assert db.scalar("SELECT to_regclass('yumai_audit.backfill_progress')") is None
    assert api.plan(db.conninfo, Config()).pending == []


def test_a_walk_cut_off_and_never_resumed_is_dropped_by_the_catch_up(db):
    """The partition's sessions registered by other means after the cut: the rerun's merge registers
    nothing, the catch-up nothing, and the walks' tables go with the catch-up."""
    db.execute(SOURCE)
    with pytest.raises(StepFailed, match="cut off by the test"):
        run(db, batch_size=50, stop_after=("backfill:chatbot.conversations_default", 2))
    db.execute(EXPECTED.replace("SELECT c.session_id", "INSERT INTO chatbot.session_master "
                                "(session_id, session_start, session_end, user_id) SELECT c.session_id")
               .replace("ORDER BY 1", "") + " ON CONFLICT DO NOTHING")
    resumed = run(db, batch_size=50)
    assert resumed.outcome.ok, resumed.outcome.problems
    assert backfills(resumed.outcome)["session_master"][0] == 0
    assert [o.rows for o in resumed.outcome.outcomes if o.step == "catchup:chatbot.conversations"] == [0]
    assert db.scalar("SELECT to_regclass('yumai_audit.backfill_progress')") is None
    assert api.plan(db.conninfo, Config()).pending == []


def apply_until_converged(db, *options: str) -> subprocess.CompletedProcess:
    """`fix --apply` once the killed run's advisory lock is gone (its server process notices within a second)."""
    for _ in range(40):
        proc = subprocess.run(CLI + ["fix", "--dsn", db.conninfo, "--apply", "--yes", *options], capture_output=True,
                              text=True, timeout=300)
        if not (proc.returncode == 2 and "another yumai-audit fix --apply is running" in proc.stderr):
            return proc
        time.sleep(0.5)
    raise AssertionError("the killed run's advisory lock was never released")


def test_a_killed_backfill_resumes_with_exact_counts(db):
    """kill -9 of `fix --apply` while it walks (a batch of a few rows at a time), then a rerun."""
    db.execute(SOURCE)
    proc = subprocess.Popen(CLI + ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--batch-size", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    walk = "backfill:chatbot.conversations_default"
    try:
        _wait_for(lambda: _started(db, walk) and db.scalar(
            "SELECT count(*) FROM yumai_audit.backfill_progress WHERE walk = %s", (walk,)), "the walk to start")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert db.scalar("SELECT count(*) FROM yumai_audit.backfill_progress WHERE walk = %s", (walk,)) == 1
    before = staged(db)
    done = apply_until_converged(db, "--batch-size", "2")     # the same walks
    assert f"resumed after an interrupted run: {walk}" in done.stdout, done.stdout
    assert db.fetchall(MASTER) == db.fetchall(EXPECTED)
    assert db.scalar("SELECT to_regclass('yumai_audit.backfill_progress')") is None
    journal = db.fetchall("SELECT step, outcome, rows FROM yumai_audit.journal WHERE step LIKE 'backfill:%' ORDER BY id")
    # exact: the rerun staged what the killed run had not committed, the merge registered every session
    assert journal == [("backfill:chatbot.conversations_2026_01", "done", JANUARY),
                       (walk, "interrupted", None),
                       ("backfill:chatbot.conversations_2026_01", "done", 0),
                       (walk, "done", DEFAULT_SESSIONS - before),
                       ("backfill:chatbot.session_master", "done", ALL_SESSIONS)]


def test_the_walk_needs_an_ordered_index_on_the_key(db):
    """A hash index on the source's key serves lookups but cannot be walked in key order: the plan builds a btree."""
    db.execute(SOURCE + "CREATE INDEX conversations_session_hash ON chatbot.conversations USING hash (session_id);")
    plan = api.plan(db.conninfo, Config())
    assert {"index:chatbot.conversations", "index:chatbot.conversations_default"} <= {s.id for s in plan.steps}
    # both partitions small: one walk over the two (see test_small_partitions_are_walked_together)
    assert set(plan.step("backfill:chatbot.conversations_2026_01+1").depends_on) >= {
        "attach-index:chatbot.conversations_default", "attach-index:chatbot.conversations_2026_01"}
    db.execute("CREATE INDEX ON chatbot.conversations (session_id, created_at)")     # a btree leading with it
    assert not any(s.id.startswith("index:chatbot.conversations") for s in api.plan(db.conninfo, Config()).steps)


# 40 daily partitions and a default one, as pg_partman makes them; sessions spanning days and the default
# partition, ties on the earliest created_at, users that do not exist; `{pk}`: with a primary key (ties on
# created_at go to the lowest id) or without one, created_at nullable (ties go to the lowest user, NULLs last)
DAILY = """
CREATE SCHEMA chatbot;
CREATE TABLE chatbot.users (id int PRIMARY KEY);
INSERT INTO chatbot.users SELECT generate_series(1, 9);
CREATE TABLE chatbot.conversations (id bigserial, session_id uuid, user_id int, created_at timestamptz{pk})
    PARTITION BY RANGE (created_at);
DO $$ BEGIN FOR d IN 0..39 LOOP
    EXECUTE format('CREATE TABLE chatbot.%I PARTITION OF chatbot.conversations FOR VALUES FROM (%L) TO (%L)',
                   'conversations_p' || to_char(date '2026-01-01' + d, 'YYYYMMDD'), date '2026-01-01' + d,
                   date '2026-01-01' + d + 1);
END LOOP; END $$;
CREATE TABLE chatbot.conversations_default PARTITION OF chatbot.conversations DEFAULT;
-- five big days: 100 sessions of 4 rows each
INSERT INTO chatbot.conversations (session_id, user_id, created_at)
    SELECT md5('b' || d || '-' || s)::uuid, 1 + (s + r) % 11,
           timestamptz '2026-01-01 00:00+00' + d * interval '1 day' + s * interval '1 minute' + r * interval '1 second'
    FROM generate_series(0, 4) d, generate_series(1, 100) s, generate_series(1, 4) r;
-- small days: 10 sessions of 3 rows each
INSERT INTO chatbot.conversations (session_id, user_id, created_at)
    SELECT md5('d' || d || '-' || s)::uuid, 1 + (s * r) % 10,
           timestamptz '2026-01-01 00:00+00' + d * interval '1 day' + s * interval '1 minute' + r * interval '1 second'
    FROM generate_series(5, 39) d, generate_series(1, 10) s, generate_series(1, 3) r;
-- 200 sessions over three days and the default partition (a later row), 50 of them with their first row
-- in the default partition (earlier)
INSERT INTO chatbot.conversations (session_id, user_id, created_at)
    SELECT md5('x' || s)::uuid, 1 + (s + k) % 10,
           timestamptz '2026-01-01 12:00+00' + (s % 37 + k) * interval '1 day' + s * interval '1 second'
    FROM generate_series(1, 200) s, generate_series(0, 2) k;
INSERT INTO chatbot.conversations (session_id, user_id, created_at)
    SELECT md5('x' || s)::uuid, 1 + s % 9, timestamptz '2027-01-01 00:00+00' + s * interval '1 minute'
    FROM generate_series(1, 200) s;
INSERT INTO chatbot.conversations (session_id, user_id, created_at)
    SELECT md5('x' || s)::uuid, 1 + s % 12, timestamptz '2025-12-01 00:00+00' + s * interval '1 minute'
    FROM generate_series(1, 50) s;
-- ties on the earliest time: in a day (users 5 then 3) and in the default partition (7, then none) with a
-- later row in a day
INSERT INTO chatbot.conversations (session_id, user_id, created_at)
    SELECT md5('t' || s)::uuid, u, timestamptz '2026-01-08 12:00+00' + s * interval '1 minute'
    FROM generate_series(1, 30) s, unnest(ARRAY[5, 3]) u;
INSERT INTO chatbot.conversations (session_id, user_id, created_at)
    SELECT md5('u' || s)::uuid, u, timestamptz '2025-11-01 00:00+00' + s * interval '1 minute'
    FROM generate_series(1, 20) s, unnest(ARRAY[7, NULL]) u;
INSERT INTO chatbot.conversations (session_id, user_id, created_at)
    SELECT md5('u' || s)::uuid, 1, timestamptz '2026-01-04 00:00+00' + s * interval '1 minute'
    FROM generate_series(1, 20) s;
INSERT INTO chatbot.conversations (session_id, user_id, created_at) VALUES (NULL, 1, '2026-01-02'), (NULL, 2, '2026-03-02');
{more}
ANALYZE chatbot.conversations;
"""
# without a primary key, created_at may be NULL: sessions with no time at all, and with a time and a NULL one
UNTIMED = """
INSERT INTO chatbot.conversations (session_id, user_id, created_at)
    SELECT md5('n' || s)::uuid, u, NULL FROM generate_series(1, 10) s, unnest(ARRAY[4, 2, NULL]) u;
INSERT INTO chatbot.conversations (session_id, user_id, created_at)
    SELECT md5('m' || s)::uuid, u, t FROM generate_series(1, 10) s,
    (VALUES (1, NULL::timestamptz), (6, timestamptz '2026-01-20 00:00+00'), (8, timestamptz '2026-01-21 00:00+00')) v (u, t);
"""
# the master as registering each session from the whole source gives (`register_sessions`): first and last
# created_at, the user of its first row by created_at then the primary key (or the user), when that user exists
DAILY_EXPECTED = """
SELECT c.session_id, min(c.created_at), max(c.created_at),
       (SELECT u.id FROM chatbot.users u WHERE u.id = (array_agg(c.user_id ORDER BY c.created_at, {ties}))[1]),
       coalesce(max(c.created_at) >= now() - interval '30 minutes', false)
FROM chatbot.conversations c WHERE c.session_id IS NOT NULL AND c.session_id <> %s GROUP BY 1 ORDER BY 1
"""
KEPT = "0dc3a7d2-e3a2-4e0b-8a36-9a8bc2a7c8c1"     # a session the master has before the migration


@pytest.mark.parametrize("pk", [True, False], ids=["primary-key", "no-key-nullable-time"])
def test_the_backfill_registers_exactly_what_registering_from_the_whole_source_gives(db, pk):
    """Daily partitions walked alone (the big days) and in groups (the small ones), sessions spanning them and
    the default partition: the master holds, for every session, exactly its earliest and latest created_at
    and its first row's user (ties as `register_sessions` orders them); a row it had before stays as it was."""
    db.execute(DAILY.replace("{pk}", ", PRIMARY KEY (id, created_at)" if pk else "")
               .replace("{more}", "" if pk else UNTIMED))
    db.execute("INSERT INTO chatbot.conversations (session_id, user_id, created_at) VALUES (%s, 1, '2026-01-03')",
               (KEPT,))
    db.execute("CREATE TABLE chatbot.session_master (session_id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
               "user_id int REFERENCES chatbot.users (id) ON DELETE SET NULL, session_start timestamptz, "
               "session_end timestamptz, is_active boolean DEFAULT true)")
    db.execute("INSERT INTO chatbot.session_master VALUES (%s, 9, '2020-01-01', '2020-01-02', true)", (KEPT,))
    ran = run(db, batch_size=50)      # about 200 rows a batch: the big days (400+ rows) walk alone
    assert ran.outcome.ok, ran.outcome.problems
    walks = [s for s in ran.outcome.plan.steps if s.operation is Operation.BACKFILL][:-1]
    covered = [1 + int(s.id.rsplit("+", 1)[1]) if "+" in s.id else 1 for s in walks]
    assert sum(covered) == 41 and max(covered) >= 3 and len(walks) < 30, [s.id for s in walks]
    assert {f"backfill:chatbot.conversations_p2026010{d}" for d in range(1, 6)} <= {s.id for s in walks}
    expected = db.fetchall(DAILY_EXPECTED.format(ties="c.id, c.created_at" if pk else "c.user_id"), (KEPT,))
    assert len(expected) == 500 + 350 + 200 + 30 + 20 + (0 if pk else 20)
    assert db.fetchall("SELECT session_id, session_start, session_end, user_id, is_active FROM chatbot.session_master "
                       "WHERE session_id <> %s ORDER BY 1", (KEPT,)) == expected
    assert db.fetchall("SELECT user_id, session_start::date::text FROM chatbot.session_master WHERE session_id = %s",
                       (KEPT,)) == [(9, "2020-01-01")]
    # the walks did it all: the catch-up found nothing left
    assert [o.rows for o in ran.outcome.outcomes if o.step == "catchup:chatbot.conversations"] == [0]
    # 41 partitions: the small ones' indexes (and, before 18, FKs) a step per group; verify found every one covered
    ids = [s.id for s in ran.outcome.plan.steps]
    assert any(i.startswith("index:chatbot.conversations_p") and "+" in i for i in ids), ids
    assert any(i.startswith("fk-add:chatbot.conversations_p") and "+" in i for i in ids) == (db.server.version_num < 180000)
    assert [o.outcome for o in ran.outcome.outcomes if o.step == "verify"] == ["done"]


COVERED = """
SELECT c.relname, i.indisvalid,
       EXISTS (SELECT 1 FROM pg_inherits h JOIN pg_class pi ON pi.oid = h.inhparent
               WHERE h.inhrelid = i.indexrelid AND pi.relname = 'conversations_session_id_idx'),
       EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'f' AND k.convalidated
               AND k.confrelid = 'chatbot.session_master'::regclass)
FROM pg_class c LEFT JOIN pg_index i ON i.indrelid = c.oid
    AND i.indkey[0] = (SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'session_id')
WHERE c.relname = 'conversations_2026_02'
"""


def test_a_partition_created_during_the_apply_ends_indexed_covered_and_verified(db):
    """pg_partman's job creates a partition (with a new session's rows) after the plan was made, before the
    parent's index: the first run's verify finds it unindexed and the parent's index INVALID, the apply plans
    again and covers it; it says ok only then."""
    db.execute(SOURCE)
    said = []

    def create_partition(step, batch):
        if step == "master":
            with psycopg.connect(db.conninfo, autocommit=True) as other:
                other.execute("CREATE TABLE chatbot.conversations_2026_02 PARTITION OF chatbot.conversations "
                              "FOR VALUES FROM ('2026-02-01 00:00+00') TO ('2026-03-01 00:00+00')")
                other.execute("INSERT INTO chatbot.conversations (session_id, user_id, created_at) VALUES "
                              "(%s, 1, '2026-02-02'), (%s, 2, '2026-02-03')", (NEW, NEW))

    def cut(step, conn):
        create_partition(step.id, 0)

    target = resolve_target(db.conninfo)
    result = api.apply(target, Config(), rescan=False, step_hook=cut, progress=said.append)
    assert result.ok, result.problems
    assert any("planning again" in line for line in said), said
    assert db.fetchall(COVERED) == [("conversations_2026_02", True, True, True)]
    assert db.scalar("SELECT bool_and(i.indisvalid) FROM pg_index i WHERE i.indrelid = 'chatbot.conversations'::regclass")
    assert db.fetchall(MASTER) == db.fetchall(EXPECTED)     # the new session too (the catch-up reads the parent)
    assert db.scalar("SELECT count(*) FROM chatbot.session_master WHERE session_id = %s", (NEW,)) == 1


NEW = "12345678-1234-1234-1234-123456789abc"


def test_verify_fails_on_an_invalid_index_of_a_partitioned_key_table(db):
    """An index ON ONLY the parent, no partition's index attached to it, made in the migration's last change
    (its transaction): it is INVALID, and verify says so: the apply is not ok."""
    db.execute(SOURCE)

    def invalid_index(step, conn):
        if step.id == last:
            conn.execute("CREATE INDEX conversations_session_only_idx ON ONLY chatbot.conversations (session_id, user_id)")

    target = resolve_target(db.conninfo)
    plan = api.plan(target, Config())
    last = [s.id for s in plan.steps if not s.kind.inspects][-1]
    result = api.apply(target, Config(), rescan=False, step_hook=invalid_index)
    assert not result.ok
    assert result.problems == ["chatbot.conversations: index chatbot.conversations_session_only_idx is INVALID"]


def test_small_partitions_are_backfilled_in_groups_of_at_most_a_hundred(db):
    # a group is one statement's UNION ALL of its partitions, planned in time growing with the square of their
    # number: however small the partitions, at most LEAVES_PER_STATEMENT (100) a group
    db.execute(daily_conversations(250, messages=1500, sessions=300, users=5) + "ANALYZE;")
    plan = api.plan(db.conninfo, Config())
    walks = [s for s in plan.steps if s.id.startswith("backfill:chatbot.conversations")]
    sizes = [s.sql_text().count(" UNION ALL ") + 1 for s in walks]
    assert sum(sizes) == 251 and max(sizes) <= 100, sizes      # was [251]: one statement of 251 branches
    result = api.apply(db.conninfo, Config(), rescan=False)
    assert result.ok, result.problems
    assert db.scalar("SELECT count(*) FROM chatbot.session_master") == 300

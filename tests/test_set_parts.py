"""The set of sessions built in parts, one key range each (scan --jobs): where the ranges are cut, how
the parts' rows add up to the whole set's, and how two tables share one of the set's row counts."""
from __future__ import annotations

import uuid
from types import SimpleNamespace

from yumai_audit.checks.base import OVER_SESSIONS, Sample
from yumai_audit.config import Config
from yumai_audit.scan.key_ranges import even_split, key_ranges
from yumai_audit.scan.pass_sql import MIN_ROW_BYTES, PACK, SetSample, Weeks, _row_slots, merge_set_rows
from yumai_audit.scan.scanner import audit_context

TIME_ORDERED = """
    CREATE SCHEMA chatbot;
    CREATE TABLE chatbot.conversations (id bigserial PRIMARY KEY, session_id uuid, user_id int,
                                        created_at timestamptz DEFAULT now());
    -- time-ordered ids (as uuid v7 makes them): the first 48 bits are a timestamp, so every id of a
    -- month starts with the same digits
    INSERT INTO chatbot.conversations (session_id)
    SELECT ('01890000-' || lpad(to_hex(s), 4, '0') || '-7000-8000-' || lpad(to_hex(s * 7919), 12, '0'))::uuid
    FROM generate_series(1, 4000) s;
"""


def _ranges(db, parts: int):
    with db.connect() as conn:
        ctx = audit_context(conn, Config())
        return key_ranges(conn, ctx, parts)


def _per_range(db, ranges) -> list[int]:
    counts = []
    for low, high in ranges:
        counts.append(db.scalar(
            "SELECT count(*) FROM chatbot.conversations WHERE (%(low)s::uuid IS NULL OR session_id >= %(low)s::uuid) "
            "AND (%(high)s::uuid IS NULL OR session_id < %(high)s::uuid)", {"low": low, "high": high}))
    return counts


def test_ranges_from_statistics_split_time_ordered_ids_evenly(db):
    db.execute(TIME_ORDERED)
    db.execute("ANALYZE chatbot.conversations")
    ranges = _ranges(db, 4)
    assert len(ranges) == 4 and ranges[0][0] is None and ranges[-1][1] is None
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))      # contiguous, so every id is in one
    counts = _per_range(db, ranges)
    assert sum(counts) == 4000
    assert all(700 <= c <= 1300 for c in counts), counts
    # the uuid space cut evenly would have put every one of these ids in the first range
    assert _per_range(db, [(None, even_split(4)[0]), (even_split(4)[0], None)]) == [4000, 0]


def test_ranges_without_statistics_cut_the_uuid_space_evenly(db):
    db.execute(TIME_ORDERED)
    assert _ranges(db, 4) == [(None, "40000000-0000-0000-0000-000000000000"),
                              ("40000000-0000-0000-0000-000000000000", "80000000-0000-0000-0000-000000000000"),
                              ("80000000-0000-0000-0000-000000000000", "c0000000-0000-0000-0000-000000000000"),
                              ("c0000000-0000-0000-0000-000000000000", None)]
    assert _ranges(db, 1) == [(None, None)]


def test_parts_add_up_to_the_whole_set():
    sample = Sample(value=None, predicate=None, distinct=False, over=OVER_SESSIONS)
    columns = ["a measure", SetSample(sample, 3), Weeks(2)]
    ids = [str(uuid.UUID(int=i)) for i in (5, 1, 9, 3, 7)]
    low = [4, 2, [ids[1], ids[3]], [["2026-06-01", 1, 1, 0], ["2026-05-25", 1, 0, 0]]]
    high = [6, 3, [ids[0], ids[4], ids[2]], [["2026-06-08", 2, 0, 0], ["2026-06-01", 0, 1, 1]]]
    assert merge_set_rows(columns, [low, high]) == [
        10, 5, [ids[1], ids[3], ids[0]], [["2026-06-08", 2, 0, 0], ["2026-06-01", 1, 2, 1]]]
    assert merge_set_rows(columns, [low]) == low
    # a part with no sample and no weeks (null in the statement's row)
    assert merge_set_rows(columns, [[0, 0, None, None], [0, 0, None, None]]) == [0, 0, None, None]


def test_two_tables_share_a_row_count_only_when_neither_can_hold_pack_rows_of_one_session():
    def table(name, size):
        return SimpleNamespace(name=name, table=SimpleNamespace(bytes=size))

    small = [table(f"t{i}", 10 ** 9) for i in range(3)]
    big = table("big", PACK * MIN_ROW_BYTES)
    slots = _row_slots([small[0], big, small[1], small[2]])
    assert [[t.name for t in s] for s in slots] == [["t0", "t1"], ["t2"], ["big"]]


def test_an_orphan_in_two_tables_that_share_a_row_count_counts_each_tables_rows(db):
    from yumai_audit.api import scan

    s, o = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-0000000000ff"
    db.execute(f"""
        CREATE SCHEMA chatbot;
        CREATE TABLE chatbot.conversations (id serial PRIMARY KEY, session_id uuid);
        CREATE TABLE chatbot.user_interactions (id serial PRIMARY KEY, session_id uuid);
        CREATE TABLE chatbot.recommendations_log (id serial PRIMARY KEY, session_id uuid);
        INSERT INTO chatbot.conversations (session_id) VALUES ('{s}'), ('{s}');
        INSERT INTO chatbot.user_interactions (session_id) SELECT '{o}' FROM generate_series(1, 3);
        INSERT INTO chatbot.user_interactions (session_id) VALUES ('{s}');
        INSERT INTO chatbot.recommendations_log (session_id) SELECT '{o}' FROM generate_series(1, 5);
    """)
    for jobs in (1, 3):
        found = {f.table: (f.rows, f.keys, f.sample) for f in scan(db.conninfo, Config(), jobs=jobs).findings
                 if f.check == "orphaned_session_ids"}
        assert found == {"chatbot.user_interactions": (3, 1, [o]), "chatbot.recommendations_log": (5, 1, [o])}, jobs


def test_a_not_valid_fk_is_counted_over_the_set_and_as_the_rows_that_block_validate(db):
    # The rows blocking VALIDATE of a NOT VALID FK to the master are counted over the set of sessions
    # (no join of the table with the master in its own pass), in one part or three: the sessions the
    # master lacks, whether the source table has them or not; NULL keys do not block.
    from yumai_audit.api import scan
    from yumai_audit.checks.base import OVER_SESSIONS, OVER_TABLE
    from yumai_audit.checks.unvalidated_fk import UnvalidatedFk

    db.execute("""
        CREATE SCHEMA chatbot;
        CREATE TABLE chatbot.conversations (id serial PRIMARY KEY, session_id uuid);
        CREATE TABLE chatbot.session_master (session_id uuid PRIMARY KEY);
        CREATE TABLE chatbot.user_interactions (id serial PRIMARY KEY, session_id uuid);
        INSERT INTO chatbot.conversations (session_id) SELECT md5('s' || s)::uuid FROM generate_series(1, 300) s;
        INSERT INTO chatbot.session_master SELECT md5('s' || s)::uuid FROM generate_series(1, 150) s;
        -- s1..s300 once or twice, 40 ghosts (in neither table) three times each, 7 NULL keys
        INSERT INTO chatbot.user_interactions (session_id)
            SELECT md5('s' || s)::uuid FROM generate_series(1, 300) s, generate_series(1, 1 + s % 2) r
            UNION ALL SELECT md5('ghost' || g)::uuid FROM generate_series(1, 40) g, generate_series(1, 3) r
            UNION ALL SELECT NULL FROM generate_series(1, 7);
        ALTER TABLE chatbot.user_interactions ADD CONSTRAINT ui_session_fk FOREIGN KEY (session_id)
            REFERENCES chatbot.session_master NOT VALID;
        ANALYZE;
    """)
    blocking = db.scalar("SELECT count(*) FROM chatbot.user_interactions t WHERE session_id IS NOT NULL AND NOT EXISTS "
                         "(SELECT 1 FROM chatbot.session_master m WHERE m.session_id = t.session_id)")
    assert blocking == 225 + 120            # s151..s300 (75 twice, 75 once) and the ghosts' rows
    for jobs in (1, 3):
        found = [(f.table, f.rows) for f in scan(db.conninfo, Config(), jobs=jobs).findings if f.check == "unvalidated_fk"]
        assert found == [("chatbot.user_interactions", blocking)], jobs
    with db.connect() as conn:
        ctx = audit_context(conn, Config())
    check = UnvalidatedFk()
    target = next(k for k in ctx.key_tables if str(k.name) == "chatbot.user_interactions")
    assert [m.over for m in check.measures(ctx, target).values()] == [OVER_SESSIONS]
    assert [m.over for m in check.row_measures(ctx, target).values()] == [OVER_TABLE]     # watch, per new row

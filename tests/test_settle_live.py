"""A key table other than the source has no catch-up before its foreign key (issue 24): its settle, after the
NOT VALID key and before VALIDATE, registers or takes out what one would have. On the server: rows written to
each such table right where that catch-up ran (after its orphans step, or its gate with --bridge none), with
sessions that exist nowhere, end registered or in the quarantine (with the rows their keys cascade to), every
table's rows conserved exactly; and a run resumed after an older version's catch-up, killed in it, converges."""
from __future__ import annotations

import pytest
from psycopg import sql
from test_cascade import quarantined_by_origin, table_rows

from yumai_audit import api
from yumai_audit.config import Config
from yumai_audit.demo import build_demo_database
from yumai_audit.fix.plan import FixOptions

# beside the demo: a child that cascades from user_feedback, a partitioned key table (a NOT VALID key per partition
# before PostgreSQL 18) and one of 18 small partitions (before 18: their keys added validated, in groups, after the
# settle)
SHAPES = """
CREATE TABLE chatbot.feedback_notes (id serial PRIMARY KEY,
    feedback_id bigint NOT NULL REFERENCES chatbot.user_feedback(id) ON DELETE CASCADE, body text);
INSERT INTO chatbot.feedback_notes (feedback_id, body) SELECT id, 'note' FROM chatbot.user_feedback;
CREATE TABLE chatbot.events (id bigint GENERATED ALWAYS AS IDENTITY, session_id uuid, at date NOT NULL,
    PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE chatbot.events_a PARTITION OF chatbot.events FOR VALUES FROM ('2026-01-01') TO ('2026-07-01');
CREATE TABLE chatbot.events_b PARTITION OF chatbot.events FOR VALUES FROM ('2026-07-01') TO ('2027-01-01');
INSERT INTO chatbot.events (session_id, at)
SELECT md5('session-' || (1 + g % 40))::uuid, date '2026-02-01' + (g % 300) FROM generate_series(1, 200) g;
CREATE TABLE chatbot.ticks (id bigint GENERATED ALWAYS AS IDENTITY, session_id uuid, n int NOT NULL,
    PRIMARY KEY (id, n)) PARTITION BY LIST (n);
DO $$ BEGIN FOR i IN 0..17 LOOP
    EXECUTE format('CREATE TABLE chatbot.%I PARTITION OF chatbot.ticks FOR VALUES IN (%s)', 'ticks_' || i, i);
END LOOP; END $$;
INSERT INTO chatbot.ticks (session_id, n) SELECT md5('session-' || (1 + g % 40))::uuid, g % 18
FROM generate_series(1, 90) g;
"""

GHOST = "md5('late-ghost-{}')::uuid"
# what a writer adds to each table right where its catch-up before the key ran: rows of a session that exists
# nowhere (a ghost), a row of a registered session, a row without a session; user_feedback's ghost row with a note
LATE = {
    "user_interactions": ("INSERT INTO chatbot.user_interactions (session_id, user_id, interaction_type, created_at) "
                          f"VALUES ({GHOST.format(1)}, 1, 'late', now()), ({GHOST.format(1)}, 1, 'late', now()), "
                          "(md5('session-1')::uuid, 1, 'late', now()), (NULL, 1, 'late', now())", 2),
    "recommendations_log": ("INSERT INTO chatbot.recommendations_log (session_id, user_id, item_id, created_at) "
                            f"VALUES ({GHOST.format(2)}, 1, 7, now()), (md5('session-2')::uuid, 1, 7, now())", 1),
    "user_feedback": ("WITH f AS (INSERT INTO chatbot.user_feedback (session_id, user_id, rating, created_at) "
                      f"VALUES ({GHOST.format(3)}, 1, 5, now()) RETURNING id) "
                      "INSERT INTO chatbot.feedback_notes (feedback_id, body) SELECT id, 'late note' FROM f", 1),
    "events": (f"INSERT INTO chatbot.events (session_id, at) VALUES ({GHOST.format(4)}, '2026-03-01'), "
               f"({GHOST.format(4)}, '2026-09-01'), (md5('session-4')::uuid, '2026-09-01')", 2),
    "ticks": (f"INSERT INTO chatbot.ticks (session_id, n) VALUES ({GHOST.format(5)}, 3), ({GHOST.format(5)}, 17)", 2),
}
ADDED = {"user_interactions": 4, "recommendations_log": 2, "user_feedback": 1, "events": 3, "ticks": 2}


def _build(db) -> dict[tuple[str, str], int]:
    build_demo_database(db.conninfo)
    db.execute(SHAPES)
    return table_rows(db)


def _expected(before: dict[tuple[str, str], int], written: list[str]) -> dict[tuple[str, str], int]:
    out = dict(before)
    for t in written:
        out[("chatbot", t)] += ADDED[t]
    out[("chatbot", "feedback_notes")] += "user_feedback" in written
    return out


def _after(db) -> dict[tuple[str, str], int]:
    """Every table's rows kept plus those moved to the quarantine from it (the master aside: created by the run)."""
    kept = {k: n for k, n in table_rows(db).items() if k != ("chatbot", "session_master")}
    for origin, n in quarantined_by_origin(db).items():
        kept[origin] = kept.get(origin, 0) + n
    return kept


def _unregistered(db, table: str) -> int:
    return db.scalar(sql.SQL("SELECT count(*) FROM {} t WHERE t.session_id IS NOT NULL AND NOT EXISTS "
                             "(SELECT 1 FROM chatbot.session_master m WHERE m.session_id = t.session_id)").format(
        sql.Identifier("chatbot", table)))


def _ghost_rows(db, schema: str, table: str) -> int:
    return db.scalar(sql.SQL("SELECT count(*) FROM {} WHERE session_id::text LIKE ANY ({})").format(
        sql.Identifier(schema, table), sql.Literal([_ghost_text(db, i) for i in range(1, 6)])))


def _ghost_text(db, i: int) -> str:
    return db.scalar(sql.SQL("SELECT ({})::text").format(sql.SQL(GHOST.format(i))))


@pytest.mark.parametrize("bridge, orphans", [("auto", "quarantine"), ("auto", "register"), ("none", "quarantine")])
def test_rows_written_where_the_catch_up_before_the_key_ran_are_settled(db, bridge, orphans):
    before = _build(db)
    written: list[str] = []

    def late_writes(message: str) -> None:
        # right after the table's orphans step (its gate with --bridge none), outside any of the run's transactions:
        # where an older version ran the table's catch-up, before the key's NOT VALID
        for t, (insert, _ghosts) in LATE.items():
            step = f"{'gate' if bridge == 'none' else 'orphans'}:chatbot.{t}"
            ended = (f"    {step}: done in" in message or message.endswith(f"{step}: already done")
                     or f"{step}: every session written meanwhile" in message)
            if ended and t not in written:
                db.execute(insert)
                written.append(t)

    options = FixOptions(bridge=bridge, orphans=orphans, gate_window=0)
    result = api.apply(db.conninfo, Config(), options=options, rescan=False, progress=late_writes)
    assert result.ok, (result.problems, [o.to_dict() for o in result.outcomes if o.outcome == "failed"])
    assert sorted(written) == sorted(LATE)
    done = {o.step: o for o in result.outcomes if o.outcome == "done"}
    for t, (_insert, ghosts) in LATE.items():
        name = f"chatbot.{t}"
        assert f"catchup:{name}" not in done
        # the settle found the late ghosts, after the key's NOT VALID (its rows: what it moved or registered)
        assert f"settle:{name}" in done, t
        assert _unregistered(db, t) == 0, t
        if orphans == "quarantine":
            assert _ghost_rows(db, "yumai_quarantine", f"chatbot__{t}") == ghosts, t
            assert _ghost_rows(db, "chatbot", t) == 0, t
        else:
            assert _ghost_rows(db, "chatbot", t) == ghosts, t
    if orphans == "quarantine":   # the note of the late feedback went with it
        assert db.scalar("SELECT count(*) FROM yumai_quarantine.chatbot__feedback_notes WHERE body = 'late note'") == 1
    assert db.scalar("SELECT count(*) FROM chatbot.feedback_notes WHERE body = 'late note'") == (orphans == "register")
    # kept + quarantined = before + written, table by table
    assert _after(db) == _expected(before, written)


def test_a_run_killed_in_an_older_versions_catch_up_before_a_key_resumes_and_settles(db):
    """An older version planned `catchup:T` before T's key; a run of it killed there left the journal's entry
    unfinished, and the database as after T's orphans step. The next run (this version) has no such step: it adds
    the key, its settle takes what was written meanwhile, and says which step the earlier run stopped in."""
    before = _build(db)

    class Killed(Exception):
        pass

    def kill_after_orphans(message: str) -> None:
        if "    orphans:chatbot.user_interactions: done in" in message:
            raise Killed

    with pytest.raises(Killed):
        api.apply(db.conninfo, Config(), rescan=False, progress=kill_after_orphans)
    assert db.scalar("SELECT count(*) FROM pg_constraint WHERE conrelid = 'chatbot.user_interactions'::regclass "
                     "AND confrelid = 'chatbot.session_master'::regclass") == 0
    db.execute("INSERT INTO yumai_audit.journal (run_started_at, step) VALUES (now(), 'catchup:chatbot.user_interactions')")
    written: list[str] = []

    def late_writes(message: str) -> None:    # where the older version's catch-up would run again
        if message.endswith("orphans:chatbot.user_interactions: already done") and not written:
            db.execute(LATE["user_interactions"][0])
            written.append("user_interactions")

    result = api.apply(db.conninfo, Config(), rescan=False, progress=late_writes)
    assert result.ok, result.problems
    assert written
    assert result.interrupted == ["catchup:chatbot.user_interactions"]
    assert [o.step for o in result.outcomes if o.outcome == "done" and o.step.endswith("user_interactions")] == [
        "fk-add:chatbot.user_interactions", "settle:chatbot.user_interactions", "fk-validate:chatbot.user_interactions"]
    assert _unregistered(db, "user_interactions") == 0
    assert _ghost_rows(db, "yumai_quarantine", "chatbot__user_interactions") == LATE["user_interactions"][1]
    assert _after(db) == _expected(before, ["user_interactions"])

"""Before PostgreSQL 18, a partitioned source of many small partitions gets its key from the parent's one
statement, which checks their rows itself (auditor/fix/partition_groups.py, `parent_checks_small`): no key step per
group of partitions, and no attachment of hundreds of keys under ACCESS EXCLUSIVE on the master. A session
written past every check before it (a replica-role writer: no trigger fires) fails that statement; the on-demand
catch-up registers it, and the statement runs again. On 18 the parent's key is NOT VALID, then VALIDATE."""
from __future__ import annotations

from fixtures import daily_conversations

from yumai_audit import api
from yumai_audit.config import Config
from yumai_audit.engine.steps import LockMode

DAYS = 600
SNUCK_IN = "00000000-0000-4000-8000-0000000dead1"

SCHEMA = daily_conversations(DAYS, messages=2400, sessions=700, users=50) + """
CREATE TABLE chatbot.user_interactions (id bigserial PRIMARY KEY, session_id uuid, user_id int,
    created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO chatbot.user_interactions (session_id, user_id) SELECT md5('s' || i)::uuid, 1 FROM generate_series(1, 300) i;
ANALYZE;
"""


def test_many_small_partitions_take_their_key_from_the_parent_before_18_and_a_late_session_is_registered(db):
    db.execute(SCHEMA)
    before = db.scalar("SELECT count(*) FROM chatbot.conversations")
    plan = api.plan(db.conninfo, Config())
    parent = plan.step("fk-add:chatbot.conversations")
    per_partition = [s.id for s in plan.steps if s.id.startswith(("fk-add:chatbot.conversations_",
                                                                  "fk-validate:chatbot.conversations_"))]
    pre_18 = plan.server_version_num < 180000
    if pre_18:
        assert per_partition == []      # was: a key step per group of 4 (151 steps), then the parent's
        assert f"checking the rows of its {DAYS + 1} small partitions itself" in parent.description
        assert parent.lock is LockMode.SHARE_ROW_EXCLUSIVE     # nothing to attach: no ACCESS EXCLUSIVE
        assert parent.repaired_by == ("settle:chatbot.conversations",)
        assert "enable_hashjoin = off" in parent.sql_text()
    else:
        assert "NOT VALID" in parent.sql_text() and per_partition == []
        assert plan.step("fk-validate:chatbot.conversations").repaired_by == ("settle:chatbot.conversations",)

    def hook(step, conn):
        # after the source's catch-up, in its transaction: a message of a new session that no trigger sees
        if step.id == "catchup:chatbot.conversations":
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute("INSERT INTO chatbot.conversations VALUES (999999, %s, 7, 'late', '2024-03-03')",
                         (SNUCK_IN,))
            conn.execute("SET LOCAL session_replication_role = origin")

    result = api.apply(db.conninfo, Config(), rescan=False, step_hook=hook)
    assert result.ok, result.problems
    by_step = {o.step: o for o in result.outcomes}
    checker = "fk-add:chatbot.conversations" if pre_18 else "fk-validate:chatbot.conversations"
    assert by_step[checker].outcome == "done" and by_step[checker].tries == 2
    assert by_step["settle:chatbot.conversations"].outcome == "done"
    # the late session registered with its message's time and user; no message lost
    assert db.fetchall("SELECT user_id, session_start::date::text FROM chatbot.session_master WHERE session_id = %s",
                       (SNUCK_IN,)) == [(7, "2024-03-03")]
    assert db.scalar("SELECT count(*) FROM chatbot.conversations") == before + 1
    assert db.scalar("SELECT count(*) FROM chatbot.session_master") == 701
    # every partition holds the validated key (inherited from the parent's)
    assert db.scalar("SELECT count(*) FROM pg_inherits i WHERE i.inhparent = 'chatbot.conversations'::regclass "
                     "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = i.inhrelid AND k.contype = 'f' "
                     "AND k.confrelid = 'chatbot.session_master'::regclass AND k.convalidated)") == 0

"""Partitioned schemas as real deployments make them, on first contact (issue 24): names the plan gives its
indexes already taken by relations of another kind."""
from __future__ import annotations

from click.testing import CliRunner

from yumai_audit.cli import cli

SCHEMA = """
CREATE SCHEMA chatbot;
CREATE TABLE chatbot.users (id int PRIMARY KEY);
INSERT INTO chatbot.users SELECT generate_series(1, 3);
CREATE TABLE chatbot.conversations (id bigint NOT NULL, session_id uuid, user_id int, created_at date NOT NULL,
    PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at);
CREATE TABLE chatbot.conversations_2026 PARTITION OF chatbot.conversations FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE chatbot.conversations_default PARTITION OF chatbot.conversations DEFAULT;
INSERT INTO chatbot.conversations SELECT i, md5('s' || i % 10)::uuid, 1 + i % 3, date '2025-12-30' + i FROM generate_series(1, 40) i;
CREATE TABLE chatbot.ui (id bigint NOT NULL, session_id uuid, day date NOT NULL) PARTITION BY RANGE (day);
CREATE TABLE chatbot.ui_d1 PARTITION OF chatbot.ui FOR VALUES FROM ('2026-01-01') TO ('2026-01-02');
CREATE TABLE chatbot.ui_d2 PARTITION OF chatbot.ui FOR VALUES FROM ('2026-01-02') TO ('2026-01-03');
INSERT INTO chatbot.ui SELECT i, md5('s' || i % 10)::uuid, date '2026-01-01' + i % 2 FROM generate_series(1, 20) i;
-- relations holding the names the plan gives its indexes: the parent's, a partition's built on its own, a
-- partition's built with its small siblings
CREATE VIEW chatbot.conversations_session_id_idx AS SELECT 1 AS x;
CREATE TABLE chatbot.conversations_2026_session_id_idx (x int);
CREATE SEQUENCE chatbot.ui_d2_session_id_idx;
ANALYZE;
"""


def test_a_table_view_or_sequence_holding_an_index_name_of_the_plan_is_refused_before_any_change(db, tmp_path):
    """CREATE INDEX IF NOT EXISTS skipped the view's name silently and the next step stopped midway on
    '"conversations_2026_session_id_idx" is not an index' (exit 3, the master created and filled); the
    preflight's check of the names read indexes only."""
    db.execute(SCHEMA)
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--no-backup",
                                   "--out", str(tmp_path)])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "database error" not in res.output and "is not an index" not in res.output
    for kind, name, table in (("view", "conversations_session_id_idx", "conversations"),
                              ("table", "conversations_2026_session_id_idx", "conversations_2026"),
                              ("sequence", "ui_d2_session_id_idx", "ui_d2")):
        assert (f"{kind} chatbot.{name} has the name the plan gives its index on chatbot.{table} (session_id): "
                "rename it, then run again") in res.output, res.output
    assert db.scalar("SELECT to_regclass('chatbot.session_master')") is None
    assert db.scalar("SELECT count(*) FROM pg_namespace WHERE nspname IN ('yumai_quarantine', 'yumai_audit')") == 0
    assert db.scalar("SELECT count(*) FROM pg_index WHERE indrelid IN ('chatbot.conversations'::regclass, "
                     "'chatbot.ui'::regclass) AND NOT indisprimary") == 0


BASE = """
CREATE SCHEMA chatbot;
CREATE TABLE chatbot.users (id int PRIMARY KEY);
INSERT INTO chatbot.users SELECT generate_series(1, 3);
CREATE TABLE chatbot.conversations (id bigint NOT NULL, session_id uuid, user_id int, created_at date NOT NULL)
    PARTITION BY RANGE (created_at);
CREATE TABLE chatbot.conversations_d1 PARTITION OF chatbot.conversations FOR VALUES FROM ('2026-01-01') TO ('2026-01-02');
CREATE TABLE chatbot.conversations_default PARTITION OF chatbot.conversations DEFAULT;
INSERT INTO chatbot.conversations SELECT i, md5('s' || i % 10)::uuid, 1 + i % 3, date '2025-12-31' + i % 3
    FROM generate_series(1, 30) i;
"""


def refused_before_any_change(db, tmp_path, expected: str) -> None:
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--no-backup",
                                   "--out", str(tmp_path)])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "database error" not in res.output
    assert f"yumai-audit: error: preflight: {expected}" in res.output, res.output
    assert db.scalar("SELECT count(*) FROM pg_namespace WHERE nspname IN ('yumai_quarantine', 'yumai_audit')") == 0
    assert db.scalar("SELECT count(*) FROM pg_index WHERE indrelid = 'chatbot.conversations'::regclass") == 0


def test_an_old_master_renamed_with_its_index_is_refused_where_the_new_master_s_index_would_be_skipped(db, tmp_path):
    """The renamed table keeps its index's name, session_master_user_id_idx; the new master's
    CREATE INDEX IF NOT EXISTS skipped it silently (the apply went through, exit 1, and every delete of a user,
    ON DELETE SET NULL, would read the master whole)."""
    db.execute(BASE + """
CREATE TABLE chatbot.session_master (session_id uuid PRIMARY KEY, user_id int);
CREATE INDEX ON chatbot.session_master (user_id);
ALTER TABLE chatbot.session_master RENAME TO session_master_old;
""")
    refused_before_any_change(db, tmp_path, "index chatbot.session_master_user_id_idx already exists on "
                              "chatbot.session_master_old for something else: rename it, then run again")
    assert db.scalar("SELECT to_regclass('chatbot.session_master')") is None


def test_a_view_named_like_the_master_is_refused_before_any_change(db, tmp_path):
    """CREATE TABLE IF NOT EXISTS skipped the view's name, the steps after it ran on the view: the partitions'
    indexes were built and the user foreign key's step stopped midway (exit 3, 'ALTER action ADD CONSTRAINT
    cannot be performed on relation "session_master"')."""
    db.execute(BASE + "CREATE VIEW chatbot.session_master AS SELECT DISTINCT session_id, user_id "
                      "FROM chatbot.conversations;")
    refused_before_any_change(db, tmp_path, "chatbot.session_master is a view, not a table, and the migration "
                              "creates its master chatbot.session_master there: rename it, or name another master "
                              "with --master, then run again")


def test_a_partitioned_source_with_no_partition_yet_is_migrated(db, tmp_path):
    """A new deployment whose job creates the day's partitions later: the backfill's merge into the master,
    with no partition to walk before it, depended on nothing and ran first of the plan, before the master
    existed ('relation "chatbot.session_master" does not exist', exit 3)."""
    db.execute("""
CREATE SCHEMA chatbot;
CREATE TABLE chatbot.users (id int PRIMARY KEY);
CREATE TABLE chatbot.conversations (id bigint, session_id uuid, user_id int, created_at timestamptz NOT NULL)
    PARTITION BY RANGE (created_at);
CREATE TABLE chatbot.user_interactions (id bigint, session_id uuid, day date NOT NULL) PARTITION BY RANGE (day);
CREATE TABLE chatbot.user_interactions_default PARTITION OF chatbot.user_interactions DEFAULT;
""")
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--no-backup",
                                   "--out", str(tmp_path)])
    assert res.exit_code in (0, 1) and "Migrated" in res.output, res.output
    assert db.fetchall("SELECT conrelid::regclass::text FROM pg_constraint WHERE contype = 'f' "
                       "AND confrelid = 'chatbot.session_master'::regclass AND conparentid = 0 AND convalidated "
                       "ORDER BY 1") == [("chatbot.conversations",), ("chatbot.user_interactions",)]
    # the day's partition the job makes afterwards takes the key
    db.execute("CREATE TABLE chatbot.conversations_d1 PARTITION OF chatbot.conversations "
               "FOR VALUES FROM ('2026-01-01') TO ('2026-01-02')")
    assert db.scalar("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated "
                     "AND conrelid = 'chatbot.conversations_d1'::regclass") == 1


TWO_LEVEL = BASE.replace(
    "CREATE TABLE chatbot.conversations_d1 PARTITION OF chatbot.conversations FOR VALUES FROM ('2026-01-01') TO "
    "('2026-01-02');",
    "CREATE TABLE chatbot.conversations_2026_01 PARTITION OF chatbot.conversations FOR VALUES FROM ('2026-01-01') TO "
    "('2026-02-01') PARTITION BY RANGE (created_at);\n"
    "CREATE TABLE chatbot.conversations_d1 PARTITION OF chatbot.conversations_2026_01 FOR VALUES FROM ('2026-01-01') "
    "TO ('2026-01-02');\n"
    "CREATE TABLE chatbot.conversations_2026_01_rest PARTITION OF chatbot.conversations_2026_01 DEFAULT;") + """
CREATE TABLE chatbot.user_interactions (id bigint, session_id uuid);
INSERT INTO chatbot.user_interactions SELECT i, md5('s' || i)::uuid FROM generate_series(1, 9) i;
"""


def test_a_source_partitioned_by_month_then_day_is_not_left_unbridged_under_migrated_key_tables(db, tmp_path):
    """This version migrates no table with sub-partitions; the source so left out got no bridge, and the apply
    went on with the other key tables (exit 1): afterwards a new conversation's first interaction failed on
    user_interactions' foreign key ('Key (session_id)=... is not present in table "session_master"')."""
    assert "conversations_2026_01 PARTITION OF" in TWO_LEVEL
    db.execute(TWO_LEVEL)
    dry = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--out", str(tmp_path / "dry")])
    assert dry.exit_code == 1 and "note: fix --apply stops before the first change: chatbot.conversations has " \
        "sub-partitions, and the source table is left as it is" in " ".join(dry.output.split()), dry.output
    refused_before_any_change(
        db, tmp_path / "apply", "chatbot.conversations has sub-partitions, and the source table is left as it is by "
        "this version: it gets no bridge, so once the foreign keys of chatbot.user_interactions reference "
        "chatbot.session_master they would refuse every session the application starts in chatbot.conversations "
        "until it is registered in chatbot.session_master; if the application registers its sessions there itself, "
        "run with --bridge none; else leave those tables out (exclude_tables in yumai-audit.toml)")
    assert db.scalar("SELECT to_regclass('chatbot.session_master')") is None


def test_a_text_key_with_a_pattern_or_collated_index_is_refused_before_any_change(db, tmp_path):
    """Django indexes every indexed CharField twice, the second `_like` with varchar_pattern_ops; the type
    change to uuid keeps an index's own operator class and collation, and stopped midway on 'operator class
    "varchar_pattern_ops" does not accept data type uuid' (exit 3, the master created and filled)."""
    db.execute(BASE + """
CREATE TABLE chatbot.user_feedback (id bigint, session_id varchar(64), day date NOT NULL) PARTITION BY RANGE (day);
CREATE TABLE chatbot.user_feedback_d1 PARTITION OF chatbot.user_feedback FOR VALUES FROM ('2026-01-01') TO ('2026-01-02');
CREATE TABLE chatbot.user_feedback_default PARTITION OF chatbot.user_feedback DEFAULT;
INSERT INTO chatbot.user_feedback SELECT i, md5('s' || i % 10)::uuid::text, date '2026-01-01' + i % 2
    FROM generate_series(1, 20) i;
CREATE INDEX user_feedback_session_id_like ON chatbot.user_feedback (session_id varchar_pattern_ops);
CREATE INDEX user_feedback_d1_sid_c ON chatbot.user_feedback_d1 (session_id COLLATE "C");
CREATE INDEX user_feedback_d1_sid ON chatbot.user_feedback_d1 (session_id, id);
""")
    refused_before_any_change(
        db, tmp_path, "chatbot.user_feedback.session_id is indexed by chatbot.user_feedback_session_id_like with "
        "operator class varchar_pattern_ops, which a uuid column cannot have: drop that index, then run again")
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--out", str(tmp_path / "dry")])
    flat = " ".join(res.output.split())
    assert ("chatbot.user_feedback_d1.session_id is indexed by chatbot.user_feedback_d1_sid_c with collation \"C\", "
            "which a uuid column cannot have") in flat, res.output
    # the partitions' copies of the parent's index go with it; an index of the default kind is no concern
    assert flat.count(" is indexed by ") == 2, res.output
    assert db.scalar("SELECT atttypid::regtype::text FROM pg_attribute WHERE attrelid = 'chatbot.user_feedback'"
                     "::regclass AND attname = 'session_id'") == "character varying"


def test_a_source_whose_created_at_is_an_epoch_in_bigint_is_migrated_without_times_from_it(db, tmp_path):
    """A created_at of another type than a timestamp or a date (milliseconds since 1970, partitioned by range
    on it): the backfill's merge stopped on 'operator does not exist: bigint >= timestamp with time zone'
    (its is_active test), exit 3 at step 10 of 25, the master created."""
    db.execute("""
CREATE SCHEMA chatbot;
CREATE TABLE chatbot.users (id int PRIMARY KEY);
INSERT INTO chatbot.users SELECT generate_series(1, 3);
CREATE TABLE chatbot.conversations (id bigint, session_id uuid, user_id int, created_at bigint NOT NULL)
    PARTITION BY RANGE (created_at);
CREATE TABLE chatbot.conversations_a PARTITION OF chatbot.conversations FOR VALUES FROM (0) TO (1767225600000);
CREATE TABLE chatbot.conversations_default PARTITION OF chatbot.conversations DEFAULT;
INSERT INTO chatbot.conversations SELECT i, md5('s' || i % 10)::uuid, 1 + i % 3, 1767000000000 + i * 36000000::bigint
    FROM generate_series(1, 30) i;
CREATE TABLE chatbot.user_interactions (id bigint, session_id uuid, created_at timestamptz);
INSERT INTO chatbot.user_interactions SELECT i, md5('s' || i)::uuid, now() FROM generate_series(1, 9) i;
""")
    dry = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--out", str(tmp_path / "dry")])
    assert ("note: chatbot.conversations.created_at is bigint, not a timestamp or date: the sessions are registered "
            "without times from it") in " ".join(dry.output.split()), dry.output
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--no-backup",
                                   "--out", str(tmp_path / "apply")])
    assert res.exit_code in (0, 1) and "Migrated" in res.output, res.output
    assert db.fetchall("SELECT count(*), count(session_start), count(session_end), count(user_id) "
                       "FROM chatbot.session_master") == [(10, 10, 0, 10)]
    assert db.scalar("SELECT count(*) FROM chatbot.conversations") == 30


def test_a_partitioned_index_made_on_only_the_parent_names_the_partitions_it_lacks(db, tmp_path):
    """CREATE INDEX ... ON ONLY the parent, then each partition's index attached (pg_partman's way): until the
    last one is attached the parent's index is invalid, and the refusal said 'drop it or rebuild it first',
    which REINDEX cannot do: the partitions without an index attached are what is missing."""
    db.execute(BASE + """
CREATE TABLE chatbot.ui (id bigint, session_id uuid, day date NOT NULL) PARTITION BY RANGE (day);
CREATE TABLE chatbot.ui_d1 PARTITION OF chatbot.ui FOR VALUES FROM ('2026-01-01') TO ('2026-01-02');
CREATE TABLE chatbot.ui_d2 PARTITION OF chatbot.ui FOR VALUES FROM ('2026-01-02') TO ('2026-01-03');
CREATE TABLE chatbot.ui_d3 PARTITION OF chatbot.ui FOR VALUES FROM ('2026-01-03') TO ('2026-01-04');
CREATE INDEX ui_sid ON ONLY chatbot.ui (session_id);
CREATE INDEX ui_d2_sid ON chatbot.ui_d2 (session_id);
ALTER INDEX chatbot.ui_sid ATTACH PARTITION chatbot.ui_d2_sid;
CREATE INDEX ui_d3_sid ON chatbot.ui_d3 (session_id);    -- built, not attached
""")
    refused_before_any_change(
        db, tmp_path, "invalid index ui_sid on chatbot.ui: 2 of its partitions have no index attached to it "
        "(chatbot.ui_d1, chatbot.ui_d3); create one on each and attach it (ALTER INDEX chatbot.ui_sid ATTACH "
        "PARTITION ...), or drop the index, then run again")

"""One case (or more) per check, with exact counts, on purpose-built tables in a real PostgreSQL."""
from __future__ import annotations

import pytest
from fixtures import BASE, MIXED_CASE, TEXT_KEYS, A, B, C, M, X, Y, master_with

from yumai_audit.api import scan
from yumai_audit.config import Config
from yumai_audit.model import Status


def run(db, *setup: str, **config):
    for statement in setup:
        db.execute(statement)
    return scan(db.conninfo, Config(**config))


def of(result, check: str) -> dict:
    return {(f.table, f.column): (f.rows, f.keys) for f in result.findings if f.check == check}


def status(result, check: str) -> Status:
    return next(c.status for c in result.checks if c.check == check)


def finding(result, check: str, table: str):
    return next(f for f in result.findings if f.check == check and f.table == table)


# missing_master_rows ------------------------------------------------------------------------------

def test_missing_master_rows_counts_every_session_while_master_is_absent(db):
    result = run(db, BASE)
    assert of(result, "missing_master_rows") == {("chatbot.session_master", "session_id"): (None, 3)}
    assert sorted(finding(result, "missing_master_rows", "chatbot.session_master").sample) == sorted([A, B, C])


def test_missing_master_rows_on_half_done_migration_counts_only_unregistered(db):
    result = run(db, BASE, master_with(A, M))
    assert of(result, "missing_master_rows") == {("chatbot.session_master", "session_id"): (None, 2)}
    assert finding(result, "missing_master_rows", "chatbot.session_master").sample == [B, C]


def test_missing_master_rows_passes_when_all_sessions_registered(db):
    result = run(db, BASE, master_with(A, B, C))
    assert of(result, "missing_master_rows") == {}
    assert status(result, "missing_master_rows") is Status.PASS


# orphaned_session_ids -----------------------------------------------------------------------------

def test_orphans_in_mixed_case_table_of_another_schema(db):
    result = run(db, BASE, master_with(M), MIXED_CASE)
    assert of(result, "orphaned_session_ids") == {("Analytics.SessionEvents", "session_id"): (3, 2)}
    assert finding(result, "orphaned_session_ids", "Analytics.SessionEvents").sample == [X, Y]


def test_orphans_without_master_compare_with_source_only(db):
    # M is registered nowhere while the master does not exist: it is an orphan too.
    result = run(db, BASE, MIXED_CASE)
    assert of(result, "orphaned_session_ids") == {("Analytics.SessionEvents", "session_id"): (4, 3)}


def test_orphans_in_text_key_table_count_any_spelling_and_ignore_malformed(db):
    result = run(db, BASE, TEXT_KEYS)
    # rows 5 (X without hyphens) and 11 (X upper case): one session.
    assert of(result, "orphaned_session_ids") == {("chatbot.recommendations_log", "session_id"): (2, 1)}
    assert finding(result, "orphaned_session_ids", "chatbot.recommendations_log").sample == [X]


def test_orphans_skipped_when_there_is_no_other_key_table(db):
    result = run(db, BASE)
    assert status(result, "orphaned_session_ids") is Status.SKIPPED


# malformed / noncanonical -------------------------------------------------------------------------

def test_malformed_text_keys(db):
    result = run(db, BASE, TEXT_KEYS)
    assert of(result, "malformed_session_ids") == {("chatbot.recommendations_log", "session_id"): (4, None)}
    assert sorted(finding(result, "malformed_session_ids", "chatbot.recommendations_log").sample) == sorted(
        ["", "fake-uuid", "   ", "{" + A])


def test_noncanonical_text_keys(db):
    result = run(db, BASE, TEXT_KEYS)
    # upper (2, 11), padded (3), braces (4), no hyphens (5)
    assert of(result, "noncanonical_session_ids") == {("chatbot.recommendations_log", "session_id"): (5, None)}


def test_text_checks_skipped_without_text_keys(db):
    result = run(db, BASE)
    assert status(result, "malformed_session_ids") is Status.SKIPPED
    assert status(result, "noncanonical_session_ids") is Status.SKIPPED


def test_uuid_pattern_agrees_with_postgres_uuid_input(db):
    """The regex used for `valid` accepts exactly what the server's uuid type accepts."""
    from yumai_audit.checks.predicates import UUID_INPUT_PATTERN

    candidates = [A, A.upper(), A.replace("-", ""), "{" + A + "}", "{" + A, A + "}", A[:-1], A + "0",
                  "a0eebc999c0b4ef8bb6d6bb9bd380a11", "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
                  "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g",
                  "-a0eebc999c0b4ef8bb6d6bb9bd380a11", "a0eebc999c0b4ef8bb6d6bb9bd380a11-",
                  "a0e-ebc999c0b4ef8bb6d6bb9bd380a11", "a0eebc99--9c0b4ef8bb6d6bb9bd380a11", "", "{}"]
    with db.connect(autocommit=True) as conn:
        for text in candidates:
            accepted = True
            try:
                conn.execute("SELECT %s::uuid", (text,))
            except Exception:
                accepted = False
            matches = conn.execute("SELECT %s ~ %s", (text, UUID_INPUT_PATTERN)).fetchone()[0]
            assert matches == accepted, text


# null_session_ids ---------------------------------------------------------------------------------

def test_null_keys_counted_across_partitions_including_default(db):
    result = run(db, BASE, MIXED_CASE, TEXT_KEYS)
    assert of(result, "null_session_ids") == {
        ("chatbot.conversations", "session_id"): (2, None),
        ("Analytics.SessionEvents", "session_id"): (1, None),
        ("chatbot.recommendations_log", "session_id"): (1, None),
    }
    f = finding(result, "null_session_ids", "chatbot.conversations")
    assert f.details["sample_of"] == "primary key"
    assert len(f.sample) == 2 and all(s.startswith("(5,") or s.startswith("(6,") for s in f.sample)


# conflicting_session_users ------------------------------------------------------------------------

def test_conflicting_users_across_tables_and_master(db):
    result = run(db, BASE, master_with(), f"""
        INSERT INTO chatbot.session_master (session_id, user_id) VALUES ('{B}', 3);  -- B: 2 in conversations
        CREATE TABLE chatbot.user_feedback (id int PRIMARY KEY, session_id uuid, user_id int);
        INSERT INTO chatbot.user_feedback VALUES (1, '{A}', 2), (2, '{C}', 3), (3, '{C}', NULL), (4, NULL, 1);
    """)
    # A: 1 (conversations) vs 2 (feedback); B: 2 vs 3 (master); C agrees; NULL users ignored.
    assert of(result, "conflicting_session_users") == {("chatbot.conversations", "user_id"): (None, 2)}
    assert finding(result, "conflicting_session_users", "chatbot.conversations").sample == [A, B]


def test_conflicting_users_passes_on_consistent_data(db):
    result = run(db, BASE)
    assert status(result, "conflicting_session_users") is Status.PASS


# orphaned_user_ids --------------------------------------------------------------------------------

def test_orphaned_user_ids_per_table_including_master(db):
    result = run(db, BASE, master_with(), f"""
        ALTER TABLE chatbot.session_master DROP CONSTRAINT session_master_user_id_fkey;
        INSERT INTO chatbot.session_master (session_id, user_id) VALUES ('{A}', 1), ('{B}', 42);
        UPDATE chatbot.conversations SET user_id = 99 WHERE id IN (3, 4);
    """)
    assert of(result, "orphaned_user_ids") == {
        ("chatbot.conversations", "user_id"): (2, None),
        ("chatbot.session_master", "user_id"): (1, None),
    }
    assert finding(result, "orphaned_user_ids", "chatbot.conversations").sample == ["99"]


def test_orphaned_user_ids_skipped_without_users_table(db):
    result = run(db, BASE, "DROP TABLE chatbot.users")
    assert status(result, "orphaned_user_ids") is Status.SKIPPED


# FK catalog checks --------------------------------------------------------------------------------

def test_unconstrained_fk_names_each_column_and_its_target(db):
    result = run(db, BASE, MIXED_CASE)
    assert sorted((f.table, f.column, f.references) for f in result.findings if f.check == "unconstrained_fk") == [
        ("Analytics.SessionEvents", "session_id", "chatbot.session_master.session_id"),
        ("chatbot.conversations", "session_id", "chatbot.session_master.session_id"),
        ("chatbot.conversations", "user_id", "chatbot.users.id"),
    ]


HALF_DONE = f"""
ALTER TABLE chatbot.conversations ADD FOREIGN KEY (user_id) REFERENCES chatbot.users (id);
CREATE TABLE chatbot.user_interactions (id int PRIMARY KEY, session_id uuid, user_id int REFERENCES chatbot.users(id));
INSERT INTO chatbot.user_interactions VALUES (1, '{A}', 1), (2, '{X}', 1), (3, '{X}', 1), (4, '{M}', 1), (5, NULL, 1);
ALTER TABLE chatbot.user_interactions ADD CONSTRAINT ui_session_fk FOREIGN KEY (session_id)
    REFERENCES chatbot.session_master (session_id) ON DELETE CASCADE NOT VALID;
CREATE INDEX ON chatbot.user_interactions (session_id);
"""


def test_unvalidated_fk_counts_rows_blocking_validation(db):
    result = run(db, BASE, master_with(A, M), HALF_DONE)
    # X twice blocks; A and M are in the master; NULL does not block.
    assert of(result, "unvalidated_fk") == {("chatbot.user_interactions", "session_id"): (2, None)}
    f = finding(result, "unvalidated_fk", "chatbot.user_interactions")
    assert f.details["constraint"] == "ui_session_fk" and f.references == "chatbot.session_master.session_id"
    # the NOT VALID FK counts as a constraint: no unconstrained_fk for that column
    assert ("chatbot.user_interactions", "session_id") not in of(result, "unconstrained_fk")
    assert {i.table: i.fk_state for i in result.inventory}["chatbot.user_interactions"] == "not valid"


def test_key_type_mismatch_names_text_key_columns(db):
    result = run(db, BASE, TEXT_KEYS)
    assert [(f.table, f.details["type"]) for f in result.findings if f.check == "key_type_mismatch"] == [
        ("chatbot.recommendations_log", "character varying(64)")]


def test_unindexed_key_columns_respect_partitioned_parent_index(db):
    result = run(db, BASE, master_with(A, M), HALF_DONE, MIXED_CASE)
    assert sorted(t for t, _ in of(result, "unindexed_fk_columns")) == [
        "Analytics.SessionEvents", "chatbot.conversations"]
    db.execute("CREATE INDEX ON chatbot.conversations (session_id, created_at)")
    again = scan(db.conninfo, Config())
    assert sorted(t for t, _ in of(again, "unindexed_fk_columns")) == ["Analytics.SessionEvents"]


def test_partition_is_never_reported_as_a_table(db):
    result = run(db, BASE, TEXT_KEYS, MIXED_CASE)
    tables = {f.table for f in result.findings} | {i.table for i in result.inventory}
    assert not any("conversations_" in t for t in tables)
    conv = next(i for i in result.inventory if i.table == "chatbot.conversations")
    assert (conv.rows, conv.partitions, conv.default_partition, conv.kind) == (6, 2, True, "partitioned")


def test_samples_never_contain_conversation_text(db):
    result = run(db, BASE, MIXED_CASE, TEXT_KEYS)
    values = " ".join(" ".join(f.sample) for f in result.findings)
    assert "private words" not in values and "hello" not in values and "lost" not in values


@pytest.mark.parametrize("size,expected", [(0, 0), (1, 1)])
def test_sample_size_bounds_samples(db, size, expected):
    result = run(db, BASE, MIXED_CASE, sample_size=size)
    assert len(finding(result, "orphaned_session_ids", "Analytics.SessionEvents").sample) == expected

"""The sample yumai database of `yumai-audit demo`: the guide's pre-migration shape with typical defects.

Deterministic: session i has the id md5('session-' || i)::uuid, so counts are known in advance
(tests assert them). EXPECTED lists what the scan must find.
"""
from __future__ import annotations

import psycopg

from .fix.plan import FixOptions

SESSIONS = 400
USERS = 50

SCHEMA = """
CREATE SCHEMA chatbot;
CREATE TABLE chatbot.users (
    id serial PRIMARY KEY,
    display_name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT '2026-01-01'
);
CREATE TABLE chatbot.conversations (
    id bigserial,
    session_id uuid,
    user_id int,
    role text NOT NULL,
    message text NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE chatbot.conversations_2026_08 PARTITION OF chatbot.conversations
    FOR VALUES FROM ('2026-08-01 00:00+00') TO ('2026-09-01 00:00+00');
CREATE TABLE chatbot.conversations_2026_09 PARTITION OF chatbot.conversations
    FOR VALUES FROM ('2026-09-01 00:00+00') TO ('2026-10-01 00:00+00');
CREATE TABLE chatbot.conversations_2026_10 PARTITION OF chatbot.conversations
    FOR VALUES FROM ('2026-10-01 00:00+00') TO ('2026-11-01 00:00+00');
CREATE TABLE chatbot.conversations_default PARTITION OF chatbot.conversations DEFAULT;
CREATE TABLE chatbot.user_interactions (
    id bigserial PRIMARY KEY,
    session_id uuid,
    user_id int,
    interaction_type text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX user_interactions_session_idx ON chatbot.user_interactions (session_id);
CREATE TABLE chatbot.recommendations_log (
    id bigserial PRIMARY KEY,
    session_id varchar(64),
    user_id int,
    item_id int NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE chatbot.user_feedback (
    id bigserial PRIMARY KEY,
    session_id uuid,
    user_id int,
    rating int NOT NULL,
    comment text,
    created_at timestamptz NOT NULL
);
"""

def traffic(sessions: int, users: int, start: str, every: str, message_every: str) -> str:
    """The demo's traffic: session s starts at `start` + s * `every` and has 5 + s % 11 messages,
    `message_every` apart; every 2nd session has a click, every 3rd a recommendation (text key),
    every 5th a feedback. Also used, scaled up, by benchmarks/cutover.py."""
    return f"""
INSERT INTO chatbot.users (display_name) SELECT 'user ' || g FROM generate_series(1, {users}) g;
INSERT INTO chatbot.conversations (session_id, user_id, role, message, created_at)
SELECT md5('session-' || s)::uuid, 1 + s % {users}, CASE WHEN m % 2 = 0 THEN 'user' ELSE 'assistant' END,
       'message ' || m || ' of session ' || s,
       timestamptz '{start}' + s * interval '{every}' + m * interval '{message_every}'
FROM generate_series(1, {sessions}) s, generate_series(1, 5 + s % 11) m;
INSERT INTO chatbot.user_interactions (session_id, user_id, interaction_type, created_at)
SELECT md5('session-' || s)::uuid, 1 + s % {users}, 'click', timestamptz '{start}' + interval '5 minutes' + s * interval '{every}'
FROM generate_series(1, {sessions}, 2) s;
INSERT INTO chatbot.recommendations_log (session_id, user_id, item_id, created_at)
SELECT md5('session-' || s)::uuid::text, 1 + s % {users}, s % 97, timestamptz '{start}' + interval '6 minutes' + s * interval '{every}'
FROM generate_series(1, {sessions}, 3) s;
INSERT INTO chatbot.user_feedback (session_id, user_id, rating, comment, created_at)
SELECT md5('session-' || s)::uuid, 1 + s % {users}, 1 + s % 5, 'thanks', timestamptz '{start}' + interval '9 minutes' + s * interval '{every}'
FROM generate_series(1, {sessions}, 5) s;
"""


# Session i starts at 2026-07-20 + 4h*i: sessions 1..71 fall before August (default partition).
DATA = traffic(SESSIONS, USERS, "2026-07-20 00:00+00", "4 hours", "1 minute") + f"""
-- defects
-- orphans: 7 interaction rows for 3 sessions that never existed; 2 feedback rows, 1 session; 4 log rows, 2 sessions
INSERT INTO chatbot.user_interactions (session_id, user_id, interaction_type, created_at)
SELECT md5('ghost-' || (g % 3))::uuid, 1, 'click', timestamptz '2026-10-02 12:00+00' FROM generate_series(1, 7) g;
INSERT INTO chatbot.user_feedback (session_id, user_id, rating, created_at)
SELECT md5('ghost-feedback')::uuid, 2, 1, timestamptz '2026-10-03 12:00+00' FROM generate_series(1, 2);
INSERT INTO chatbot.recommendations_log (session_id, user_id, item_id, created_at)
SELECT md5('ghost-log-' || (g % 2))::uuid::text, 3, 1, timestamptz '2026-10-04 12:00+00' FROM generate_series(1, 4) g;
-- malformed text keys: 3 rows
INSERT INTO chatbot.recommendations_log (session_id, user_id, item_id, created_at) VALUES
    ('fake-uuid', 4, 1, '2026-10-05 12:00+00'), ('', 4, 1, '2026-10-05 12:01+00'),
    ('0f1e2d3c-4b5a', 4, 1, '2026-10-05 12:02+00');
-- non-canonical but valid text keys of real sessions: 3 rows (upper case, padded, braces)
INSERT INTO chatbot.recommendations_log (session_id, user_id, item_id, created_at) VALUES
    (upper(md5('session-2')::uuid::text), 1 + 2 % {USERS}, 5, '2026-07-20 08:10+00'),
    ('  ' || md5('session-5')::uuid::text || ' ', 1 + 5 % {USERS}, 5, '2026-07-21 00:10+00'),
    ('{{' || md5('session-8')::uuid::text || '}}', 1 + 8 % {USERS}, 5, '2026-07-21 08:10+00');
-- NULL keys: 4 interactions, 2 messages (in the default partition)
INSERT INTO chatbot.user_interactions (session_id, user_id, interaction_type, created_at)
SELECT NULL, 1, 'scroll', timestamptz '2026-09-15 00:00+00' FROM generate_series(1, 4);
INSERT INTO chatbot.conversations (session_id, user_id, role, message, created_at)
SELECT NULL, 1, 'user', 'lost message', timestamptz '2026-06-01 00:00+00' + g * interval '1 minute' FROM generate_series(1, 2) g;
-- sessions 11 and 13: interactions name another user (with 16 and 21 below: 4 conflicting sessions)
UPDATE chatbot.user_interactions SET user_id = user_id + 1 WHERE session_id IN (md5('session-11')::uuid, md5('session-13')::uuid);
-- users that do not exist: one feedback row, three messages of session 21
UPDATE chatbot.user_feedback SET user_id = 9999 WHERE session_id = md5('session-16')::uuid;
UPDATE chatbot.conversations SET user_id = 777 WHERE session_id = md5('session-21')::uuid AND id IN (
    SELECT id FROM chatbot.conversations WHERE session_id = md5('session-21')::uuid ORDER BY id LIMIT 3);
ANALYZE;
"""

# What `yumai-audit scan` finds on the demo database: (check, table, column) -> (rows, keys).
EXPECTED = {
    ("missing_master_rows", "chatbot.session_master", "session_id"): (None, SESSIONS),
    ("orphaned_session_ids", "chatbot.user_interactions", "session_id"): (7, 3),
    ("orphaned_session_ids", "chatbot.user_feedback", "session_id"): (2, 1),
    ("orphaned_session_ids", "chatbot.recommendations_log", "session_id"): (4, 2),
    ("malformed_session_ids", "chatbot.recommendations_log", "session_id"): (3, None),
    ("noncanonical_session_ids", "chatbot.recommendations_log", "session_id"): (3, None),
    ("null_session_ids", "chatbot.user_interactions", "session_id"): (4, None),
    ("null_session_ids", "chatbot.conversations", "session_id"): (2, None),
    ("conflicting_session_users", "chatbot.conversations", "user_id"): (None, 4),
    ("orphaned_user_ids", "chatbot.user_feedback", "user_id"): (1, None),
    ("orphaned_user_ids", "chatbot.conversations", "user_id"): (3, None),
}


# The demo's decisions after its migration, as a user records them (written to the output folder as
# yumai-audit.toml, and applied to the scans of the demo): the missing users are set NULL by
# `fix --include users --missing-users null` (the originals recorded in yumai_audit.nulled_user_ids),
# and the sessions whose rows name two users keep the user the backfill chose, accepted with a reason.
FIX_OPTIONS = FixOptions(include=("users",), missing_users="null")
DECISIONS = """\
# The demo's decisions (yumai-audit demo); scan the demo database with --config this file.
[[accept]]
check = "conflicting_session_users"
table = "chatbot.conversations"
column = "user_id"
reason = "the master keeps the user of each session's earliest row; the other rows are the app's known clickstream bug, reviewed"
"""


def decisions_config():
    """The demo's configuration: the defaults plus DECISIONS."""
    from .config import Config, _coerce, tomllib  # tomllib, or tomli on Python 3.10

    data = tomllib.loads(DECISIONS)
    return Config(accept=_coerce("accept", data["accept"], "demo decisions"))


def build_demo_database(conninfo: str) -> None:
    """Create the demo schema and data in the (empty) database at `conninfo`."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute(DATA)

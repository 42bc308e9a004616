"""Purpose-built schemas for the check tests. Session ids are readable constants."""
from __future__ import annotations

A = "00000000-0000-4000-8000-00000000000a"
B = "00000000-0000-4000-8000-00000000000b"
C = "00000000-0000-4000-8000-00000000000c"
M = "00000000-0000-4000-8000-0000000000aa"   # registered in the master only
X = "00000000-0000-4000-8000-0000000000f1"   # unknown anywhere
Y = "00000000-0000-4000-8000-0000000000f2"   # unknown anywhere

# Users 1..3; partitioned source with a default partition; sessions A, B (2026 partition), C (default).
BASE = f"""
CREATE SCHEMA chatbot;
CREATE TABLE chatbot.users (id int PRIMARY KEY);
INSERT INTO chatbot.users VALUES (1), (2), (3);
CREATE TABLE chatbot.conversations (
    id bigint NOT NULL, session_id uuid, user_id int, message text NOT NULL, created_at timestamptz NOT NULL,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE chatbot.conversations_2026 PARTITION OF chatbot.conversations
    FOR VALUES FROM ('2026-01-01 00:00+00') TO ('2027-01-01 00:00+00');
CREATE TABLE chatbot.conversations_default PARTITION OF chatbot.conversations DEFAULT;
INSERT INTO chatbot.conversations VALUES
    (1, '{A}', 1, 'hello', '2026-03-01 10:00+00'),
    (2, '{A}', 1, 'private words', '2026-03-01 10:01+00'),
    (3, '{B}', 2, 'hi', '2026-04-01 10:00+00'),
    (4, '{C}', 3, 'old', '2025-06-01 10:00+00'),
    (5, NULL, 1, 'lost', '2025-06-02 10:00+00'),
    (6, NULL, NULL, 'lost too', '2026-05-02 10:00+00');
"""

MASTER = """
CREATE TABLE chatbot.session_master (
    session_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id int REFERENCES chatbot.users(id),
    session_start timestamp DEFAULT CURRENT_TIMESTAMP,
    session_end timestamp,
    is_active boolean DEFAULT true
);
"""


def master_with(*sessions: str) -> str:
    values = ", ".join(f"('{s}')" for s in sessions)
    return MASTER + (f"INSERT INTO chatbot.session_master (session_id) VALUES {values};" if sessions else "")


# A key table in another schema, with quoted mixed-case names.
MIXED_CASE = f"""
CREATE SCHEMA "Analytics";
CREATE TABLE "Analytics"."SessionEvents" ("EventId" int PRIMARY KEY, session_id uuid, "Kind" text);
INSERT INTO "Analytics"."SessionEvents" VALUES
    (1, '{A}', 'open'), (2, '{M}', 'open'), (3, '{X}', 'open'), (4, '{X}', 'close'), (5, '{Y}', 'open'),
    (6, NULL, 'open');
"""

# A text key table: every accepted uuid spelling, malformed values, NULL.
TEXT_KEYS = f"""
CREATE TABLE chatbot.recommendations_log (id int PRIMARY KEY, session_id varchar(64), user_id int, item int);
INSERT INTO chatbot.recommendations_log VALUES
    (1, '{A}', 1, 1),                                   -- canonical
    (2, upper('{B}'), 2, 1),                            -- upper case
    (3, '  {C}  ', 3, 1),                               -- padded
    (4, '{{' || '{A}' || '}}', 1, 1),                   -- braces
    (5, replace('{X}', '-', ''), 1, 1),                 -- no hyphens, unknown session
    (6, '', 1, 1),                                      -- malformed: empty
    (7, 'fake-uuid', 1, 1),                             -- malformed
    (8, '   ', 1, 1),                                   -- malformed: blank
    (9, '{{' || '{A}', 1, 1),                           -- malformed: unmatched brace
    (10, NULL, 1, 1),
    (11, upper('{X}'), 1, 1);                           -- upper case, unknown session
"""


def daily_conversations(days: int, messages: int, sessions: int, users: int) -> str:
    """Users 1..`users`; `chatbot.conversations` with `days` daily partitions from 2024-01-01 and a default one;
    `messages` messages over `sessions` sessions (md5('s' || n)), some past the last day (the default)."""
    return f"""
CREATE SCHEMA chatbot;
CREATE TABLE chatbot.users (id int PRIMARY KEY);
INSERT INTO chatbot.users SELECT generate_series(1, {users});
CREATE TABLE chatbot.conversations (
    id bigint NOT NULL, session_id uuid, user_id int, message text NOT NULL, created_at timestamptz NOT NULL,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
DO $$ BEGIN
  FOR i IN 0..{days - 1} LOOP
    EXECUTE format('CREATE TABLE chatbot.conversations_d%s PARTITION OF chatbot.conversations '
                   'FOR VALUES FROM (%L) TO (%L)', i, '2024-01-01'::date + i, '2024-01-01'::date + i + 1);
  END LOOP;
END $$;
CREATE TABLE chatbot.conversations_default PARTITION OF chatbot.conversations DEFAULT;
INSERT INTO chatbot.conversations
SELECT i, md5('s' || (i % {sessions}))::uuid, 1 + i % {users}, 'm',
       '2024-01-01'::timestamptz + (i % {days + max(days // 20, 10)}) * interval '1 day'
FROM generate_series(1, {messages}) i;
"""

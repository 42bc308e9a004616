"""A small database after cutover, built by SQL as the guide describes: a non-partitioned
chatbot.session_master that every key table references ON DELETE CASCADE (conversations is
range-partitioned, with a default partition). Used by the lifecycle, sessions and backup tests."""

SCHEMA = """
CREATE SCHEMA chatbot;
CREATE TABLE chatbot.users (id serial PRIMARY KEY, display_name text NOT NULL);
INSERT INTO chatbot.users (display_name) SELECT 'user ' || g FROM generate_series(1, 5) g;
CREATE TABLE chatbot.session_master (
    session_id uuid PRIMARY KEY,
    user_id int REFERENCES chatbot.users(id),
    session_start timestamp DEFAULT CURRENT_TIMESTAMP,
    session_end timestamp,
    is_active boolean DEFAULT true
);
CREATE TABLE chatbot.conversations (
    id bigserial,
    session_id uuid NOT NULL REFERENCES chatbot.session_master(session_id) ON DELETE CASCADE,
    user_id int,
    role text NOT NULL DEFAULT 'user',
    message text NOT NULL DEFAULT 'hello',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE chatbot.conversations_2026_08 PARTITION OF chatbot.conversations
    FOR VALUES FROM ('2026-08-01 00:00+00') TO ('2026-09-01 00:00+00');
CREATE TABLE chatbot.conversations_2026_09 PARTITION OF chatbot.conversations
    FOR VALUES FROM ('2026-09-01 00:00+00') TO ('2026-10-01 00:00+00');
CREATE TABLE chatbot.conversations_2026_10 PARTITION OF chatbot.conversations
    FOR VALUES FROM ('2026-10-01 00:00+00') TO ('2026-11-01 00:00+00');
CREATE TABLE chatbot.conversations_default PARTITION OF chatbot.conversations DEFAULT;
CREATE INDEX conversations_session_idx ON chatbot.conversations (session_id);
CREATE TABLE chatbot.user_interactions (
    id bigserial PRIMARY KEY,
    session_id uuid REFERENCES chatbot.session_master(session_id) ON DELETE CASCADE,
    user_id int,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON chatbot.user_interactions (session_id);
CREATE TABLE chatbot.recommendations_log (
    id bigserial PRIMARY KEY,
    session_id uuid REFERENCES chatbot.session_master(session_id) ON DELETE CASCADE,
    user_id int,
    item_id int NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON chatbot.recommendations_log (session_id);
CREATE TABLE chatbot.user_feedback (
    id bigserial PRIMARY KEY,
    session_id uuid REFERENCES chatbot.session_master(session_id) ON DELETE CASCADE,
    user_id int,
    rating int NOT NULL DEFAULT 5,
    comment text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON chatbot.user_feedback (session_id);
"""

from psycopg import sql


def ident(name: str) -> sql.Identifier:
    """schema.table (plain names) as an identifier."""
    return sql.Identifier(*name.split("."))


KEY_TABLES = ("chatbot.conversations", "chatbot.user_interactions", "chatbot.recommendations_log",
              "chatbot.user_feedback")


def sid(n: int) -> str:
    """Session n's id, deterministic."""
    return f"00000000-0000-4000-8000-{n:012d}"


def build(db) -> None:
    db.execute(SCHEMA)


def add_session(db, n: int, *, start_ago: str = "0 minutes", ended_ago: str | None = None, active: bool = True,
                user_id: int = 1) -> None:
    db.execute(
        "INSERT INTO chatbot.session_master (session_id, user_id, session_start, session_end, is_active) "
        "VALUES (%s, %s, CURRENT_TIMESTAMP - %s::interval, CURRENT_TIMESTAMP - %s::interval, %s)",
        (sid(n), user_id, start_ago, ended_ago, active))


def add_rows(db, table: str, n: int, count: int, ago: str = "0 minutes") -> None:
    db.execute(sql.SQL("INSERT INTO {} (session_id, user_id, created_at) "
                       "SELECT %s, 1, now() - %s::interval FROM generate_series(1, %s)").format(ident(table)),
               (sid(n), ago, count))


def counts(db) -> dict[str, int]:
    return {t: db.scalar(sql.SQL("SELECT count(*) FROM {}").format(ident(t))) for t in KEY_TABLES}

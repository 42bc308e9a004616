"""A small database after cutover, built by SQL as the guide describes: a non-partitioned
chatbot.session_master that every key table references ON DELETE CASCADE (conversations is
range-partitioned, with a default partition). Used by the lifecycle, sessions and backup tests."""

from psycopg import sql

from yumai_audit.demo import SCHEMA as DEMO_SCHEMA

# The demo's (pre-migration) schema, migrated: the master, uuid keys, indexes, cascading foreign keys,
# and defaults so that the tests insert only the columns they care about.
SCHEMA = DEMO_SCHEMA + """
INSERT INTO chatbot.users (display_name) SELECT 'user ' || g FROM generate_series(1, 5) g;
CREATE TABLE chatbot.session_master (
    session_id uuid PRIMARY KEY,
    user_id int REFERENCES chatbot.users(id),
    session_start timestamp DEFAULT CURRENT_TIMESTAMP,
    session_end timestamp,
    is_active boolean DEFAULT true
);
ALTER TABLE chatbot.recommendations_log ALTER COLUMN session_id TYPE uuid USING session_id::uuid;
ALTER TABLE chatbot.conversations ALTER COLUMN role SET DEFAULT 'user', ALTER COLUMN message SET DEFAULT 'hello';
ALTER TABLE chatbot.user_interactions ALTER COLUMN interaction_type SET DEFAULT 'click';
ALTER TABLE chatbot.recommendations_log ALTER COLUMN item_id SET DEFAULT 1;
ALTER TABLE chatbot.user_feedback ALTER COLUMN rating SET DEFAULT 5;
CREATE INDEX conversations_session_idx ON chatbot.conversations (session_id);
CREATE INDEX ON chatbot.recommendations_log (session_id);
CREATE INDEX ON chatbot.user_feedback (session_id);
ALTER TABLE chatbot.conversations ALTER COLUMN created_at SET DEFAULT now(),
    ADD FOREIGN KEY (session_id) REFERENCES chatbot.session_master (session_id) ON DELETE CASCADE;
ALTER TABLE chatbot.user_interactions ALTER COLUMN created_at SET DEFAULT now(),
    ADD FOREIGN KEY (session_id) REFERENCES chatbot.session_master (session_id) ON DELETE CASCADE;
ALTER TABLE chatbot.recommendations_log ALTER COLUMN created_at SET DEFAULT now(),
    ADD FOREIGN KEY (session_id) REFERENCES chatbot.session_master (session_id) ON DELETE CASCADE;
ALTER TABLE chatbot.user_feedback ALTER COLUMN created_at SET DEFAULT now(),
    ADD FOREIGN KEY (session_id) REFERENCES chatbot.session_master (session_id) ON DELETE CASCADE;
"""
KEY_TABLES = ("chatbot.conversations", "chatbot.user_interactions", "chatbot.recommendations_log",
              "chatbot.user_feedback")


def ident(name: str) -> sql.Identifier:
    """schema.table (plain names) as an identifier."""
    return sql.Identifier(*name.split("."))


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

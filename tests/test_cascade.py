"""Deletes and the foreign keys of other tables (auditor/fk_reach.py, auditor/fix/cascade.py): the graph (no database), and
`fix --apply` on a hostile schema: cascading and SET NULL children two levels deep, a self-reference,
a partitioned child, a RESTRICT child, a clean text key, two 63-byte names sharing a 54-byte prefix.
For every table of the database: rows kept + rows quarantined = rows before, exactly."""
from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from yumai_audit import api
from yumai_audit.catalog import QualifiedName, Reference
from yumai_audit.config import Config
from yumai_audit.demo import build_demo_database
from yumai_audit.engine.executor import PreflightFailed
from yumai_audit.engine.sqlscript import render_script
from yumai_audit.engine.steps import LockMode
from yumai_audit.fix.cascade import quarantine_name
from yumai_audit.fk_reach import CascadeError, graph


def q(name: str) -> QualifiedName:
    return QualifiedName("s", name)


def ref(name, child, parent, action="c", child_root=None, parent_root=None, cols=("pid",), ref_cols=("id",)):
    return Reference(name, q(child), q(child_root or child), ("id", "pid"), cols, q(parent), q(parent_root or parent),
                     ref_cols, action)


def test_graph_follows_children_of_children_partitions_and_self_references_and_ends():
    refs = [ref("a_b", "b", "a"), ref("b_c", "c", "b"), ref("c_c", "c", "c"), ref("a_n", "n", "a", "n"),
            ref("c_r", "r", "c", "r"), ref("p1_x", "x", "a_p1", parent_root="a"),   # a key to a partition of a
            ref("z_y", "y", "z")]                                                   # elsewhere: not reached
    g = graph(refs, q("a"), ("id",))
    assert g.deleted[0] == q("a") and set(g.deleted) == {q("a"), q("b"), q("c"), q("x")}
    assert g.deleted.index(q("b")) < g.deleted.index(q("c"))
    assert [e.ref.name for e in g.changes] == ["a_n"] and [e.ref.name for e in g.blocks] == ["c_r"]
    assert set(g.reached) == {q("b"), q("c"), q("x"), q("n")}
    assert q("c") in g.locked and q("a") not in g.locked


def test_a_cascade_cycle_through_two_tables_is_refused_a_self_reference_is_not():
    with pytest.raises(CascadeError, match="cycle"):
        graph([ref("a_b", "b", "a"), ref("b_a", "a", "b")], q("a"), ("id",))
    g = graph([ref("a_a", "a", "a")], q("a"), ("id",))
    assert g.deleted == (q("a"),) and g.locked == (q("a"),)


def test_quarantine_names_are_unique_and_fit():
    base = "t" * 54
    one, two = quarantine_name(q(base + "_alpha_xx")), quarantine_name(q(base + "_beta_xxx"))
    assert one != two and len(one.name.encode()) <= 63 and len(two.name.encode()) <= 63
    assert quarantine_name(QualifiedName("a", "b__c")) != quarantine_name(QualifiedName("a__b", "c"))
    assert quarantine_name(QualifiedName("chatbot", "user_feedback")).name == "chatbot__user_feedback"


LONG = "session_events_with_a_rather_long_name_sharing_prefix_"   # 54 bytes
assert len(LONG) == 54
LONG_A, LONG_B = LONG + "alpha_xxx", LONG + "beta_xxxx"            # 63 bytes each

HOSTILE = f"""
CREATE TABLE chatbot.feedback_attachments (id serial PRIMARY KEY,
    feedback_id bigint NOT NULL REFERENCES chatbot.user_feedback(id) ON DELETE CASCADE,
    parent_id int REFERENCES chatbot.feedback_attachments(id) ON DELETE CASCADE);
INSERT INTO chatbot.feedback_attachments (feedback_id) SELECT id FROM chatbot.user_feedback ORDER BY id;
-- an attachment of a kept feedback row whose parent attachment belongs to an orphan: the self-reference cascades
INSERT INTO chatbot.feedback_attachments (feedback_id, parent_id)
SELECT 5, a.id FROM chatbot.feedback_attachments a JOIN chatbot.user_feedback f ON f.id = a.feedback_id
WHERE f.session_id = md5('ghost-feedback')::uuid ORDER BY a.id LIMIT 1;
CREATE TABLE chatbot.attachment_notes (id serial PRIMARY KEY,
    attachment_id int REFERENCES chatbot.feedback_attachments(id) ON DELETE CASCADE, body text);
INSERT INTO chatbot.attachment_notes (attachment_id, body) SELECT id, 'note' FROM chatbot.feedback_attachments;
CREATE SCHEMA side;
CREATE TABLE side.note_refs (id serial PRIMARY KEY, note_id int REFERENCES chatbot.attachment_notes(id) ON DELETE SET NULL);
INSERT INTO side.note_refs (note_id) SELECT id FROM chatbot.attachment_notes;
CREATE TABLE chatbot.feedback_links (id serial PRIMARY KEY,
    feedback_id bigint DEFAULT 1 REFERENCES chatbot.user_feedback(id) ON DELETE SET DEFAULT, url text);
INSERT INTO chatbot.feedback_links (feedback_id, url) SELECT id, 'u' FROM chatbot.user_feedback;
CREATE TABLE chatbot.feedback_events (id bigint, feedback_id bigint REFERENCES chatbot.user_feedback(id) ON DELETE CASCADE,
    at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE chatbot.feedback_events_a PARTITION OF chatbot.feedback_events FOR VALUES FROM ('2026-01-01') TO ('2026-07-01');
CREATE TABLE chatbot.feedback_events_b PARTITION OF chatbot.feedback_events FOR VALUES FROM ('2026-07-01') TO ('2027-01-01');
INSERT INTO chatbot.feedback_events SELECT id, id, CASE WHEN id % 2 = 0 THEN date '2026-02-01' ELSE date '2026-08-01' END
FROM chatbot.user_feedback;
CREATE TABLE chatbot.rec_clicks (id serial PRIMARY KEY, rec_id bigint REFERENCES chatbot.recommendations_log(id) ON DELETE CASCADE);
INSERT INTO chatbot.rec_clicks (rec_id) SELECT id FROM chatbot.recommendations_log;
CREATE TABLE chatbot.clean_text (id serial PRIMARY KEY, session_id varchar(36));
INSERT INTO chatbot.clean_text (session_id) SELECT md5('session-' || (1 + g % 400))::uuid::text FROM generate_series(1, 500) g;
CREATE TABLE chatbot."{LONG_A}" (id serial PRIMARY KEY, session_id uuid, score int);
INSERT INTO chatbot."{LONG_A}" (session_id, score) VALUES (md5('session-1')::uuid, 1), (md5('ghost-a')::uuid, 2),
    (md5('ghost-a')::uuid, 3);
CREATE TABLE chatbot."{LONG_B}" (id serial PRIMARY KEY, session_id uuid, label text);
INSERT INTO chatbot."{LONG_B}" (session_id, label) VALUES (md5('ghost-b')::uuid, 'x'), (md5('ghost-b')::uuid, 'y'),
    (md5('ghost-c')::uuid, 'z');
"""

HELD = """
SELECT n.nspname || '.' || c.relname, l.mode
FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE l.pid = %s AND l.granted AND l.locktype = 'relation' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'yumai_audit', 'yumai_quarantine')
"""
TOOL_SCHEMAS = ("yumai_quarantine", "yumai_audit")
TABLES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'
"""


def table_rows(db) -> dict[tuple[str, str], int]:
    return {(s, t): db.scalar(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(s, t)))
            for s, t in db.fetchall(TABLES) if s not in TOOL_SCHEMAS}


def quarantined_by_origin(db) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for s, t in db.fetchall(TABLES):
        if s != "yumai_quarantine":
            continue
        for origin_s, origin_t, n in db.fetchall(sql.SQL(
                "SELECT yumai_origin_schema, yumai_origin_table, count(*) FROM {} GROUP BY 1, 2").format(
                sql.Identifier(s, t))):
            out[(origin_s, origin_t)] = out.get((origin_s, origin_t), 0) + n
    return out


def test_apply_on_hostile_shapes_keeps_or_quarantines_every_row_of_every_table(db, tmp_path):
    build_demo_database(db.conninfo)
    db.execute(HOSTILE)
    before = table_rows(db)
    plan = api.plan(db.conninfo, Config())
    notes = "\n".join(plan.notes)
    feedback = next(n for n in plan.notes if n.startswith("the quarantine of orphaned rows of chatbot.user_feedback: "
                                                          "2 row(s) of chatbot.user_feedback, and through foreign keys"))
    for part in ("3 row(s) of chatbot.feedback_attachments (ON DELETE CASCADE)",
                 "2 row(s) of chatbot.feedback_events (ON DELETE CASCADE)",
                 "3 row(s) of chatbot.attachment_notes (ON DELETE CASCADE)",
                 "2 row(s) of chatbot.feedback_links changed", "3 row(s) of side.note_refs changed"):
        assert part in feedback, feedback
    assert ("the quarantine of malformed rows of chatbot.recommendations_log: 3 row(s) of chatbot.recommendations_log, "
            "and through foreign keys 3 row(s) of chatbot.rec_clicks (ON DELETE CASCADE)") in notes, notes
    assert ("the quarantine of orphaned rows of chatbot.recommendations_log: 4 row(s) of chatbot.recommendations_log, "
            "and through foreign keys 4 row(s) of chatbot.rec_clicks (ON DELETE CASCADE)") in notes, notes

    script = render_script(plan)      # `fix --sql` shows the same statements
    assert "LOCK TABLE " in script and '"yumai_quarantine"."chatbot__feedback_attachments"' in script
    seen, locks = [], {}
    watcher = psycopg.connect(db.conninfo, autocommit=True)

    def hook(step, conn):   # inside each step's transaction: what it holds, against what it declares
        if step.transactional and step.id.split(":")[0] in ("malformed", "orphans", "catchup", "settle"):
            held = {}
            for table, mode in watcher.execute(HELD, (conn.info.backend_pid,)).fetchall():
                held[table] = max(held.get(table, LockMode.NONE), LockMode.from_pg_locks(mode))
            locks[step.id] = (max(held.get(t, LockMode.NONE) for t in step.tables), max(held.values()), held)

    try:
        result = api.apply(db.conninfo, Config(), out_dir=tmp_path, before_first_change=seen.append, step_hook=hook)
    finally:
        watcher.close()
    assert result.ok, (result.problems, [o.to_dict() for o in result.outcomes if o.outcome == "failed"])
    widened = result.plan.step("orphans:chatbot.user_feedback")
    assert widened.lock is LockMode.SHARE and "chatbot.feedback_attachments" in widened.tables
    assert locks["orphans:chatbot.user_feedback"][2]["chatbot.attachment_notes"] is LockMode.SHARE
    for step_id, (on_declared, strongest, _held) in locks.items():
        declared = result.plan.step(step_id).lock
        assert on_declared == declared and strongest <= declared, step_id
    # the backup covers every table a delete can reach
    assert {"chatbot.feedback_attachments", "chatbot.attachment_notes", "side.note_refs", "chatbot.feedback_links",
            "chatbot.feedback_events", "chatbot.rec_clicks"} <= set(seen[0])

    after, moved = table_rows(db), quarantined_by_origin(db)
    assert set(after) == set(before) | {("chatbot", "session_master")}
    assert set(moved) <= set(before)
    for table, n in before.items():
        assert after[table] + moved.get(table, 0) == n, table
    assert moved == {("chatbot", "user_interactions"): 7, ("chatbot", "user_feedback"): 2,
                     ("chatbot", "recommendations_log"): 7, ("chatbot", "feedback_attachments"): 3,
                     ("chatbot", "attachment_notes"): 3, ("chatbot", "feedback_events"): 2,
                     ("chatbot", "rec_clicks"): 7, ("chatbot", LONG_A): 2, ("chatbot", LONG_B): 3}
    # SET NULL / SET DEFAULT children stay, changed; their values before are kept
    assert db.scalar("SELECT count(*) FROM side.note_refs WHERE note_id IS NULL") == 3
    assert db.scalar("SELECT count(*) FROM chatbot.feedback_links WHERE feedback_id = 1") == 3
    changed = db.fetchall("SELECT origin_schema, origin_table, count(*), count(DISTINCT original) "
                          "FROM yumai_audit.changed_rows GROUP BY 1, 2 ORDER BY 1, 2")
    assert changed == [("chatbot", "feedback_links", 2, 2), ("side", "note_refs", 3, 3)]
    assert db.scalar("SELECT count(*) FROM yumai_audit.changed_rows c JOIN chatbot.feedback_links l "
                     "ON l.id = (c.original->>'id')::int WHERE (c.original->>'feedback_id')::int IN "
                     "(SELECT id FROM yumai_quarantine.chatbot__user_feedback)") == 2
    # the quarantined children keep their own columns and say why
    assert db.fetchall("SELECT DISTINCT yumai_reason FROM yumai_quarantine.chatbot__feedback_attachments") == [
        ("orphaned: feedback_attachments_feedback_id_fkey ON DELETE CASCADE from chatbot.user_feedback; "
         "orphaned: feedback_attachments_parent_id_fkey ON DELETE CASCADE from chatbot.feedback_attachments",)]
    # the clean text key was converted; the two long names went to two quarantine tables
    assert db.scalar("SELECT data_type FROM information_schema.columns WHERE table_name = 'clean_text' "
                     "AND column_name = 'session_id'") == "uuid"
    long_q = {quarantine_name(QualifiedName("chatbot", n)).name for n in (LONG_A, LONG_B)}
    assert len(long_q) == 2
    cols = {n: {c for (c,) in db.fetchall("SELECT column_name FROM information_schema.columns "
                                          "WHERE table_schema = 'yumai_quarantine' AND table_name = %s", (n,))}
            for n in long_q}
    assert sorted("score" in c for c in cols.values()) == [False, True]
    again = api.apply(db.conninfo, Config(), rescan=False)
    assert again.nothing_to_do and again.ok


FAILING_KEYS = [   # (ON DELETE action, the key column's constraint, how the refusal ends)
    ("RESTRICT", "", r" \(foreign key feedback_reviews_feedback_id_fkey ON DELETE RESTRICT\)"),
    ("NO ACTION", "", r" \(foreign key feedback_reviews_feedback_id_fkey ON DELETE NO ACTION\)"),
    # SET NULL, or SET DEFAULT with no default, on a NOT NULL column: PostgreSQL's change would fail too
    ("SET NULL", " NOT NULL", r", and foreign key feedback_reviews_feedback_id_fkey ON DELETE SET NULL would set "
                              r"its NOT NULL column feedback_id NULL"),
    ("SET DEFAULT", " NOT NULL", r", and foreign key feedback_reviews_feedback_id_fkey ON DELETE SET DEFAULT would "
                                 r"set its NOT NULL column feedback_id NULL"),
]


@pytest.mark.parametrize("action, constraint, refusal", FAILING_KEYS)
def test_a_child_that_would_fail_the_delete_is_refused_by_the_preflight_before_any_change(db, action, constraint,
                                                                                           refusal):
    build_demo_database(db.conninfo)
    db.execute(f"CREATE TABLE chatbot.feedback_reviews (id serial PRIMARY KEY, feedback_id bigint{constraint} "
               f"REFERENCES chatbot.user_feedback(id) ON DELETE {action})")
    db.execute("INSERT INTO chatbot.feedback_reviews (feedback_id) SELECT id FROM chatbot.user_feedback "
               "WHERE session_id = md5('ghost-feedback')::uuid OR id = 1")
    before = table_rows(db)
    with pytest.raises(PreflightFailed, match=r"2 row\(s\) of chatbot.feedback_reviews reference rows that the "
                       r"quarantine of orphaned rows of chatbot.user_feedback would delete" + refusal):
        api.apply(db.conninfo, Config(), rescan=False)
    assert table_rows(db) == before
    assert db.fetchall("SELECT nspname FROM pg_namespace WHERE nspname IN ('yumai_audit', 'yumai_quarantine')") == []


def test_set_null_of_some_columns_or_to_a_default_is_not_refused(db):
    """Only the columns the key sets count: a NOT NULL column left alone by `SET NULL (col)` (PostgreSQL
    15 and later), or a NOT NULL column with a default under SET DEFAULT, lets the delete through."""
    build_demo_database(db.conninfo)
    db.execute("INSERT INTO chatbot.user_feedback (id, session_id, user_id, rating, created_at) "
               "VALUES (0, NULL, 1, 1, now())")
    db.execute("CREATE TABLE chatbot.feedback_defaults (id serial PRIMARY KEY, feedback_id bigint NOT NULL DEFAULT 0 "
               "REFERENCES chatbot.user_feedback(id) ON DELETE SET DEFAULT)")
    db.execute("INSERT INTO chatbot.feedback_defaults (feedback_id) SELECT id FROM chatbot.user_feedback "
               "WHERE session_id = md5('ghost-feedback')::uuid")
    if db.server.version_num >= 150000:
        db.execute("ALTER TABLE chatbot.user_feedback ADD UNIQUE (id, user_id)")
        db.execute("CREATE TABLE chatbot.feedback_pairs (id serial PRIMARY KEY, feedback_id bigint, user_id int NOT NULL, "
                   "FOREIGN KEY (feedback_id, user_id) REFERENCES chatbot.user_feedback (id, user_id) "
                   "ON DELETE SET NULL (feedback_id))")
        db.execute("INSERT INTO chatbot.feedback_pairs (feedback_id, user_id) SELECT id, user_id FROM chatbot.user_feedback "
                   "WHERE session_id = md5('ghost-feedback')::uuid")
    result = api.apply(db.conninfo, Config(), rescan=False)
    assert result.ok
    assert db.scalar("SELECT count(*) FROM chatbot.feedback_defaults WHERE feedback_id = 0") == 2
    if db.server.version_num >= 150000:
        assert db.fetchall("SELECT count(*), count(feedback_id), count(user_id) FROM chatbot.feedback_pairs") == [(2, 0, 2)]


def test_a_column_named_like_the_quarantines_own_is_refused_before_any_change(db):
    build_demo_database(db.conninfo)
    db.execute("ALTER TABLE chatbot.user_feedback ADD COLUMN yumai_reason text")
    before = table_rows(db)
    with pytest.raises(PreflightFailed, match="chatbot.user_feedback has a column yumai_reason"):
        api.apply(db.conninfo, Config(), rescan=False)
    assert table_rows(db) == before


def test_a_clean_text_key_converts_and_a_rerun_changes_nothing(db):
    """No malformed value: the malformed step has nothing to do, and to-uuid must not need its table."""
    build_demo_database(db.conninfo)
    db.execute("CREATE TABLE chatbot.clean_text (id serial PRIMARY KEY, session_id varchar(36)); "
               "INSERT INTO chatbot.clean_text (session_id) SELECT md5('session-' || (1 + g % 400))::uuid::text "
               "FROM generate_series(1, 500) g")
    plan = api.plan(db.conninfo, Config())
    assert plan.done["malformed:chatbot.clean_text"] is True and plan.done["to-uuid:chatbot.clean_text"] is False
    result = api.apply(db.conninfo, Config(), rescan=False)
    assert result.ok, [o.to_dict() for o in result.outcomes if o.outcome == "failed"]
    assert db.scalar("SELECT count(*) FROM chatbot.clean_text WHERE session_id IS NOT NULL") == 500
    assert db.scalar("SELECT atttypid::regtype::text FROM pg_attribute WHERE attrelid = 'chatbot.clean_text'::regclass "
                     "AND attname = 'session_id'") == "uuid"
    assert api.apply(db.conninfo, Config(), rescan=False).nothing_to_do


def test_orphans_delete_counts_the_cascade_and_backs_up_what_it_reaches(db):
    build_demo_database(db.conninfo)
    db.execute("CREATE TABLE chatbot.feedback_attachments (id serial PRIMARY KEY, feedback_id bigint NOT NULL "
               "REFERENCES chatbot.user_feedback(id) ON DELETE CASCADE); INSERT INTO chatbot.feedback_attachments "
               "(feedback_id) SELECT id FROM chatbot.user_feedback")
    plan = api.plan(db.conninfo, Config(), options=api.FixOptions(orphans="delete", yes_delete=True))
    assert ("the delete of orphaned rows of chatbot.user_feedback: 2 row(s) of chatbot.user_feedback, and through "
            "foreign keys 2 row(s) of chatbot.feedback_attachments (ON DELETE CASCADE)") in plan.notes
    assert "chatbot.feedback_attachments" in plan.step("orphans:chatbot.user_feedback").changes
    seen = []
    result = api.apply(db.conninfo, Config(), rescan=False, before_first_change=seen.append, options=api.FixOptions(orphans="delete", yes_delete=True))
    assert result.ok and "chatbot.feedback_attachments" in seen[0]
    assert db.scalar("SELECT count(*) FROM chatbot.feedback_attachments") == 80


def test_row_security_on_a_reached_table_is_refused_before_any_change(db):
    """PostgreSQL's cascade ignores row security, the quarantine's statements do not: rows hidden from the
    role would be deleted without a copy. The preflight refuses."""
    import uuid as _uuid

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    build_demo_database(db.conninfo)
    db.execute("CREATE TABLE chatbot.feedback_attachments (id serial PRIMARY KEY, feedback_id bigint NOT NULL "
               "REFERENCES chatbot.user_feedback(id) ON DELETE CASCADE); INSERT INTO chatbot.feedback_attachments "
               "(feedback_id) SELECT id FROM chatbot.user_feedback; "
               "ALTER TABLE chatbot.feedback_attachments ENABLE ROW LEVEL SECURITY")
    role = f"yumai_t_owner_{_uuid.uuid4().hex[:8]}"
    r = sql.Identifier(role)
    db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(r))
    try:
        db.execute(sql.SQL("GRANT CREATE ON DATABASE {d} TO {r}; GRANT USAGE, CREATE ON SCHEMA chatbot TO {r}; "
                           "GRANT SELECT, DELETE ON chatbot.feedback_attachments TO {r}").format(
            d=sql.Identifier(db.name), r=r))
        for t in ("users", "conversations", "user_interactions", "recommendations_log", "user_feedback"):
            db.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier("chatbot", t), r))
        params = conninfo_to_dict(db.conninfo)
        params["user"] = role
        params.pop("password", None)
        before = table_rows(db)
        with pytest.raises(PreflightFailed, match="chatbot.feedback_attachments has row level security"):
            api.apply(make_conninfo(**params), Config(), rescan=False)
        assert table_rows(db) == before
    finally:
        db.execute(sql.SQL("REASSIGN OWNED BY {r} TO CURRENT_USER; DROP OWNED BY {r}; DROP ROLE {r}").format(r=r))


def test_a_quarantine_table_of_an_earlier_version_gets_the_origin_columns(db):
    """(Not a defect of main: its own shape.) A run that an earlier version started goes on."""
    build_demo_database(db.conninfo)
    db.execute("CREATE SCHEMA yumai_quarantine; CREATE TABLE yumai_quarantine.chatbot__user_feedback "
               "(LIKE chatbot.user_feedback, yumai_reason text NOT NULL, yumai_quarantined_at timestamptz NOT NULL "
               "DEFAULT now()); INSERT INTO yumai_quarantine.chatbot__user_feedback (id, rating, created_at, yumai_reason) "
               "VALUES (999, 1, now(), 'orphaned')")
    assert api.apply(db.conninfo, Config(), rescan=False).ok
    assert db.fetchall("SELECT yumai_origin_schema, yumai_origin_table, count(*) FROM "
                       "yumai_quarantine.chatbot__user_feedback GROUP BY 1, 2") == [("chatbot", "user_feedback", 3)]

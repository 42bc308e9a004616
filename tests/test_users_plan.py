"""`fix --include users` (auditor/fix/users_plan.py) on a real server: a partitioned source, mixed-case names in
another schema, rows naming missing users in each `--missing-users` mode; nothing lost, undo records exact."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from yumai_audit import api
from yumai_audit.catalog import QualifiedName
from yumai_audit.cli import cli
from yumai_audit.config import Config
from yumai_audit.fix.planner import FixOptions, PlanError

APP = "Yumai App"
CONFIG = Config(key_column="SessionId", user_column="UserId", master=QualifiedName(APP, "SessionMaster"),
                source=QualifiedName(APP, "Chats"), users=QualifiedName(APP, "Users"), schemas=(APP,))
TABLES = ("Chats", "Clicks", "Views")

SETUP = """
CREATE SCHEMA "Yumai App";
CREATE TABLE "Yumai App"."Users" (id int PRIMARY KEY);
INSERT INTO "Yumai App"."Users" SELECT g FROM generate_series(1, 5) g;
CREATE TABLE "Yumai App"."Chats" ("Id" bigint, "SessionId" uuid, "UserId" int, created_at timestamptz NOT NULL,
    PRIMARY KEY ("Id", created_at)) PARTITION BY RANGE (created_at);
CREATE TABLE "Yumai App"."Chats 2026" PARTITION OF "Yumai App"."Chats"
    FOR VALUES FROM ('2026-01-01 00:00+00') TO ('2027-01-01 00:00+00');
CREATE TABLE "Yumai App"."Chats default" PARTITION OF "Yumai App"."Chats" DEFAULT;
-- 6 sessions, 2 rows each; session s, row r: user 1 + s % 5
INSERT INTO "Yumai App"."Chats" SELECT s * 10 + r, md5('s' || s)::uuid, 1 + s % 5,
    CASE WHEN s <= 4 THEN timestamptz '2026-03-01 00:00+00' ELSE timestamptz '2025-06-01 00:00+00' END + r * interval '1 minute'
FROM generate_series(1, 6) s, generate_series(1, 2) r;
-- missing users: user 77 in two rows of the 2026 partition and one of the default, a NULL user (not missing)
UPDATE "Yumai App"."Chats" SET "UserId" = 77 WHERE "Id" IN (11, 21, 51);
UPDATE "Yumai App"."Chats" SET "UserId" = NULL WHERE "Id" = 32;
CREATE TABLE "Yumai App"."Clicks" ("Id" serial PRIMARY KEY, "SessionId" uuid, "UserId" int);
INSERT INTO "Yumai App"."Clicks" ("SessionId", "UserId") SELECT md5('s' || s)::uuid, 1 + s % 5 FROM generate_series(1, 6) s;
UPDATE "Yumai App"."Clicks" SET "UserId" = 99 WHERE "Id" IN (2, 4);
-- every user exists: gets its FK whatever the mode
CREATE TABLE "Yumai App"."Views" ("Id" serial PRIMARY KEY, "SessionId" uuid, "UserId" int);
INSERT INTO "Yumai App"."Views" ("SessionId", "UserId") SELECT md5('s' || s)::uuid, 1 + s % 5 FROM generate_series(1, 6) s;
"""
MISSING = {"Chats": 3, "Clicks": 2, "Views": 0}


def rows(db, table: str) -> list[tuple]:
    return db.fetchall(f'SELECT "Id", "SessionId"::text, "UserId" FROM "Yumai App"."{table}" ORDER BY "Id"')


def user_fks(db, table: str) -> list[tuple]:
    """(validated, on delete) of the FKs from table."UserId" to "Users"(id), the parent's own only."""
    return db.fetchall(
        "SELECT k.convalidated, k.confdeltype FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE k.contype = 'f' AND n.nspname = %s AND c.relname = %s "
        "AND k.confrelid = '\"Yumai App\".\"Users\"'::regclass AND k.conparentid = 0", (APP, table))


def missing_count(db, table: str) -> int:
    return db.scalar(f'SELECT count(*) FROM "Yumai App"."{table}" t WHERE "UserId" IS NOT NULL '
                     'AND NOT EXISTS (SELECT 1 FROM "Yumai App"."Users" u WHERE u.id = t."UserId")')


def user_steps(plan) -> list[str]:
    return [s.id for s in plan.steps if s.id.endswith(".UserId") or "users:" in s.id or s.id == "verify-users"]


def test_missing_users_mode_is_checked():
    assert FixOptions(include="users").missing_users == "keep"
    with pytest.raises(PlanError, match="--missing-users must be one of keep, null, quarantine"):
        FixOptions(include="users", missing_users="drop")


def test_keep_adds_no_fk_where_users_are_missing_and_notes_the_count(db):
    db.execute(SETUP)
    before = {t: rows(db, t) for t in TABLES}
    plan = api.plan(db.conninfo, CONFIG, options=api.FixOptions(include="users"))
    notes = [n for n in plan.notes if "--missing-users keep" in n]
    assert len(notes) == 2
    assert any(n.startswith('user foreign key Yumai App.Chats.UserId -> Yumai App.Users.id: 3 rows') for n in notes)
    assert any(n.startswith('user foreign key Yumai App.Clicks.UserId -> Yumai App.Users.id: 2 rows') for n in notes)
    assert all("Chats" not in s and "Clicks" not in s for s in user_steps(plan))
    assert "fk-add:Yumai App.Views.UserId" in user_steps(plan)
    result = api.apply(db.conninfo, CONFIG, options=api.FixOptions(include="users"))
    assert result.ok, (result.problems, [o.to_dict() for o in result.outcomes])
    assert {t: rows(db, t) for t in TABLES} == before        # nothing changed in the rows
    assert user_fks(db, "Views") == [(True, "a")] and user_fks(db, "Chats") == [] and user_fks(db, "Clicks") == []
    # the migration is done; the missing users are debt no step repairs
    v = result.verdict
    assert v.state.value == "migrated-bridge-on" and v.exit_code() == 1   # the bridge is still on
    left = sorted((j.finding.check, j.finding.table) for j in v.undecided)
    assert left == [("conflicting_session_users", "Yumai App.Chats"), ("orphaned_user_ids", "Yumai App.Chats"), ("orphaned_user_ids", "Yumai App.Clicks"),
                    ("unconstrained_fk", "Yumai App.Chats"), ("unconstrained_fk", "Yumai App.Clicks")]


@pytest.mark.parametrize("mode", ["null", "quarantine"])
def test_missing_users_repaired_then_the_fk_everywhere_and_a_second_run_changes_nothing(db, mode):
    db.execute(SETUP)
    before = {t: rows(db, t) for t in TABLES}
    plan = api.plan(db.conninfo, CONFIG, options=api.FixOptions(include="users", missing_users=mode))
    steps = user_steps(plan)
    assert "missing-users:Yumai App.Chats" in steps and "missing-users:Yumai App.Clicks" in steps
    assert "missing-users:Yumai App.Views" not in steps
    if plan.server_version_num < 180000:   # per partition, then the parent attaches them
        assert {"fk-add:Yumai App.Chats 2026.UserId", "fk-validate:Yumai App.Chats 2026.UserId",
                "fk-add:Yumai App.Chats default.UserId", "fk-add:Yumai App.Chats.UserId"} <= set(steps)
    else:
        assert {"fk-add:Yumai App.Chats.UserId", "fk-validate:Yumai App.Chats.UserId"} <= set(steps)
    assert all(s.lock.label != "ACCESS EXCLUSIVE" or s.tables == ("Yumai App.Users",)
               for s in plan.steps if s.id in steps)
    result = api.apply(db.conninfo, CONFIG, options=api.FixOptions(include="users", missing_users=mode))
    assert result.ok, (result.problems, [o.to_dict() for o in result.outcomes])
    for t in TABLES:
        assert user_fks(db, t) == [(True, "a")], t          # validated, ON DELETE NO ACTION
        assert missing_count(db, t) == 0
    after = {t: rows(db, t) for t in TABLES}
    assert after["Views"] == before["Views"]
    if mode == "null":
        for t in TABLES:   # rows kept: the same rows, the missing users NULL
            assert [r[:2] for r in after[t]] == [r[:2] for r in before[t]]
        records = db.fetchall('SELECT table_schema, table_name, primary_key, user_column, old_user_id '
                              'FROM yumai_audit.nulled_user_ids')
        chats = db.fetchall("SELECT \"Id\", to_jsonb(created_at) #>> '{}' FROM \"Yumai App\".\"Chats\" "
                            'WHERE "Id" IN (11, 21, 51)')
        assert sorted((s, t, json.dumps(pk, sort_keys=True), c, u) for s, t, pk, c, u in records) == sorted(
            [(APP, "Chats", json.dumps({"Id": i, "created_at": created}, sort_keys=True), "UserId", "77")
             for i, created in chats] + [(APP, "Clicks", json.dumps({"Id": i}), "UserId", "99") for i in (2, 4)])
        # the undo: drop the FK, put every recorded user back; the tables are exactly as before
        for t in ("Chats", "Clicks"):
            name = db.scalar("SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'f' "
                             "AND confrelid = '\"Yumai App\".\"Users\"'::regclass AND conparentid = 0",
                             (f'"Yumai App"."{t}"',))
            db.execute(f'ALTER TABLE "Yumai App"."{t}" DROP CONSTRAINT "{name}"')
        db.execute('UPDATE "Yumai App"."Chats" t SET "UserId" = r.old_user_id::int FROM yumai_audit.nulled_user_ids r '
                   "WHERE r.table_name = 'Chats' AND r.primary_key = jsonb_build_object('Id', t.\"Id\", 'created_at', t.created_at)")
        db.execute('UPDATE "Yumai App"."Clicks" t SET "UserId" = r.old_user_id::int FROM yumai_audit.nulled_user_ids r '
                   "WHERE r.table_name = 'Clicks' AND r.primary_key = jsonb_build_object('Id', t.\"Id\")")
        assert {t: rows(db, t) for t in TABLES} == before
        return
    # quarantine: kept + quarantined = before, and exactly the rows naming missing users moved
    for t in ("Chats", "Clicks"):
        moved = db.fetchall(f'SELECT "Id", "SessionId"::text, "UserId", yumai_reason FROM yumai_quarantine."{APP}__{t}" '
                            'ORDER BY "Id"')
        assert len(after[t]) + len(moved) == len(before[t])
        assert [m[:3] for m in moved] == [r for r in before[t] if r[2] in (77, 99)]
        assert {m[3] for m in moved} == {"missing user"}
    again = api.plan(db.conninfo, CONFIG, options=api.FixOptions(include="users", missing_users=mode))
    assert user_steps(again) == [] and again.pending == []
    assert api.apply(db.conninfo, CONFIG, rescan=False, options=api.FixOptions(include="users", missing_users=mode)).nothing_to_do


def test_cli_include_users_null_ends_migrated_and_clean(db, tmp_path):
    db.execute(SETUP)
    db.execute('UPDATE "Yumai App"."Clicks" SET "UserId" = 1 + "Id" % 5')   # no conflicting users either
    db.execute('UPDATE "Yumai App"."Chats" SET "UserId" = 1 + ("Id" / 10) % 5 WHERE "Id" IN (11, 21, 32)')
    # session 5 names the missing user 77 in every row that has a user: missing, but not conflicting
    db.execute('UPDATE "Yumai App"."Chats" SET "UserId" = 77 WHERE "Id" = 52; '
               'UPDATE "Yumai App"."Clicks" SET "UserId" = 77 WHERE "Id" = 5; '
               'UPDATE "Yumai App"."Views" SET "UserId" = NULL WHERE "Id" = 5')
    toml = tmp_path / "app.toml"
    toml.write_text('key_column = "SessionId"\nuser_column = "UserId"\nmaster = \'"Yumai App".SessionMaster\'\n'
                    'source = \'"Yumai App".Chats\'\nusers = \'"Yumai App".Users\'\nschemas = ["Yumai App"]\n')
    base = ["--dsn", db.conninfo, "--config", str(toml)]
    dry = CliRunner().invoke(cli, ["fix", *base, "--include", "users", "--missing-users", "null"])
    assert dry.exit_code == 0, dry.output       # every error finding is repaired by a planned step
    assert dry.output.startswith("Verdict: Ready once fix runs.")
    res = CliRunner().invoke(cli, ["fix", *base, "--include", "users", "--missing-users", "null", "--apply", "--yes",
                                   "--no-backup", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert "Verdict: Migrated, bridge on." in res.output and "No error finding is left." in res.output
    assert CliRunner().invoke(cli, ["bridge", "remove", "--dsn", db.conninfo]).exit_code == 0   # no --config there
    scan = CliRunner().invoke(cli, ["scan", *base, "--out", str(tmp_path / "scan")])
    assert scan.exit_code == 0, scan.output
    assert scan.output.startswith("Verdict: Migrated and clean.")
    assert db.scalar("SELECT count(*) FROM yumai_audit.nulled_user_ids") == 3    # the rows naming user 77

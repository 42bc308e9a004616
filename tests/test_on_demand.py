"""The catch-up between a foreign key's NOT VALID and its VALIDATE runs on demand (Step.on_demand): the online
run lets the VALIDATE find what it would repair, instead of reading the whole table first by the catch-up's guard
(an anti-join as long as the VALIDATE itself, once per key table). A row that got past the NOT VALID key makes
the VALIDATE fail: the catch-up then runs and the VALIDATE again. The script runs the catch-up in its turn."""
from __future__ import annotations

from test_cascade import quarantined_by_origin, table_rows

from yumai_audit import api
from yumai_audit.cli import plan_summary
from yumai_audit.config import Config
from yumai_audit.demo import build_demo_database
from yumai_audit.engine import executor
from yumai_audit.engine.sqlscript import render_script

SNUCK_IN = "00000000-0000-4000-8000-00000000beef"    # a session no table knows


def settles(plan) -> list[str]:
    return [s.id for s in plan.steps if s.id.startswith("settle:")]


def test_a_clean_apply_runs_no_catch_up_between_not_valid_and_validate(db):
    build_demo_database(db.conninfo)
    plan = api.plan(db.conninfo, Config())
    ids = settles(plan)
    assert len(ids) == 4, ids       # conversations and the three key tables
    order = [s.id for s in plan.steps]
    needers: dict[str, list[str]] = {}
    for step_id in ids:
        table = step_id.split(":", 1)[1]
        assert plan.step(step_id).on_demand
        # the steps that check the key's rows: the VALIDATE; before 18 on the partitioned source, each
        # partition's VALIDATE, each group's keys added validated and the parent's key
        needers[step_id] = [s.id for s in plan.steps if step_id in s.repaired_by]
        assert needers[step_id], step_id
        assert all(s.startswith(("fk-validate:", "fk-add:")) and s.split(":", 1)[1].startswith(table)
                   and order.index(s) > order.index(step_id) for s in needers[step_id]), needers
        if table != "chatbot.conversations" or plan.server_version_num >= 180000:
            assert needers[step_id] == [f"fk-validate:{table}"]
    shown = plan_summary(plan)       # the dry run says so under each
    assert shown.count("on demand: runs only if a later step finds a row violating the foreign key") == len(ids)
    script = render_script(plan)     # the script runs it in its turn, and says so
    assert script.count("-- on demand: --apply runs it only when a later step (its VALIDATE)") == len(ids)

    result = api.apply(db.conninfo, Config(), rescan=False)
    assert result.ok, result.problems
    outcome = {o.step: o.outcome for o in result.outcomes}
    assert {outcome[i] for i in ids} == {"unneeded"}, outcome
    assert {outcome[n] for i in ids for n in needers[i]} == {"done"}
    assert db.scalar("SELECT count(*) FROM yumai_audit.journal WHERE step LIKE 'settle:%'") == 0


def test_a_row_past_the_not_valid_key_fails_the_validate_which_runs_the_catch_up_then_again(db):
    build_demo_database(db.conninfo)
    before = table_rows(db)
    quarantined_before = quarantined_by_origin(db)
    table = "chatbot.user_interactions"

    def hook(step, conn):
        # inside the NOT VALID key's transaction: a row its trigger does not check (as a logical-replication
        # apply worker writes, session_replication_role = replica), a session nobody has
        if step.id == f"fk-add:{table}":
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute("INSERT INTO chatbot.user_interactions (session_id, user_id, interaction_type, created_at) "
                         "VALUES (%s, 1, 'click', now())", (SNUCK_IN,))
            conn.execute("SET LOCAL session_replication_role = origin")

    result = api.apply(db.conninfo, Config(), rescan=False, step_hook=hook)
    assert result.ok, result.problems
    by_step = {o.step: o for o in result.outcomes}
    settle, validate = by_step[f"settle:{table}"], by_step[f"fk-validate:{table}"]
    assert settle.outcome == "done" and validate.outcome == "done"
    assert validate.tries == 2      # failed once on the row, then passed
    steps = [o.step for o in result.outcomes]
    assert steps.index(f"settle:{table}") < steps.index(f"fk-validate:{table}")
    # the row went to the quarantine as an orphan; every table's rows kept + quarantined = before (+1 written)
    assert db.scalar("SELECT count(*) FROM yumai_quarantine.chatbot__user_interactions WHERE session_id = %s "
                     "AND yumai_reason = 'orphaned'", (SNUCK_IN,)) == 1
    after, moved = table_rows(db), quarantined_by_origin(db)
    for key, n in before.items():
        written = 1 if key == ("chatbot", "user_interactions") else 0
        assert after[key] + moved.get(key, 0) - quarantined_before.get(key, 0) == n + written, key
    assert db.scalar("SELECT convalidated FROM pg_constraint WHERE conrelid = 'chatbot.user_interactions'::regclass "
                     "AND contype = 'f' AND confrelid = 'chatbot.session_master'::regclass") is True
    journal = db.fetchall("SELECT outcome, count(*) FROM yumai_audit.journal WHERE step = %s GROUP BY 1",
                          (f"settle:{table}",))
    assert journal == [("done", 1)]


class Stop(Exception):
    pass


def test_a_resumed_run_reads_the_guards_up_front_but_no_on_demand_ones(db, monkeypatch):
    """A plan made earlier (not fresh) makes the executor read the guards of its steps up front, to find what is
    pending; an on-demand step does not count there, so its guard (an anti-join of its whole table) is not read."""
    build_demo_database(db.conninfo)

    def stop(step, conn):
        if step.id == "fk-add:chatbot.user_interactions":
            raise Stop()

    try:
        api.apply(db.conninfo, Config(), rescan=False, step_hook=stop)
    except Stop:
        pass
    plan = api.plan(db.conninfo, Config())          # the run cut off: some keys still to add
    ids = settles(plan)
    assert "settle:chatbot.user_interactions" in ids
    read: list[str] = []
    real = executor.evaluate_guard

    def counting(conn, step, settings=None):
        read.append(step.id)
        return real(conn, step, settings)

    monkeypatch.setattr(executor, "evaluate_guard", counting)
    result = api.apply(db.conninfo, Config(), rescan=False, plan=plan)
    assert result.ok, result.problems
    assert not set(read) & set(ids), read
    assert set(read) == {s.id for s in plan.steps if executor.runs(s)}     # every other step's, once
    assert len(read) == len(set(read))

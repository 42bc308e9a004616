"""What the steps of fix/ops/ declare for the preflight (`Needs`), gathered from a whole plan (no database)."""
from __future__ import annotations

from test_planner import plan_for

from yumai_audit.catalog import QualifiedName
from yumai_audit.fix.ops import Declared, Needs, declaring, gathered, needs_of
from yumai_audit.operations import Operation


def test_each_removal_is_gathered_once_in_the_order_of_its_first_step():
    plan = plan_for()
    carrying = [s for s in plan.steps if needs_of(s).removals]
    # the orphans' move is run by the orphans step, both catch-ups and nothing else of this plan
    assert {s.operation for s in carrying} == {Operation.QUARANTINE_MALFORMED, Operation.CONVERT_TO_UUID,
                                               Operation.ORPHANS, Operation.CATCHUP}
    assert [r.label for r in plan.removals] == [
        "the quarantine of malformed rows of chatbot.recommendations_log",
        "the quarantine of orphaned rows of chatbot.user_interactions",
        "the quarantine of orphaned rows of chatbot.recommendations_log"]
    assert sum(len(needs_of(s).removals) for s in carrying) > len(plan.removals)


def test_index_names_come_from_the_steps_that_build_them():
    plan = plan_for()
    claims = gathered(plan.steps).claims
    assert {c.index for c in claims} == {"conversations_session_id_idx", "conversations_2026_09_session_id_idx",
                                         "conversations_default_session_id_idx", "recommendations_log_session_id_idx",
                                         "session_master_user_id_idx"}   # the new master's, on user_id
    assert all(c.index in plan.step("preflight").sql_text() for c in claims)


def test_declaring_adds_to_what_a_step_declares():
    step = next(s for s in plan_for().steps if s.operation is Operation.ORPHANS)
    more = declaring(step, Needs(altered=(QualifiedName("chatbot", "user_interactions"),)))
    assert isinstance(more, Declared) and more.needs.removals == needs_of(step).removals != ()
    assert more.needs.altered == (QualifiedName("chatbot", "user_interactions"),) and needs_of(step).altered == ()
    assert more == step    # what a step needs is not part of what it is


def _text(q) -> str:
    return q.as_string(None) if hasattr(q, "as_string") else str(q)


def test_orphans_after_the_source_fk_look_their_sessions_up_in_the_master_alone():
    """Every other table's orphans, catch-ups and gates run after the source's foreign key to the master, so
    every source session is in the master then: their guards and statements do not probe the source."""
    plan = plan_for()
    order = [s.id for s in plan.steps]
    source_fk = [i for i, s in enumerate(plan.steps) if s.target == "chatbot.conversations"
                 and s.operation in (Operation.FK_ADD, Operation.FK_VALIDATE)]
    taking = [s for s in plan.steps if s.operation in (Operation.ORPHANS, Operation.CATCHUP, Operation.GATE)
              and s.target != "chatbot.conversations"]
    assert source_fk and {s.operation for s in taking} >= {Operation.ORPHANS, Operation.CATCHUP}
    for s in taking:
        assert order.index(s.id) > max(source_fk), s.id
    for s in [s for s in taking if s.operation is Operation.ORPHANS]:
        text = " ".join(_text(q) for q in (s.guard, *s.statements))
        assert '"session_master"' in text and '"conversations"' not in text, s.id

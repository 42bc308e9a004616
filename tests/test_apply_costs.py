"""The apply's fixed costs without trading a guarantee: its session runs without JIT, and a step's
journal end is committed by the step's own transaction (done and journaled at once)."""
from __future__ import annotations

from yumai_audit import api
from yumai_audit.config import Config
from yumai_audit.demo import build_demo_database


def test_every_step_runs_without_jit_and_journals_its_end_in_its_own_transaction(db):
    build_demo_database(db.conninfo)
    jit: dict[str, str] = {}

    def hook(step, conn):
        jit[step.id] = conn.execute("SHOW jit").fetchone()[0]

    result = api.apply(db.conninfo, Config(), rescan=False, step_hook=hook)
    assert result.ok
    assert len(jit) >= 20
    assert set(jit.values()) == {"off"}, jit
    # the master's table was created by step "master": the same transaction wrote the step's journal end (its
    # primary key's pg_class row: the table's own is rewritten when its user FK is added, after the backfill)
    created = db.scalar("SELECT xmin::text FROM pg_class WHERE oid = 'chatbot.session_master_pkey'::regclass")
    ended = db.fetchall("SELECT xmin::text, outcome FROM yumai_audit.journal WHERE step = 'master'")
    assert ended == [(created, "done")]
    # and every transactional step that ran has exactly one entry, done
    transactional = {s.id for s in result.plan.steps if s.transactional and not s.kind.inspects}
    rows = db.fetchall("SELECT step, outcome, count(*) FROM yumai_audit.journal GROUP BY step, outcome")
    done = {step for step, outcome, n in rows if outcome == "done" and n == 1}
    assert transactional & set(result.changed) <= done

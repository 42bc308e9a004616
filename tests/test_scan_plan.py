"""The scan command's repair plan is made from the catalog the scan read (api.scan's `on_context`), not from a
catalog read again on a connection of its own: the same plan, one connection fewer."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from yumai_audit import api
from yumai_audit.cli import cli
from yumai_audit.config import Config
from yumai_audit.demo import build_demo_database


def half_migrated(db):
    db.execute("""
        CREATE TABLE chatbot.session_master (session_id uuid PRIMARY KEY, user_id int);
        INSERT INTO chatbot.session_master SELECT md5('session-' || s)::uuid, 1 + s % 50 FROM generate_series(1, 100) s;
        ALTER TABLE chatbot.user_interactions ADD CONSTRAINT ui_session_fk FOREIGN KEY (session_id)
            REFERENCES chatbot.session_master NOT VALID;
    """)


@pytest.mark.parametrize("state", ["pre-migration", "half-done"])
def test_the_plan_from_the_scans_context_is_the_plan_read_on_its_own(db, state):
    build_demo_database(db.conninfo)
    if state == "half-done":
        half_migrated(db)
    contexts: list = []
    api.scan(db.conninfo, Config(), on_context=contexts.append)
    assert len(contexts) == 1
    from_scan = api.repair_plan(db.conninfo, Config(), context=contexts[0])
    assert from_scan is not None and from_scan["steps"]
    assert from_scan == api.repair_plan(db.conninfo, Config())


def test_the_scan_command_opens_no_connection_for_its_plan(db, tmp_path, monkeypatch):
    # --jobs 2: the scan's connection and one more in its snapshot; the plan needs none of its own
    build_demo_database(db.conninfo)
    opened: list = []
    connect = api.connect

    def counting(*args, **kw):
        opened.append(args)
        return connect(*args, **kw)

    monkeypatch.setattr(api, "connect", counting)
    result = CliRunner().invoke(cli, ["scan", "--dsn", db.conninfo, "--out", str(tmp_path), "--jobs", "2"])
    assert result.exit_code == 1, result.output
    assert len(opened) == 2
    monkeypatch.setattr(api, "connect", connect)
    data = json.loads((tmp_path / "findings.json").read_text())
    plan = api.repair_plan(db.conninfo, Config())
    verdict = api.judge_scan(api.read_baseline(tmp_path / "findings.json"), Config(), plan)
    assert data["verdict"] == json.loads(json.dumps(verdict.to_dict()))


@pytest.mark.parametrize("state", ["pre-migration", "half-done"])
def test_the_scan_command_renders_its_plan_section_beside_the_scan_once(db, tmp_path, monkeypatch, state):
    # The report's plan section depends on the plan only: the CLI renders it on its plan thread while the scan's
    # statements run, not on the main thread after the scan, and write_scan does not render it again. The report
    # is the one rendered in one go from the same scan, plan and verdict.
    import threading

    from yumai_audit.reports import render

    build_demo_database(db.conninfo)
    if state == "half-done":
        half_migrated(db)
    calls: list[str] = []
    section = render.plan_section

    def recording(plan, **kw):
        calls.append(threading.current_thread().name)
        return section(plan, **kw)

    monkeypatch.setattr(render, "plan_section", recording)
    results: list = []
    scan = api.scan
    monkeypatch.setattr(api, "scan", lambda *a, **kw: results.append(scan(*a, **kw)) or results[-1])
    out = CliRunner().invoke(cli, ["scan", "--dsn", db.conninfo, "--out", str(tmp_path), "--jobs", "2"])
    assert out.exit_code == 1, out.output
    assert len(calls) == 1 and calls[0].startswith("yumai-audit-plan"), calls
    monkeypatch.setattr(render, "plan_section", section)
    plan = api.repair_plan(db.conninfo, Config())
    assert plan is not None and plan["steps"]
    result = results[0]
    verdict = api.judge_scan(result, Config(), plan)
    whole = render.render_html(result, repair_plan=plan, verdict=verdict)
    assert (tmp_path / "report.html").read_bytes() == whole.encode("utf-8")
    assert '<section id="plan"' in whole and str(render.plan_section(plan, proposed=True)) in whole

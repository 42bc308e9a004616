"""How `fix --apply` behaves towards a database in use (what the cutover benchmark measures)."""
from __future__ import annotations

from yumai_audit import api
from yumai_audit.config import Config
from yumai_audit.demo import build_demo_database
from yumai_audit.scan import scanner


def test_the_scans_around_apply_run_without_parallel_workers(db, monkeypatch):
    build_demo_database(db.conninfo)
    seen = []
    real_context = scanner.audit_context

    def spy(conn, config):
        # inside the scan's transaction (the setting is local to it: nothing is left on the session)
        seen.append(conn.execute("SHOW max_parallel_workers_per_gather").fetchone()[0])
        return real_context(conn, config)

    monkeypatch.setattr(scanner, "audit_context", spy)
    result = api.apply(db.conninfo, Config())
    assert result.ok, result.problems
    assert seen == ["0", "0"]                      # the scan before and the rescan after
    assert result.before.findings and result.after is not None
    seen.clear()
    api.scan(db.conninfo, Config())                # a plain scan keeps the server's setting
    assert seen == [db.scalar("SELECT current_setting('max_parallel_workers_per_gather')")]
    assert seen != ["0"]


def test_the_plan_of_apply_counts_without_parallel_workers(db, monkeypatch):
    """The apply's plan is made beside the scan before and the application's writers: its counts (what the
    removals take, the cascades) run without parallel workers, which took the cores the writers needed. A
    dry run keeps the server's setting."""
    from yumai_audit.fix import cascade, shares

    build_demo_database(db.conninfo)
    seen: list[tuple[str, str | None]] = []
    for module in (cascade, shares):
        real = module.measure

        def spy(conn, *args, _real=real, _name=module.__name__, **kw):
            settings = args[-1] if args and isinstance(args[-1], dict) else kw.get("settings")
            seen.append((_name.rsplit(".", 1)[-1], (settings or {}).get("max_parallel_workers_per_gather")))
            return _real(conn, *args, **kw)

        monkeypatch.setattr(module, "measure", spy)
    api.plan(db.conninfo, Config())
    assert sorted(seen) == [("cascade", None), ("shares", None)]
    seen.clear()
    result = api.apply(db.conninfo, Config())
    assert result.ok, result.problems
    assert sorted(seen) == [("cascade", "0"), ("shares", "0")]

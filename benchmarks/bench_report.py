"""What the report costs: the statistics query against the checks' scan, and rendering, as printed ratios.

    python benchmarks/bench_report.py [SESSIONS]

Builds the demo shape scaled to SESSIONS sessions (default 20000, ~200k conversation rows) on an
embedded PostgreSQL, times a full scan (which includes the statistics), then the statistics alone in
their own read-only transaction, and the HTML rendering. Prints seconds and ratios; asserts nothing.
"""
from __future__ import annotations

import sys
import time

import psycopg

from yumai_audit.config import Config
from yumai_audit.connection import resolve_target
from yumai_audit.demo import DATA, SCHEMA, SESSIONS
from yumai_audit.embedded import embedded_server
from yumai_audit.reports.render import render_html
from yumai_audit.scan.passes import execute_in_savepoint
from yumai_audit.scan.scanner import audit_context, run_scan
from yumai_audit.scan.stats import collect_stats


def main(sessions: int) -> None:
    with embedded_server() as uri:
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench_report")
        conninfo = resolve_target(uri.replace("/postgres?", "/bench_report?")).conninfo
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(SCHEMA)
            conn.execute(DATA.replace(f"generate_series(1, {SESSIONS})", f"generate_series(1, {sessions})")
                         .replace(f"generate_series(1, {SESSIONS}, ", f"generate_series(1, {sessions}, "))
            rows = conn.execute("SELECT count(*) FROM chatbot.conversations").fetchone()[0]
        with psycopg.connect(conninfo) as conn:
            t0 = time.monotonic()
            result = run_scan(conn, Config())
            scan_s = time.monotonic() - t0
        with psycopg.connect(conninfo) as conn:
            conn.read_only = True
            with conn.transaction():
                ctx = audit_context(conn, Config())
                t0 = time.monotonic()
                collect_stats(ctx, lambda q: execute_in_savepoint(conn, q, None))
                stats_s = time.monotonic() - t0
        t0 = time.monotonic()
        html = render_html(result)
        render_s = time.monotonic() - t0
    print(f"sessions {sessions}, conversation rows {rows}")
    print(f"scan (with statistics) {scan_s:.2f}s; statistics alone {stats_s:.2f}s "
          f"= {stats_s / scan_s:.0%} of the scan; checks alone ~{scan_s - stats_s:.2f}s")
    print(f"render {render_s * 1000:.0f} ms, {len(html) / 1024:.0f} kB of HTML "
          f"({render_s / scan_s:.1%} of the scan)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000)

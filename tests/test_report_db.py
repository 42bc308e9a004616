"""The report and CSVs from real scans: database values are data, samples are keys only."""
from __future__ import annotations

import csv
import re

from report_fixtures import external_references

from yumai_audit.api import scan, write_scan
from yumai_audit.config import Config
from yumai_audit.demo import build_demo_database
from yumai_audit.reports.render import render_html

EVIL = "<script>alert(1)</script>"
EVIL_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
GHOST = "11111111-2222-4333-8444-555555555555"


def test_table_named_script_shows_as_text(db):
    db.execute('CREATE SCHEMA "x<b>y"')
    db.execute('CREATE TABLE "x<b>y"."<script>alert(1)</script>" (id serial PRIMARY KEY, session_id uuid, '
               'created_at timestamptz) PARTITION BY RANGE (id)')
    db.execute('CREATE TABLE "x<b>y"."<img src=x onerror=alert(2)>" PARTITION OF "x<b>y"."<script>alert(1)</script>" '
               'FOR VALUES FROM (1) TO (100)')
    db.execute("CREATE SCHEMA chatbot; CREATE TABLE chatbot.conversations (session_id uuid, created_at timestamptz)")
    db.execute("INSERT INTO chatbot.conversations VALUES (gen_random_uuid(), now())")
    db.execute('INSERT INTO "x<b>y"."<script>alert(1)</script>" (session_id, created_at) VALUES (%s, now()), (%s, now())',
               [GHOST, GHOST])
    result = scan(db.conninfo, Config())
    orphans = [f for f in result.findings if f.check == "orphaned_session_ids"]
    assert [(f.table, f.rows, f.keys, f.sample) for f in orphans] == [(f"x<b>y.{EVIL}", 2, 1, [GHOST])]
    name = f"x<b>y.{EVIL}"
    assert name in [t.table for t in result.inventory]
    html = render_html(result)
    assert EVIL not in html and "<img src=x" not in html and "<b>y" not in html
    assert f"x&lt;b&gt;y.{EVIL_ESCAPED}" in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html              # the partition, in the partition chart
    svg = "".join(re.findall(r"<svg.*?</svg>", html, re.S))
    assert EVIL_ESCAPED in svg and f"<title>x&lt;b&gt;y.{EVIL_ESCAPED}: 2</title>" in svg
    assert html.count("<script") == 1                               # the report's own print helper only
    assert html.count("<img") == 0


def test_demo_report_samples_and_csvs_hold_keys_only(db, tmp_path):
    build_demo_database(db.conninfo)
    result = scan(db.conninfo, Config())
    paths = write_scan(result, tmp_path)
    html = paths["html"].read_text()
    assert external_references(html) == []
    assert "Verdict: <span class=\"badge error\">Needs a decision</span>" in html
    # conversation text never leaves the database
    texts = [html] + [p.read_text() for p in tmp_path.glob("*.csv")] + [(tmp_path / "findings.json").read_text()]
    for text in texts:
        assert "of session" not in text and "lost message" not in text and "thanks" not in text
    samples = sorted(p.name for p in tmp_path.glob("samples-*.csv"))
    failing_with_samples = sorted({f"samples-{f.check}.csv" for f in result.findings if f.sample})
    assert samples == failing_with_samples
    assert "samples-orphaned_session_ids.csv" in samples
    with open(tmp_path / "samples-orphaned_session_ids.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["table", "column", "sample_of", "value"]
    by_table: dict[str, int] = {}
    for row in rows:
        by_table[row["table"]] = by_table.get(row["table"], 0) + 1
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", row["value"])
        assert row["sample_of"] == "session id"
    assert by_table == {"chatbot.user_interactions": 3, "chatbot.user_feedback": 1, "chatbot.recommendations_log": 2}
    with open(tmp_path / "samples-null_session_ids.csv", newline="") as fh:
        nulls = list(csv.DictReader(fh))
    assert {r["sample_of"] for r in nulls} == {"primary key"} and len(nulls) == 6
    # the weekly chart of the demo: 400 sessions missing from the master, 6 orphaned
    weeks = result.stats["sessions_by_week"]
    assert sum(w["missing_from_master"] for w in weeks) == 400
    assert sum(w["orphaned"] for w in weeks) == 6 and sum(w["registered"] for w in weeks) == 0
    assert {p["partition"]: p["rows"] for p in result.stats["partitions"]} == {
        "chatbot.conversations_2026_08": 1860, "chatbot.conversations_2026_09": 1430,
        "chatbot.conversations_2026_10": 0, "chatbot.conversations_default": 702}

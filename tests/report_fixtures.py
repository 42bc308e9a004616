"""Hand-built scans and plans for the report tests that need no database, and the self-containment check."""
from __future__ import annotations

import re
from html.parser import HTMLParser

from yumai_audit.model import CheckResult, Finding, ScanResult, Severity, Status, TableInventory


def scan_result(*, blocked: bool = True, table: str = "chatbot.user_interactions", sample: str | None = None,
                generated_at: str = "2026-11-01T10:00:00+00:00", stats: dict | None = None) -> ScanResult:
    findings = []
    if blocked:
        findings.append(Finding("orphaned_session_ids", Severity.ERROR, table, "session_id",
                                f"7 rows in {table} refer to 3 unknown sessions", rows=7, keys=3,
                                references="chatbot.session_master.session_id",
                                sample=[sample or "0b8f3c2e-0000-4000-8000-000000000001"],
                                details={"sample_of": "session id"}))
    findings.append(Finding("null_session_ids", Severity.WARNING, "chatbot.conversations", "session_id",
                            "2 rows in chatbot.conversations have no session id", rows=2,
                            sample=["(17,\"2026-06-01 00:01:00+00\")"], details={"sample_of": "primary key"}))
    checks = [
        CheckResult("orphaned_session_ids", Status.FAIL if blocked else Status.PASS, 0.01, Severity.ERROR,
                    "Rows whose session id is in neither the master nor the source table"),
        CheckResult("null_session_ids", Status.FAIL, 0.01, Severity.WARNING, "Rows whose session id is NULL"),
        CheckResult("unvalidated_fk", Status.SKIPPED, 0.0, Severity.ERROR, "FKs that are NOT VALID",
                    reason="no foreign key to validate"),
    ]
    inventory = [
        TableInventory("chatbot.conversations", "partitioned", 3992, 712704, 2, True, "uuid", "none", False, True),
        TableInventory(table, "table", 211, 81920, 0, False, "uuid", "none", True, False),
    ]
    if stats is None:
        stats = {"notes": [], "created_at_column": "created_at",
                 "sessions_by_week_tables": ["chatbot.conversations", table], "sessions_by_week_skipped": [],
                 "sessions_by_week": [
                     {"week": "2026-03-02", "registered": 5, "missing_from_master": 40, "orphaned": 0},
                     {"week": "2026-03-16", "registered": 2, "missing_from_master": 30, "orphaned": 3}],
                 "partitions": [
                     {"table": "chatbot.conversations", "partition": "chatbot.conversations_2026_03",
                      "bound": "FOR VALUES FROM ('2026-03-01') TO ('2026-04-01')", "default": False,
                      "bytes": 303104, "rows": 1860},
                     {"table": "chatbot.conversations", "partition": "chatbot.conversations_default",
                      "bound": "DEFAULT", "default": True, "bytes": 147456, "rows": 702}]}
    return ScanResult(database={"name": "yumai", "server_version": "18.1"}, generated_at=generated_at,
                      config={"key_column": "session_id", "master": "chatbot.session_master",
                              "source": "chatbot.conversations", "schemas": []},
                      checks=checks, findings=findings, inventory=inventory, stats=stats)


def plan_dict() -> dict:
    return {"steps": [
        {"id": "create_session_master", "description": "Create the session master", "lock": "none",
         "tables": ["chatbot.session_master"], "table_bytes": {}, "rewrites": False, "transactional": True,
         "depends_on": [], "sql": "CREATE TABLE chatbot.session_master (session_id uuid PRIMARY KEY);", "done": False},
        {"id": "quarantine_orphaned_session_ids:chatbot.user_interactions",
         "description": "Move orphaned rows to yumai_quarantine", "lock": "ROW EXCLUSIVE",
         "tables": ["chatbot.user_interactions"], "table_bytes": {"chatbot.user_interactions": 81920},
         "rewrites": False, "transactional": True, "depends_on": ["create_session_master"],
         "repairs": ["orphaned_session_ids"],
         "sql": "DELETE FROM chatbot.user_interactions t WHERE t.session_id NOT IN (SELECT 1) RETURNING *;",
         "done": False},
        {"id": "convert_key:chatbot.recommendations_log", "description": "Convert the key to uuid",
         "lock": "ACCESS EXCLUSIVE", "tables": ["chatbot.recommendations_log"],
         "table_bytes": {"chatbot.recommendations_log": 3 * 1024 * 1024}, "rewrites": True, "transactional": True,
         "depends_on": [], "sql": "ALTER TABLE chatbot.recommendations_log ALTER COLUMN session_id TYPE uuid "
                                  "USING btrim(session_id)::uuid;", "done": False,
         "repairs": ["malformed_session_ids", "key_type_mismatch"]},
        {"id": "index_key:chatbot.user_feedback", "description": "Index the key", "lock": "SHARE UPDATE EXCLUSIVE",
         "tables": ["chatbot.user_feedback"], "table_bytes": {"chatbot.user_feedback": 32768}, "rewrites": False,
         "transactional": False, "depends_on": [], "repairs": ["unindexed_fk_columns"],
         "sql": "CREATE INDEX CONCURRENTLY user_feedback_session_id_idx ON chatbot.user_feedback (session_id);",
         "done": True},
    ], "server_version_num": 180001, "options": {"orphans": "quarantine"}}


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.styles: list[str] = []
        self.scripts: list[dict] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href", "xlink:href", "action", "formaction", "poster", "srcset", "data"):
                self.refs.append((tag, name, value or ""))
            if name == "style":
                self.styles.append(value or "")
        if tag == "style":
            self._in_style = True
        if tag == "script":
            self.scripts.append(dict(attrs))

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)


def external_references(html: str) -> list[str]:
    """Everything in the document that would make a browser fetch something: should be empty."""
    parser = _Refs()
    parser.feed(html)
    problems = [f"<{tag} {name}={value!r}>" for tag, name, value in parser.refs
                if not (value.startswith("#") or value.startswith("data:"))]
    problems += [f"<script {attrs}>" for attrs in parser.scripts if attrs]
    for css in parser.styles:
        problems += ["@import in CSS" for _ in re.finditer(r"@import", css, re.I)]
        problems += [f"url({m.group(1)!r}) in CSS" for m in re.finditer(r"url\(\s*['\"]?([^)'\"]*)", css, re.I)
                     if not m.group(1).startswith("data:")]
    problems += [m.group(0) for m in re.finditer(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, re.I)]
    return problems

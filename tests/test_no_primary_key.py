"""A partitioned key table without a primary key (pg_partman makes such tables; a primary key there must include
the partition key): the scan reads its pass in parts of its partitions, on two connections, and names the rows of
a sample by partition and ctid, as it does for an unpartitioned table without one. The parts' relation (a UNION ALL
of the partitions) gave no `tableoid` or `ctid`: the scan and `fix` stopped with "column t.tableoid does not
exist" on the first such schema."""
from __future__ import annotations

import re

from click.testing import CliRunner

from yumai_audit import api
from yumai_audit.cli import cli
from yumai_audit.config import Config

SCHEMA = """
CREATE SCHEMA chatbot;
CREATE TABLE chatbot.users (id int PRIMARY KEY);
INSERT INTO chatbot.users SELECT generate_series(1, 5);
CREATE TABLE chatbot.conversations (id bigint, session_id uuid, user_id int, message text,
    created_at timestamptz NOT NULL) PARTITION BY RANGE (created_at);
CREATE TABLE chatbot.conversations_2026_01 PARTITION OF chatbot.conversations
    FOR VALUES FROM ('2026-01-01 00:00+00') TO ('2026-02-01 00:00+00');
CREATE TABLE chatbot.conversations_2026_02 PARTITION OF chatbot.conversations
    FOR VALUES FROM ('2026-02-01 00:00+00') TO ('2026-03-01 00:00+00');
CREATE TABLE chatbot.conversations_default PARTITION OF chatbot.conversations DEFAULT;
INSERT INTO chatbot.conversations
    SELECT i, md5('s' || (i % 40))::uuid, 1 + i % 5, 'm', timestamptz '2026-01-01' + i * interval '10 hours'
    FROM generate_series(1, 200) i;
-- two messages without a session: one in February, one in the default partition
INSERT INTO chatbot.conversations VALUES (1001, NULL, 1, 'lost', '2026-02-10'), (1002, NULL, 2, 'lost', '2027-06-01');
CREATE TABLE chatbot.user_interactions (id bigserial PRIMARY KEY, session_id uuid, user_id int);
INSERT INTO chatbot.user_interactions (session_id, user_id) SELECT md5('s' || i)::uuid, 1 FROM generate_series(1, 30) i;
ANALYZE;
"""

LOCATOR = re.compile(r"^chatbot\.conversations_(2026_02|default):\(\d+,\d+\)$")


def test_a_partitioned_table_without_a_primary_key_is_scanned_in_parts_and_its_rows_named_by_partition_and_ctid(db):
    db.execute(SCHEMA)
    result = api.scan(db.conninfo, Config(), jobs=2)
    nulls = [f for f in result.findings if f.check == "null_session_ids" and f.table == "chatbot.conversations"]
    assert [f.rows for f in nulls] == [2]
    assert len(nulls[0].sample) == 2 and all(LOCATOR.match(s) for s in nulls[0].sample), nulls[0].sample
    # each locator reads back its row
    for locator in nulls[0].sample:
        table, ctid = locator.split(":")
        assert db.scalar(f"SELECT session_id IS NULL FROM {table} WHERE ctid = %s::tid", (ctid,)) is True
    # the report's rows per partition, counted in the same read
    rows = {p["partition"]: p["rows"] for p in result.stats["partitions"]}
    assert rows == {"chatbot.conversations_2026_01": 74, "chatbot.conversations_2026_02": 68,
                    "chatbot.conversations_default": 60}


def test_fix_plans_and_applies_on_it_and_conserves_every_row(db, tmp_path):
    db.execute(SCHEMA)
    before = db.scalar("SELECT count(*) FROM chatbot.conversations")
    dry = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--out", str(tmp_path / "dry")])
    assert "database error" not in dry.output and dry.exit_code in (0, 1), dry.output
    assert (tmp_path / "dry" / "plan.sql").is_file()
    applied = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--apply", "--yes", "--no-backup",
                                       "--out", str(tmp_path / "applied")])
    assert "Migrated" in applied.output, applied.output
    assert db.scalar("SELECT count(*) FROM chatbot.conversations") == before
    assert db.scalar("SELECT count(*) FROM chatbot.session_master") == 40

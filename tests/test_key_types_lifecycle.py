"""sessions prune and watch on an integer-keyed master: the telemetry schema of tests/test_key_types.py
(a bigint device_id) after `fix --apply` and `bridge remove`."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from click.testing import CliRunner
from test_key_types import TELEMETRY, TELEMETRY_TABLES, TELEMETRY_TOML, config_file, migrate, rows

from yumai_audit.cli import cli
from yumai_audit.config import load_config
from yumai_audit.maintenance.sessions import prune
from yumai_audit.scan.watch import watch


def _migrated(db, tmp_path) -> str:
    db.execute(TELEMETRY)
    toml = config_file(tmp_path, TELEMETRY_TOML)
    migrate(db, toml, tmp_path)
    return toml


def test_prune_deletes_old_devices_and_their_rows(db, tmp_path):
    toml = _migrated(db, tmp_path)
    config = load_config(toml)
    # devices 1-5 ended 200 days ago (pruned at 180d), 6 ended 10 days ago, 7 inactive without an end
    db.execute("UPDATE app.device_master SET is_active = true, session_end = NULL")
    db.execute("UPDATE app.device_master SET is_active = false, session_end = now() - interval '200 days' "
               "WHERE device_id BETWEEN 1 AND 5")
    db.execute("UPDATE app.device_master SET is_active = false, session_end = now() - interval '10 days' "
               "WHERE device_id = 6")
    db.execute("UPDATE app.device_master SET is_active = false WHERE device_id = 7")
    before = rows(db, TELEMETRY_TABLES)
    preview = prune(db.conninfo, config, timedelta(days=180))
    # per device: 10 events, 1 alert (devices 1-2000), 1 setting (1-1000), 1 crm row (1-200)
    expected = {"app.events": 50, "app.alerts": 5, "app.device_settings": 5, "app.crm_devices": 5}
    assert preview.sessions == 5 and preview.cascade == expected
    assert rows(db, TELEMETRY_TABLES) == before
    applied = CliRunner().invoke(cli, ["sessions", "prune", "--older-than", "180d", "--apply", "--batch-size", "2",
                                       "--dsn", db.conninfo, "--config", toml])
    assert applied.exit_code == 0, applied.output
    assert "Deleted 5 session(s) in 3 batch(es) (largest 2), 65 row(s) with them." in applied.output
    after = rows(db, TELEMETRY_TABLES)
    assert {t: before[t] - after[t] for t in TELEMETRY_TABLES} == {**expected, "app.accounts": 0}
    assert db.scalar("SELECT count(*) FROM app.device_master") == 2995
    assert db.fetchall("SELECT device_id FROM app.device_master WHERE device_id <= 7 ORDER BY 1") == [(6,), (7,)]


def test_watch_finds_new_orphans_of_a_bigint_key(db, tmp_path):
    config = load_config(_migrated(db, tmp_path))
    since = datetime(2027, 1, 1, tzinfo=timezone.utc)      # after every row of the schema (events end 2026-12-29)
    assert watch(db.conninfo, config, since).findings == []
    later = since + timedelta(hours=1)
    with db.connect() as conn:
        # rows the foreign key did not see (a replica applying changes does not fire FK triggers)
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute("INSERT INTO app.alerts (device_id, account_id, msg, ts) "
                     "SELECT 700000 + g %% 2, 1, 'ghost', %s FROM generate_series(1, 3) g", (later,))
        conn.execute("INSERT INTO app.events (device_id, account_id, kind, ts) VALUES (800000, 1, 'ghost', %s), "
                     "(5, 1, 'ping', %s)", (later, later))
        conn.commit()
    result = watch(db.conninfo, config, since)
    assert {(f.check, f.table): (f.rows, f.keys) for f in result.findings} == {
        ("orphaned_session_ids", "app.alerts"): (3, 2),
        # an unknown device in the source table is a device the master lacks
        ("missing_master_rows", "app.device_master"): (None, 1)}
    assert result.stats["new_rows"] == {"app.events": 2, "app.alerts": 3}
    orphans = next(f for f in result.findings if f.table == "app.alerts")
    assert orphans.sample == ["700000", "700001"]
    assert result.exit_code == 1


def test_the_bridge_speaks_of_the_key_it_registers(db, tmp_path):
    """With the bridge still on after `fix --apply`, the scan's verdict and bridge line name the device_id
    values it registers, not sessions."""
    db.execute(TELEMETRY)
    toml = config_file(tmp_path, TELEMETRY_TOML)
    res = CliRunner().invoke(cli, ["fix", "--dsn", db.conninfo, "--config", toml, "--apply", "--yes", "--no-backup",
                                   "--out", str(tmp_path / "run")])
    assert res.exit_code in (0, 1) and "Traceback" not in res.output, res.output
    db.execute("INSERT INTO app.events (device_id, kind, ts) VALUES (987654321, 'new', now())")
    assert db.scalar("SELECT count(*) FROM app.device_master WHERE device_id = 987654321") == 1
    scanned = CliRunner().invoke(cli, ["scan", "--dsn", db.conninfo, "--config", toml, "--out", str(tmp_path / "scan")])
    text = " ".join(scanned.output.split())       # the verdict's line is wrapped at 120 columns
    assert "Verdict: Migrated, bridge on. " in text, scanned.output
    assert ("a new row of app.events naming a device_id value the master lacks (a made-up device_id too) registers "
            "that device_id value instead of failing. It registered 1 device_id value in the last 24 hours.") in text
    assert ("Cutover bridge installed on app.events: 1 device_id value registered by it in the last 24 hours"
            in text)
    assert "watch yumai-audit bridge status until it registers 0 device_id values an hour" in text

"""`yumai-audit init`: the configuration it proposes from the catalog of a real database (the demo's, the
telemetry schema of a new user, names that need escaping), that the file it writes loads, and that it
never overwrites a file without --force."""
from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from yumai_audit.catalog import QualifiedName
from yumai_audit.cli import cli
from yumai_audit.config import Config, load_config, tomllib
from yumai_audit.demo import build_demo_database

# The telemetry schema: 30,000 events over 3,000 devices (3 partitions, one the default), alerts naming
# 100 devices that have no event, settings for 50 more (device_id their primary key), accounts.
TELEMETRY = """
CREATE SCHEMA app;
CREATE TABLE app.events (id bigint GENERATED ALWAYS AS IDENTITY, device_id bigint NOT NULL, account_id bigint,
  kind text, ts timestamptz NOT NULL, PRIMARY KEY (id, ts)) PARTITION BY RANGE (ts);
CREATE TABLE app.events_2026_11 PARTITION OF app.events FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');
CREATE TABLE app.events_2026_12 PARTITION OF app.events FOR VALUES FROM ('2026-12-01') TO ('2027-01-01');
CREATE TABLE app.events_default PARTITION OF app.events DEFAULT;
CREATE TABLE app.alerts (id bigserial PRIMARY KEY, device_id bigint, account_id bigint, msg text, ts timestamptz);
CREATE TABLE app.device_settings (device_id bigint PRIMARY KEY, conf jsonb);
CREATE TABLE app.accounts (id bigint PRIMARY KEY, name text);
INSERT INTO app.accounts SELECT i, 'account ' || i FROM generate_series(1, 300) i;
INSERT INTO app.events (device_id, account_id, kind, ts)
  SELECT 1 + i % 3000, 1 + i % 300, 'ping', timestamptz '2026-11-01 00:00+00' + i * interval '3 minutes'
  FROM generate_series(0, 29999) i;
INSERT INTO app.alerts (device_id, account_id, msg, ts)
  SELECT 100000 + i, 1 + i % 300, 'offline', timestamptz '2026-12-01 00:00+00' FROM generate_series(1, 100) i;
INSERT INTO app.device_settings SELECT 200000 + i, '{}' FROM generate_series(1, 50) i;
ANALYZE;
"""

ROOT = Path(__file__).resolve().parent.parent
PROPOSED = ("source", "key_column", "master", "users", "users_key", "user_column", "created_at_column")


def invoke(*args):
    return CliRunner().invoke(cli, list(args), env={})


def proposed(config: Config) -> dict:
    return {k: getattr(config, k) for k in PROPOSED}


def one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output + result.stderr
    return lines[0]


def test_the_demo_database_gets_the_yumai_configuration(db, tmp_path):
    build_demo_database(db.conninfo)
    out = tmp_path / "yumai-audit.toml"
    result = invoke("init", "--dsn", db.conninfo, "--out", str(out))
    assert result.exit_code == 0, result.output + result.stderr
    assert result.stdout.startswith(f"Wrote {out}: source chatbot.conversations; key_column session_id; ")
    # every key the file sets is the default: the file loads as the defaults themselves
    assert load_config(out) == Config()
    text = out.read_text()
    assert 'source = "chatbot.conversations"\n' in text and 'master = "chatbot.session_master"\n' in text
    # the alternatives weighed, with why they are not the key
    assert "#   user_id: 4 tables (chatbot.conversations, chatbot.recommendations_log, chatbot.user_feedback," in text
    assert "not the key: references chatbot.users by name" in text
    assert "not the key: the source's own row id" in text


def test_the_telemetry_schema_gets_its_own_configuration(db, tmp_path):
    db.execute(TELEMETRY)
    tables_before = db.scalar("SELECT count(*) FROM pg_class")
    out = tmp_path / "telemetry.toml"
    result = invoke("init", "--dsn", db.conninfo, "--out", str(out))
    assert result.exit_code == 0, result.output + result.stderr
    assert result.stdout.splitlines()[1].endswith(f"then: yumai-audit scan --config {out}")
    assert proposed(load_config(out)) == {
        "source": QualifiedName("app", "events"), "key_column": "device_id",
        "master": QualifiedName("app", "device_master"), "users": QualifiedName("app", "accounts"),
        "users_key": "id", "user_column": "account_id", "created_at_column": "ts"}
    assert load_config(out) == Config(**proposed(load_config(out)))   # nothing else set
    text = out.read_text()
    assert "(app.events: about 30,000 rows in 3 partitions)" in re.sub(r"\n#\s+", " ", text)   # wrapped
    assert "#   device_id: 3 tables (app.alerts, app.device_settings, app.events)\n" in text
    assert "#   account_id: 2 tables (app.alerts, app.events); not the key: references app.accounts by name\n" in text
    assert "# Chosen: the partition key of app.events\n" in text
    assert "# key tables without it (no timestamps from them): app.device_settings\n" in text
    assert db.scalar("SELECT count(*) FROM pg_class") == tables_before     # read-only: nothing created


def test_an_existing_file_is_refused_before_connecting_and_kept(db, tmp_path):
    out = tmp_path / "yumai-audit.toml"
    out.write_text("# mine\n")
    # port 1: nothing listens there; the refusal comes first, so the error is about the file
    result = invoke("init", "--dsn", "postgresql://nobody@127.0.0.1:1/none", "--out", str(out))
    assert result.exit_code == 2
    assert one_line_error(result) == f"yumai-audit: error: init: {out} exists; pass --force to overwrite it"
    assert out.read_text() == "# mine\n"


def test_force_overwrites_the_file(db, tmp_path):
    db.execute(TELEMETRY)
    out = tmp_path / "yumai-audit.toml"
    out.write_text('key_column = "session_id"\n')
    result = invoke("init", "--dsn", db.conninfo, "--out", str(out), "--force")
    assert result.exit_code == 0, result.output + result.stderr
    assert load_config(out).key_column == "device_id"
    assert [p.name for p in tmp_path.iterdir()] == ["yumai-audit.toml"]    # no temporary file left


def test_the_default_file_is_written_in_the_current_directory(db, tmp_path, monkeypatch):
    db.execute(TELEMETRY)
    monkeypatch.chdir(tmp_path)
    result = invoke("init", "--dsn", db.conninfo)
    assert result.exit_code == 0, result.output + result.stderr
    assert result.stdout.splitlines()[1].endswith("then: yumai-audit scan")   # found there, no --config
    assert load_config().source == QualifiedName("app", "events")
    again = invoke("init", "--dsn", db.conninfo)
    assert again.exit_code == 2
    assert one_line_error(again) == "yumai-audit: error: init: yumai-audit.toml exists; pass --force to overwrite it"


def test_a_database_without_tables_is_one_line_and_exit_2(db, tmp_path):
    out = tmp_path / "yumai-audit.toml"
    result = invoke("init", "--dsn", db.conninfo, "--out", str(out))
    assert result.exit_code == 2
    assert one_line_error(result) == \
        "yumai-audit: error: init: the database has no table to propose a configuration from"
    assert not out.exists()


def test_names_from_the_database_are_escaped_in_values_and_comments(db, tmp_path):
    """A schema with a dot and a table whose name holds a newline, a TOML line and a terminal escape: the
    value reads back as that name, the line never becomes a key of the file, the escape reaches neither
    the file's comments (TOML refuses control characters there) nor the terminal."""
    odd = TELEMETRY.replace("app.events_", '"odd.app".ev_').replace("app.events", '"odd.app"."ev\nkey_column = \'x\'\x1b[31m"')
    db.execute(odd.replace("CREATE SCHEMA app;", 'CREATE SCHEMA app; CREATE SCHEMA "odd.app";'))
    out = tmp_path / "yumai-audit.toml"
    result = invoke("init", "--dsn", db.conninfo, "--out", str(out))
    assert result.exit_code == 0, result.output + result.stderr
    config = load_config(out)
    assert config.source == QualifiedName("odd.app", "ev\nkey_column = 'x'\x1b[31m")
    assert config.key_column == "device_id"
    assert config.master == QualifiedName("odd.app", "device_master")
    assert "ev\\u000Akey_column = 'x'\\u001B[31m" in result.stdout and "\x1b" not in result.stdout
    lines = out.read_text().splitlines()
    assert [line for line in lines if line.startswith("key_column")] == ['key_column = "device_id"']
    assert all(line == "" or line.startswith("#") or " = " in line for line in lines)


def test_a_key_that_references_its_master_already_keeps_it(db, tmp_path):
    """A database migrated before (or by hand): the key references a table keyed by the key itself, which
    is then the master, whatever its name."""
    db.execute(TELEMETRY + """
        CREATE TABLE app.devices_known (device_id bigint PRIMARY KEY);
        INSERT INTO app.devices_known SELECT DISTINCT device_id FROM app.events;
        ALTER TABLE app.events ADD FOREIGN KEY (device_id) REFERENCES app.devices_known (device_id);
    """)
    out = tmp_path / "yumai-audit.toml"
    assert invoke("init", "--dsn", db.conninfo, "--out", str(out)).exit_code == 0
    config = load_config(out)
    assert (config.key_column, config.master) == ("device_id", QualifiedName("app", "devices_known"))


def test_a_declared_foreign_key_to_a_users_like_table_comes_before_a_name(db, tmp_path):
    db.execute(TELEMETRY + """
        CREATE TABLE app.clients (id bigint PRIMARY KEY);
        ALTER TABLE app.events ADD COLUMN client_ref bigint REFERENCES app.clients (id);
    """)
    out = tmp_path / "yumai-audit.toml"
    assert invoke("init", "--dsn", db.conninfo, "--out", str(out)).exit_code == 0
    config = load_config(out)
    assert (config.users, config.users_key, config.user_column) == (QualifiedName("app", "clients"), "id", "client_ref")
    assert "#   account_id -> app.accounts.id (by name)\n" in out.read_text()


def test_the_largest_partitioned_table_with_a_shared_key_is_the_source(db, tmp_path):
    """A bigger partitioned table whose columns no other table repeats is passed over (and listed)."""
    db.execute(TELEMETRY + """
        CREATE TABLE app.raw_log (line_no bigint, body text, at timestamptz NOT NULL) PARTITION BY RANGE (at);
        CREATE TABLE app.raw_log_all PARTITION OF app.raw_log DEFAULT;
        INSERT INTO app.raw_log SELECT i, 'x', now() FROM generate_series(1, 50000) i;
        ANALYZE app.raw_log;
    """)
    out = tmp_path / "yumai-audit.toml"
    assert invoke("init", "--dsn", db.conninfo, "--out", str(out)).exit_code == 0
    assert load_config(out).source == QualifiedName("app", "events")
    assert "#   app.raw_log: about 50,000 rows in 1 partition\n" in out.read_text()


def test_schema_limits_what_init_reads_and_the_file_keeps_it(db, tmp_path):
    """Beside yumai's schema: --schema chatbot proposes yumai's configuration and writes schemas = ["chatbot"]
    (the scan then audits that schema only); without it, the partitioned table with the most rows wins."""
    build_demo_database(db.conninfo)
    db.execute(TELEMETRY)
    only = tmp_path / "chatbot.toml"
    assert invoke("init", "--dsn", db.conninfo, "--out", str(only), "--schema", "chatbot").exit_code == 0
    assert load_config(only) == Config(schemas=("chatbot",))
    assert "\nschemas = [\"chatbot\"]\n" in only.read_text() and "# schemas = []" not in only.read_text()
    every = tmp_path / "every.toml"
    assert invoke("init", "--dsn", db.conninfo, "--out", str(every)).exit_code == 0
    assert (load_config(every).source, load_config(every).schemas) == (QualifiedName("app", "events"), ())
    assert "#   chatbot.conversations: about 3,992 rows in 4 partitions\n" in every.read_text()


def _fenced(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.S | re.M)


def test_the_documented_telemetry_configuration_is_what_init_proposes(db, tmp_path):
    """docs/own-schema.md runs its telemetry SQL and `init` (tests/test_docs.py); here the TOML it and the
    README show is compared with what init writes for that SQL."""
    page = (ROOT / "docs" / "own-schema.md").read_text()
    example = next(b for b in _fenced(page, "bash") if "CREATE SCHEMA app;" in b)
    db.execute(example.split("<<'SQL'\n", 1)[1].split("\nSQL\n", 1)[0])
    out = tmp_path / "yumai-audit.toml"
    assert invoke("init", "--dsn", db.conninfo, "--out", str(out), "--schema", "app").exit_code == 0
    written = tomllib.loads(out.read_text())
    assert tomllib.loads(_fenced(page, "toml")[0]) == written
    readme = tomllib.loads(_fenced((ROOT / "README.md").read_text(), "toml")[0])
    assert readme == {k: v for k, v in written.items() if k != "schemas"}


def test_a_users_table_keyed_by_the_user_column_is_not_taken_for_a_master(db, tmp_path):
    """user_id REFERENCES users (user_id): the same name on both ends, as a master's key has, but a users
    table: user_id is the user column, session_id the key."""
    build_demo_database(db.conninfo)
    db.execute("""
        ALTER TABLE chatbot.users RENAME COLUMN id TO user_id;
        ALTER TABLE chatbot.user_feedback ADD FOREIGN KEY (user_id) REFERENCES chatbot.users (user_id) NOT VALID;
        UPDATE chatbot.conversations c SET user_id = NULL
          WHERE NOT EXISTS (SELECT FROM chatbot.users u WHERE u.user_id = c.user_id);
        ALTER TABLE chatbot.conversations ADD FOREIGN KEY (user_id) REFERENCES chatbot.users (user_id);
    """)
    out = tmp_path / "yumai-audit.toml"
    assert invoke("init", "--dsn", db.conninfo, "--out", str(out)).exit_code == 0
    assert load_config(out) == Config(users_key="user_id")
    assert "#   user_id: 5 tables (chatbot.conversations, chatbot.recommendations_log, chatbot.user_feedback," in \
        out.read_text()


def test_a_key_in_the_sources_primary_key_is_still_the_key_but_its_own_row_id_is_not(db, tmp_path):
    """PRIMARY KEY (device_id, ts): device_id is the key although in the primary key; event_id (the row's own
    id, named after the table), in more tables, is not. Never analyzed: the file says it chose by size."""
    db.execute("""
        CREATE SCHEMA app;
        CREATE TABLE app.accounts (id bigint PRIMARY KEY);
        CREATE TABLE app.events (event_id bigint NOT NULL, device_id bigint NOT NULL, ts timestamptz NOT NULL,
          PRIMARY KEY (device_id, ts)) PARTITION BY RANGE (ts);
        CREATE TABLE app.events_all PARTITION OF app.events DEFAULT;
        CREATE TABLE app.event_copies (event_id bigint, device_id bigint);
        CREATE TABLE app.event_notes (event_id bigint, note text);
    """)
    out = tmp_path / "yumai-audit.toml"
    assert invoke("init", "--dsn", db.conninfo, "--out", str(out)).exit_code == 0
    assert (load_config(out).key_column, load_config(out).created_at_column) == ("device_id", "ts")
    text = out.read_text()
    assert "#   event_id: 3 tables (app.event_copies, app.event_notes, app.events); not the key: the source's own " \
           "row id\n" in text
    assert "Chosen: the largest partitioned table whose key column other tables repeat (app.events: no row " \
           "estimate, 8 kB in 1 partition)" in re.sub(r"\n#\s+", " ", text)


def test_a_table_held_exclusively_is_waited_for_a_bounded_time(db, tmp_path, monkeypatch):
    """The catalog read takes ACCESS SHARE on each table (its size): behind an ALTER TABLE's lock it waits
    LOCK_TIMEOUT_SECONDS, then says so in one line (exit 2) and writes nothing."""
    from yumai_audit import discover

    db.execute(TELEMETRY)
    monkeypatch.setattr(discover, "LOCK_TIMEOUT_SECONDS", 0.2)
    out = tmp_path / "yumai-audit.toml"
    with db.connect() as holder:
        holder.execute("LOCK TABLE app.alerts IN ACCESS EXCLUSIVE MODE")
        result = invoke("init", "--dsn", db.conninfo, "--out", str(out))
        holder.rollback()
    assert result.exit_code == 2
    assert one_line_error(result).startswith("yumai-audit: error: init: waited 0.2 s for a table's ACCESS SHARE lock")
    assert not out.exists()

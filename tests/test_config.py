"""Configuration and connection resolution (no database)."""
from __future__ import annotations

import pytest

from yumai_audit.catalog import QualifiedName
from yumai_audit.config import Config, find_config, load_config
from yumai_audit.connection import resolve_target
from yumai_audit.errors import ConfigError


def test_defaults_are_the_guides():
    c = Config()
    assert (str(c.master), str(c.source), str(c.users), c.key_column) == (
        "chatbot.session_master", "chatbot.conversations", "chatbot.users", "session_id")


def test_quoted_names_keep_case_and_dots():
    assert QualifiedName.parse('"My.Schema"."Sessions"', "x") == QualifiedName("My.Schema", "Sessions")
    assert QualifiedName.parse("Analytics.SessionEvents", "x") == QualifiedName("Analytics", "SessionEvents")
    with pytest.raises(ConfigError):
        QualifiedName.parse("justonename", "x")


def test_file_then_flags(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "yumai-audit.toml").write_text('key_column = "sid"\nsample_size = 5\n')
    assert load_config().key_column == "sid"
    c = load_config(None, {"key_column": "other", "sample_size": None})
    assert (c.key_column, c.sample_size) == ("other", 5)


def test_config_is_found_in_a_parent_directory(tmp_path, monkeypatch):
    """As sqlfluff and Squawk do: the nearest yumai-audit.toml going up from the current directory."""
    (tmp_path / "yumai-audit.toml").write_text("sample_size = 7\n")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert find_config() == tmp_path / "yumai-audit.toml"
    assert load_config().sample_size == 7
    (tmp_path / "a" / "yumai-audit.toml").write_text("sample_size = 3\n")   # nearer wins
    assert load_config().sample_size == 3


def test_pyproject_tool_table(tmp_path, monkeypatch):
    """[tool.yumai-audit] in pyproject.toml, with its accept tables; a pyproject.toml without the table (or
    broken: another tool's) is passed over; yumai-audit.toml wins in the same directory."""
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "app"\n\n[tool.yumai-audit]\nsample_size = 9\nmaster = "app.sessions"\n\n'
        '[[tool.yumai-audit.accept]]\ncheck = "null_session_ids"\nreason = "legacy rows"\n')
    inner = tmp_path / "svc"
    inner.mkdir()
    (inner / "pyproject.toml").write_text('[project]\nname = "svc"\n')
    monkeypatch.chdir(inner)
    assert find_config() == tmp_path / "pyproject.toml"
    c = load_config()
    assert (c.sample_size, str(c.master), [a.check for a in c.accept]) == (9, "app.sessions", ["null_session_ids"])
    (inner / "pyproject.toml").write_text("= broken")
    assert find_config() == tmp_path / "pyproject.toml"
    (tmp_path / "yumai-audit.toml").write_text("sample_size = 4\n")
    assert load_config().sample_size == 4


def test_no_config_file_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_config() is None or not str(find_config()).startswith(str(tmp_path))
    assert load_config(None, {"sample_size": 2}).sample_size == 2


@pytest.mark.parametrize("text,error", [
    ("nonsense = 1", "unknown setting"),
    ("sample_size = -1", "sample_size"),
    ("master = 3", "master"),
    ("= broken", "not valid TOML"),
])
def test_bad_config_is_one_clear_error(tmp_path, text, error):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=error):
        load_config(path)


def test_missing_explicit_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_url_password_is_hidden_in_display():
    t = resolve_target("postgresql+psycopg://u:pa55@h:5433/db?sslmode=disable")
    assert "pa55" not in t.display and "***" in t.display
    assert "pa55" in t.conninfo and "sslmode=disable" in t.conninfo
    assert t.scrub("failed for pa55") == "failed for ***"


def test_keyword_password_is_hidden_in_display():
    t = resolve_target("host=h dbname=d user=u password='p w'")
    assert "p w" not in t.display and t.password == "p w"


def test_libpq_environment_when_no_dsn():
    t = resolve_target(None)
    assert t.conninfo == "" and "PGHOST" in t.display

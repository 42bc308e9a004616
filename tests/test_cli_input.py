"""Bad input gets one line and exit code 2, never a traceback; secrets never reach the output (issue 11 §5,
issue 15 §2)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from psycopg.conninfo import conninfo_to_dict
from test_cli import CLEAN, invoke, one_line_error

ROOT = Path(__file__).resolve().parents[1]


def test_bad_port_in_url_exits_2():
    result = invoke("scan", "--dsn", "postgresql://u@h:5x/db")
    assert result.exit_code == 2
    assert "invalid port '5x'" in one_line_error(result)


def test_ports_that_do_not_match_the_hosts_exit_2():
    result = invoke("scan", "--dsn", "host=h1,h2,h3 port=1,2 dbname=d")
    assert result.exit_code == 2
    assert "2 ports for 3 hosts" in one_line_error(result)


def test_unknown_url_parameter_exits_2_naming_it():
    result = invoke("scan", "--dsn", "postgresql://u@h/db?nosuch=1")
    assert result.exit_code == 2
    assert "nosuch" in one_line_error(result)


def test_multi_host_url_connects_to_the_host_that_answers(db, tmp_path):
    """libpq's rules: the first host refuses, the second is the server; one URL, several hosts."""
    db.execute(CLEAN)
    params = conninfo_to_dict(db.conninfo)
    host, port = params.get("host") or "localhost", params.get("port") or "5432"
    user = quote(params.get("user", "postgres"), safe="")
    auth = user + (":" + quote(params["password"], safe="") if params.get("password") else "")
    url = f"postgresql://{auth}@127.0.0.1:1,{quote(host, safe='')}:{port}/{db.name}"
    result = invoke("scan", "--dsn", url, "--out", str(tmp_path))
    assert result.exit_code == 0, result.output + result.stderr


@pytest.mark.parametrize("args", [
    ("scan", "--timeout", "nan"), ("scan", "--timeout", "inf"), ("scan", "--timeout", "-inf"),
    ("scan", "--timeout", "1e300"), ("fix", "--lock-timeout", "nan"), ("fix", "--lock-timeout", "inf"),
    ("sessions", "prune", "--older-than", "1d", "--lock-timeout", "nan"),
    ("sessions", "close-idle", "--lock-timeout", "inf"),
])
def test_non_finite_seconds_exit_2(db, tmp_path, args):
    db.execute(CLEAN)
    result = invoke(*args, "--dsn", db.conninfo)
    assert result.exit_code == 2, result.output
    assert "timeout" in one_line_error(result)


@pytest.mark.parametrize("value", ["nan", "inf", "-1.0", "1e300"])
def test_non_finite_timeout_in_the_config_file_exits_2(db, tmp_path, value):
    db.execute(CLEAN)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"timeout_seconds = {value}\n")
    result = invoke("scan", "--dsn", db.conninfo, "--config", str(cfg), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert "timeout_seconds must be a number of seconds" in one_line_error(result)


def test_config_file_that_is_a_directory_exits_2(db, tmp_path, monkeypatch):
    db.execute(CLEAN)
    (tmp_path / "yumai-audit.toml").mkdir()
    monkeypatch.chdir(tmp_path)
    result = invoke("scan", "--dsn", db.conninfo, "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert "is a directory" in one_line_error(result)


def test_output_file_that_cannot_be_written_exits_2(db, tmp_path):
    db.execute(CLEAN)
    out = tmp_path / "o"
    (out / "findings.json").mkdir(parents=True)   # root may write anywhere; a directory in the way stops it too
    result = invoke("scan", "--dsn", db.conninfo, "--out", str(out))
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "findings.json" in line


@pytest.mark.parametrize("where", ["directory", "missing parent"])
def test_sql_file_that_cannot_be_written_exits_2_before_planning(tmp_path, where):
    path = tmp_path if where == "directory" else tmp_path / "nope" / "plan.sql"
    # no server at this address: the file is refused before any connection is tried
    result = invoke("fix", "--dsn", "postgresql://u@127.0.0.1:1/db", "--sql", str(path))
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "--sql" in line and "cannot connect" not in line


@pytest.mark.parametrize("dsn, secret", [
    ("postgresql://u@127.0.0.1:1/db?password=QuerySecret1", "QuerySecret1"),
    ("postgresql://u@127.0.0.1:1/db?pass%77ord=EncodedKey2", "EncodedKey2"),
    ("postgresql://u@127.0.0.1:1/db?password=Pct%41Value3", "PctAValue3"),
    ("postgresql://u@127.0.0.1:1/db?password=Pct%41Value3", "Pct%41Value3"),
    ("postgresql://u:UserInfo4@127.0.0.1:1/db?sslmode=disable", "UserInfo4"),
    ("postgresql://u@127.0.0.1:1/db?passfile=/secret/path5", "/secret/path5"),
    ("host=127.0.0.1 port=1 dbname=db user=u passfile=/secret/path6", "/secret/path6"),
    ("host=127.0.0.1 port=1 dbname=db user=u password='quoted secret7'", "quoted secret7"),
    ("postgresql://u@127.0.0.1:1/db?sslpassword=KeyPass8", "KeyPass8"),
    ("postgresql://u@127.0.0.1:1/db?password=Bad%zzSecret9", "Bad%zzSecret9"),   # libpq refuses it
    ("postgresql://u@h:5x/db?password=PortSecret10", "PortSecret10"),           # refused by us
])
def test_secrets_never_printed(tmp_path, dsn, secret):
    result = invoke("scan", "--dsn", dsn, "--out", str(tmp_path))
    assert result.exit_code == 2
    line = one_line_error(result)
    assert secret not in result.output + result.stderr
    if "cannot connect" in line:   # the target is shown, its secrets as ***
        assert "***" in line


def test_secret_in_the_environment_url_never_printed(tmp_path):
    result = invoke("scan", "--out", str(tmp_path),
                    env={"DATABASE_URL": "postgresql://u@127.0.0.1:1/db?password=EnvSecret11"})
    assert result.exit_code == 2
    assert "EnvSecret11" not in result.output + result.stderr


def test_short_help_option():
    for args in (["-h"], ["scan", "-h"], ["sessions", "prune", "-h"]):
        result = invoke(*args)
        assert result.exit_code == 0, (args, result.output)
        assert "Usage:" in result.output


def test_python_dash_m():
    proc = subprocess.run([sys.executable, "-m", "yumai_audit", "--help"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Usage: yumai-audit" in proc.stdout


@pytest.mark.parametrize("command", [["close-idle"], ["prune", "--older-than", "1d"]])
@pytest.mark.parametrize("option", [["--checks", "x"], ["--sample", "3"], ["--timeout", "5"], ["--exclude", "x"]])
def test_sessions_commands_take_only_their_options(command, option):
    result = invoke("sessions", *command, *option)
    assert result.exit_code == 2
    assert "No such option" in one_line_error(result)


def test_config_loads_with_tomli_where_tomllib_is_missing(tmp_path):
    """Python 3.10 has no tomllib: the same parser comes from the tomli package."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[yumai-audit]\nsample_size = 7\n')
    code = ("import sys; sys.modules['tomllib'] = None\n"
            "from yumai_audit.config import load_config\n"
            f"print(load_config({str(cfg)!r}).sample_size)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "7"

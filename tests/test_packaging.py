"""What ships beside the code: the licence, the changelog, and an example configuration that names every
setting and is valid as written once uncommented (no database)."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from yumai_audit.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "yumai-audit.toml.example"
_SETTING = re.compile(r"^# (\[\[?[a-z]+\]\]?|[a-z_]+ = .*)$")


def test_the_example_names_every_setting():
    text = EXAMPLE.read_text(encoding="utf-8")
    keys = {m.group(1).split(" = ")[0].strip("[]") for line in text.splitlines() if (m := _SETTING.match(line))}
    assert {f.name for f in dataclasses.fields(Config)} <= keys


def test_the_example_as_written_is_the_defaults_and_uncommented_is_valid(tmp_path):
    assert load_config(EXAMPLE) == Config()      # everything commented out
    lines = [m.group(1) if (m := _SETTING.match(line)) else line for line in
             EXAMPLE.read_text(encoding="utf-8").splitlines()]
    uncommented = tmp_path / "yumai-audit.toml"
    uncommented.write_text("\n".join(lines) + "\n", encoding="utf-8")
    c = load_config(uncommented)
    assert (c.sample_size, c.timeout_seconds, c.schemas) == (20, 600.0, ("chatbot",))
    assert [a.check for a in c.accept] == ["conflicting_session_users"]
    assert dict(c.severity) == {"unindexed_fk_columns": "error"}


def test_licence_and_changelog():
    licence = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert "END OF TERMS AND CONDITIONS" in licence
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert "License :: OSI Approved :: Apache Software License" in pyproject
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    version = re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)
    assert f"## [{version}]" in changelog


def test_every_package_folder_is_installed():
    """A folder with an __init__.py that pyproject.toml's packages does not list is left out of a wheel and
    of a non-editable install (an installed `fix` then fails to import it), while an editable install hides it."""
    try:
        import tomllib
    except ImportError:       # Python 3.10: the same parser, as the config reads it there
        import tomli as tomllib  # type: ignore[no-redef]

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    folders = {folder: package for package, folder in setuptools["package-dir"].items()}
    found = set()
    for folder, package in folders.items():
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            parts = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *parts)))
    assert found == set(setuptools["packages"]), sorted(found ^ set(setuptools["packages"]))

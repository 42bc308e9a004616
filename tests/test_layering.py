"""Dependencies point one way (STYLE.md, README "Layout"): cli.py imports the API, the model and the errors
only; the scan, fix and maintenance modules and the checks never import the CLI or click; the checks
import nothing from the scan or the fix. Read from the sources (ast), no database."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
AUDITOR = ROOT / "auditor"
CHECKS = ROOT / "checks"
# where each source folder installs (pyproject: auditor/ is yumai_audit, checks/ is yumai_audit.checks)
PACKAGES = {AUDITOR: "yumai_audit", CHECKS: "yumai_audit.checks"}


def _package(path: Path) -> str:
    """The dotted package a module file lives in."""
    for folder, name in PACKAGES.items():
        if path.is_relative_to(folder):
            parts = path.relative_to(folder).parent.parts
            return ".".join((name, *parts))
    raise AssertionError(f"{path} is in no known package")


def imports(path: Path, source: str | None = None) -> set[str]:
    """Every module `path` (or `source`, read as if it were there) imports, absolute and dotted
    (`from . import x` counts as module `pkg.x`, except the package's `__version__`: a name, not a module)."""
    package = _package(path).split(".")
    found = set()
    text = path.read_text(encoding="utf-8") if source is None else source
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module) if p)
            found.add(module)
            if node.module is None:   # from . import x, y: x and y may be modules
                found |= {f"{module}.{alias.name}" for alias in node.names if alias.name != "__version__"}
    return found


def _ours(modules: set[str]) -> set[str]:
    return {m for m in modules if m == "yumai_audit" or m.startswith("yumai_audit.")}


def test_cli_imports_the_api_the_model_and_the_errors_only():
    allowed = {"yumai_audit", "yumai_audit.api", "yumai_audit.model", "yumai_audit.errors"}
    found = imports(AUDITOR / "cli.py")
    assert _ours(found) - allowed == set()
    assert "psycopg" not in found   # the driver's errors come through yumai_audit.errors


@pytest.mark.parametrize("folder", [AUDITOR / "scan", AUDITOR / "fix", AUDITOR / "maintenance", CHECKS],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_inner_modules_do_not_import_the_cli_or_click(folder):
    wrong = {}
    for path in sorted(folder.rglob("*.py")):
        bad = {m for m in imports(path) if m in ("yumai_audit.cli", "click") or m.startswith("click.")}
        if bad:
            wrong[path.relative_to(ROOT).as_posix()] = sorted(bad)
    assert wrong == {}


def test_checks_import_nothing_from_the_scan_or_the_fix():
    wrong = {}
    for path in sorted(CHECKS.rglob("*.py")):
        bad = {m for m in _ours(imports(path))
               if m.split(".")[:2] == ["yumai_audit", "scan"] or m.split(".")[:2] == ["yumai_audit", "fix"]}
        if bad:
            wrong[path.relative_to(ROOT).as_posix()] = sorted(bad)
    assert wrong == {}


def test_the_api_does_not_import_click():
    assert not {m for m in imports(AUDITOR / "api.py") if m == "click" or m.startswith("click.")}


def test_the_import_reader_resolves_relative_imports():
    """The reader itself: a relative import resolves against the module's package (else the tests above
    would pass on anything)."""
    source = "from ..fix import plan\nfrom .. import cli, __version__\nimport click\nfrom yumai_audit.scan.x import y\n"
    found = imports(AUDITOR / "scan" / "probe.py", source)
    assert found == {"yumai_audit.fix", "yumai_audit", "yumai_audit.cli", "click", "yumai_audit.scan.x"}
    assert imports(CHECKS / "probe.py", "from ..scan import scanner\n") == {"yumai_audit.scan"}

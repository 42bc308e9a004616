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


def _typing_only(tree: ast.AST) -> set[int]:
    """The import nodes under `if TYPE_CHECKING:` (annotations only: they never run)."""
    return {id(inner) for node in ast.walk(tree)
            if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
            for stmt in node.body for inner in ast.walk(stmt)}


def imports(path: Path, source: str | None = None, *, runtime_only: bool = False) -> set[str]:
    """Every module `path` (or `source`, read as if it were there) imports, absolute and dotted
    (`from . import x` counts as module `pkg.x`, except the package's `__version__`: a name, not a module).
    `runtime_only`: without the imports under `if TYPE_CHECKING:`."""
    package = _package(path).split(".")
    found = set()
    text = path.read_text(encoding="utf-8") if source is None else source
    tree = ast.parse(text, str(path))
    skip = _typing_only(tree) if runtime_only else set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
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


REPORTS = ROOT / "reports"
PACKAGES[REPORTS] = "yumai_audit.reports"


def _room(module: str) -> str:
    """The top-level room of one of our modules: `yumai_audit.engine.steps` -> `engine`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _wrong(folder: Path, rooms: set[str]) -> dict[str, list[str]]:
    wrong = {}
    for path in sorted(folder.rglob("*.py")):
        bad = {m for m in _ours(imports(path)) if _room(m) in rooms}
        if bad:
            wrong[path.relative_to(ROOT).as_posix()] = sorted(bad)
    return wrong


def test_the_engine_imports_nothing_from_the_migration_the_scan_the_maintenance_or_the_checks():
    """The engine knows no operation: it imports only the connection, the errors and the version boundaries."""
    assert _wrong(AUDITOR / "engine", {"fix", "scan", "maintenance", "checks", "operations"}) == {}
    allowed = {"yumai_audit.connection", "yumai_audit.errors", "yumai_audit.pgversion"}
    found = set().union(*(_ours(imports(p)) for p in (AUDITOR / "engine").rglob("*.py")))
    assert {m for m in found if _room(m) != "engine"} - allowed == set()


@pytest.mark.parametrize("folder", [AUDITOR / "scan", REPORTS], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_scan_and_the_report_import_nothing_from_the_migration(folder):
    assert _wrong(folder, {"fix"}) == {}


def test_the_maintenance_imports_nothing_from_the_migration():
    """The commands after cutover share with the migration only what lies above both (the engine,
    fk_reach, the catalog): they run on a database the migration may never have touched."""
    assert _wrong(AUDITOR / "maintenance", {"fix"}) == {}


def test_the_room_check_sees_a_migration_import():
    """The check itself: a maintenance module importing fix/ (relative or absolute) is reported."""
    probe = AUDITOR / "maintenance" / "probe.py"
    for source in ("from ..fix import cascade\n", "def f():\n    from yumai_audit.fix.cascade import widen\n"):
        assert {_room(m) for m in _ours(imports(probe, source))} == {"fix"}


def _module_name(path: Path) -> str:
    package = _package(path)
    return package if path.name == "__init__.py" else f"{package}.{path.stem}"


def _graph() -> dict[str, set[str]]:
    """Our modules and the modules each imports when it runs, imports inside functions included (those
    under `if TYPE_CHECKING:` are annotations, never run); `from . import x` counts as an import of the
    module x when x is one."""
    files = {_module_name(p): p for folder in (AUDITOR, CHECKS, REPORTS) for p in folder.rglob("*.py")}
    return {name: {m for m in _ours(imports(path, runtime_only=True)) if m in files and m != name}
            for name, path in files.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of `graph` (the modules in order, the first again at the end), or []."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_no_import_cycle_counting_imports_inside_functions():
    """A package's __init__ importing its own modules is not a cycle of the modules below it."""
    graph = _graph()
    for name in graph:      # a package's face re-exports its modules: the edge from a module to it is kept
        graph[name] = {m for m in graph[name] if not (name.startswith(m + ".") and m in graph)}
    assert _cycle(graph) == []


def test_the_cycle_finder_finds_a_cycle_and_reads_imports_inside_functions():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []
    source = "def f():\n    from ..fix import bridge\nif TYPE_CHECKING:\n    from .. import config\n"
    assert imports(AUDITOR / "scan" / "probe.py", source, runtime_only=True) == {"yumai_audit.fix"}


def test_the_operations_import_no_planner():
    """An operation of fix/ops/ holds what it needs; the planners, the preflight and the lint table use the
    operations, never the other way round."""
    users = {f"yumai_audit.fix.{m}" for m in ("planner", "session_plan", "schema_plan", "users_plan", "preflight",
                                              "lint", "make")}
    wrong = {}
    for path in sorted((AUDITOR / "fix" / "ops").rglob("*.py")):
        bad = _ours(imports(path)) & users
        if bad:
            wrong[path.relative_to(ROOT).as_posix()] = sorted(bad)
    assert wrong == {}

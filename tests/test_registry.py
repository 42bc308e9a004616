"""Every check module is registered, documented, and has a test case."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import yumai_audit.checks as checks_pkg
from yumai_audit.checks import CHECK_IDS, REGISTRY
from yumai_audit.checks.base import Check

TESTS = Path(__file__).parent


def _check_classes_in_modules():
    found = {}
    for info in pkgutil.iter_modules(checks_pkg.__path__):
        module = importlib.import_module(f"yumai_audit.checks.{info.name}")
        for _, obj in inspect.getmembers(module, inspect.isclass):
            # a check declares its id; the kinds in checks/base.py (TableCheck, ...) do not
            if issubclass(obj, Check) and hasattr(obj, "id") and obj.__module__ == module.__name__:
                found[obj.id] = obj
    return found


def test_every_check_module_is_registered():
    assert set(_check_classes_in_modules()) == set(CHECK_IDS)
    assert len(CHECK_IDS) == len(set(CHECK_IDS))


def test_every_check_is_documented():
    for cls in REGISTRY:
        doc = cls.documentation()
        assert "What is wrong" in doc and "Why it matters" in doc and "What the fix does" in doc, cls.id
        assert cls.severity and cls.description


def test_every_check_has_a_test_case():
    text = "\n".join(p.read_text(encoding="utf-8") for p in TESTS.glob("test_*.py") if p.name != Path(__file__).name)
    missing = [cid for cid in CHECK_IDS if f'"{cid}"' not in text]
    assert missing == []

"""The suite's own layout: helpers live in ``tests/support/``, fixtures in ``conftest.py``
files, and no test module imports another test module or a ``conftest``."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_no_test_module_imports_a_test_module_or_a_conftest():
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        for name in imported_modules(path):
            if not name.startswith("tests."):
                continue
            last = name.rsplit(".", 1)[-1]
            if last.startswith("test_") or last == "conftest" or ".conftest." in name:
                offenders.append(f"{path.relative_to(TESTS.parent)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_helpers_live_in_tests_support():
    """Outside tests/support/ a tests module is a test module or a conftest."""
    stray = [str(p.relative_to(TESTS.parent)) for p in TESTS.rglob("*.py")
             if "support" not in p.parts and p.name != "__init__.py"
             and p.name != "conftest.py" and not p.name.startswith("test_")]
    assert not stray, stray


def test_the_check_sees_a_test_module_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from tests.integration.test_runs import make\nimport tests.conftest\n")
    assert {"tests.integration.test_runs", "tests.conftest"} <= imported_modules(module)

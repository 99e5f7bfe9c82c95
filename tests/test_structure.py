"""The test suite's own shape: what two test modules share lives in ``tests/support/``.

No test module (``test_*.py``, ``conftest.py``) is imported by another module of the suite, not
even inside the source of a job module a test writes; pytest alone loads them.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
#: An import of a test module, also when it is written into a string (a generated job module).
IMPORT_IN_TEXT = re.compile(r"(?:^|\n)\s*(?:from|import)\s+(test_\w+|conftest)\b")


def is_test_module(name: str) -> bool:
    """Whether the dotted module name ``name`` is one of the suite's test modules."""
    top = name.split(".")[0]
    return top == "conftest" or top.startswith("test_")


def imported_test_modules(path: Path) -> set[str]:
    """The test modules that the file at ``path`` imports, in code or in the text it writes."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if is_test_module(a.name))
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if is_test_module(node.module):
                found.add(node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.update(IMPORT_IN_TEXT.findall(node.value))
    return found


def test_no_module_of_the_suite_imports_a_test_module() -> None:
    offenders = {str(p.relative_to(TESTS)): sorted(names) for p in sorted(TESTS.rglob("*.py"))
                 if (names := imported_test_modules(p))}
    assert offenders == {}


def test_shared_code_lives_in_support() -> None:
    """Beside the test modules and conftest, ``tests/`` holds only the ``support`` package."""
    strays = sorted(p.name for p in TESTS.glob("*.py")
                    if not p.name.startswith("test_") and p.name != "conftest.py")
    assert strays == []
    assert (TESTS / "support" / "__init__.py").is_file()
    assert sorted(p.name for p in (TESTS / "support").glob("test_*.py")) == []


def test_the_check_sees_an_import_of_a_test_module(tmp_path: Path) -> None:
    hub, conf = "test_" + "hub", "conf" + "test"  # spelled apart: this file imports neither
    bad = tmp_path / "test_bad.py"
    bad.write_text(f"import {hub}\nfrom {conf} import x\nfrom support.remotes import git_out\n"
                   f"JOB = 'import sys\\nfrom {hub} import write_results\\n'\n")
    assert imported_test_modules(bad) == {hub, conf}

"""SPEC section 9 and STYLE 2.1: the layers, enforced by parsing every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["db", "mq", "scheduler", "supervisor", "workers", "mx"]
TOP_MODULES = ["launch", "process_starter", "settings"]

#: What each package may import from the project (besides itself).
#: ``settings`` is a leaf over ``db`` whose frozen Settings is passed explicitly, so every layer
#: above ``db`` may name it.
ALLOWED = {
    "db": set(),
    "mq": {"db"},
    "scheduler": {"db", "mq", "settings"},
    "supervisor": {"db", "mq", "settings"},
    "workers": {"db", "mq", "settings"},
    "mx": {"db", "mq", "settings"},
    "settings": {"db"},
}
PROJECT = set(PACKAGES) | set(TOP_MODULES)
#: The only modules allowed to import inside functions: the factories that load backends lazily.
LAZY_IMPORTERS = {"db/__init__.py", "mq/__init__.py"}


def _modules():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield package, path
    for name in TOP_MODULES:
        yield name, ROOT / f"{name}.py"


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node, node.module.split(".")[0]


@pytest.mark.parametrize(("package", "path"), list(_modules()), ids=lambda v: str(v))
def test_layers_no_forbidden_import(package, path):
    tree = ast.parse(path.read_text())
    allowed = ALLOWED.get(package)
    if allowed is None:  # launch.py and process_starter.py sit on top
        return
    bad = sorted(
        {
            top
            for _, top in _imports(tree)
            if top in PROJECT and top != package and top not in allowed
        }
    )
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}; {package} may use {sorted(allowed)}"


@pytest.mark.parametrize(("package", "path"), list(_modules()), ids=lambda v: str(v))
def test_layers_no_import_inside_functions(package, path):
    rel = str(path.relative_to(ROOT))
    if rel in LAZY_IMPORTERS:
        return
    tree = ast.parse(path.read_text())
    nested = [
        node.lineno
        for func in ast.walk(tree)
        if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(func)
        if isinstance(node, ast.Import | ast.ImportFrom)
    ]
    assert not nested, f"{rel} imports inside functions at lines {nested}"

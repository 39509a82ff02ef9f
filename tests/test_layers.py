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


def _package_of(rel: str) -> list[str]:
    """The package a module's relative imports start from: ``mq/store_queue.py`` -> ``mq``,
    ``db/store/__init__.py`` -> ``db.store``, ``launch.py`` -> the top."""
    parts = rel.removesuffix(".py").split("/")
    return parts[:-1]


def _resolved(package: list[str], level: int, module: str | None) -> list[str]:
    """The absolute name parts of a relative import ``level`` dots up from ``package``; empty
    when it climbs out of the project."""
    if level - 1 > len(package):
        return []
    base = package[: len(package) - (level - 1)]
    return base + (module.split(".") if module else [])


def _literal(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _dynamic(call: ast.Call, package: list[str]) -> list[str] | None:
    """The name parts a literal ``importlib.import_module(...)`` / ``import_module(...)`` /
    ``__import__(...)`` call loads, or None for any other call (or a name not spelled out)."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in ("import_module", "__import__") or not call.args:
        return None
    target = _literal(call.args[0])
    if target is None:
        return None
    keywords = {k.arg: k.value for k in call.keywords}
    if name == "import_module":
        if not target.startswith("."):
            return target.split(".")
        anchor = _literal(call.args[1] if len(call.args) > 1 else keywords.get("package"))
        level = len(target) - len(target.lstrip("."))
        origin = anchor.split(".") if anchor is not None else package
        return _resolved(origin, level, target.lstrip(".") or None)
    level_node = call.args[4] if len(call.args) > 4 else keywords.get("level")
    level = level_node.value if isinstance(level_node, ast.Constant) else 0
    if not isinstance(level, int) or level <= 0:
        return target.split(".")
    return _resolved(package, level, target)


def _imports(tree: ast.AST, rel: str):
    """Each import of a module (absolute, relative, or a literal ``import_module`` /
    ``__import__`` call) with the top-level name it reaches."""
    package = _package_of(rel)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node, node.module.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            parts = _resolved(package, node.level, node.module)
            if parts:
                yield node, parts[0]
            else:  # ``from .. import mx`` at the top names the modules it imports
                for alias in node.names:
                    yield node, alias.name.split(".")[0]
        elif isinstance(node, ast.Call):
            parts = _dynamic(node, package)
            if parts:
                yield node, parts[0]


def forbidden_imports(source: str, rel: str, package: str) -> list[str]:
    """The project's top-level names that ``source`` (the module at ``rel`` in ``package``)
    imports although its layer may not use them, sorted."""
    allowed = ALLOWED.get(package)
    if allowed is None:  # launch.py and process_starter.py sit on top
        return []
    tree = ast.parse(source)
    return sorted(
        {
            top
            for _, top in _imports(tree, rel)
            if top in PROJECT and top != package and top not in allowed
        }
    )


@pytest.mark.parametrize(("package", "path"), list(_modules()), ids=lambda v: str(v))
def test_layers_no_forbidden_import(package, path):
    rel = str(path.relative_to(ROOT))
    bad = forbidden_imports(path.read_text(), rel, package)
    assert not bad, f"{rel} imports {bad}; {package} may use {sorted(ALLOWED[package])}"


@pytest.mark.parametrize(
    ("source", "bad"),
    [
        ("from mx import app\n", ["mx"]),
        ("from ..mx import app\n", ["mx"]),
        ("from .. import mx\n", ["mx"]),
        ("from ..scheduler.service import Scheduler\n", ["scheduler"]),
        ("from . import broker\nfrom .rabbitmq import RabbitBroker\n", []),
        ("from ..db.store import Store\n", []),
        ("import importlib\nimportlib.import_module('mx.app')\n", ["mx"]),
        ("from importlib import import_module\nimport_module('.views', package='mx')\n", ["mx"]),
        ("from importlib import import_module\nimport_module('.rabbitmq', 'mq')\n", []),
        ("__import__('workers.slot')\n", ["workers"]),
        ("__import__('mx', level=2)\n", ["mx"]),
        ("__import__('rabbitmq', level=1)\n", []),
        ("import importlib\nimportlib.import_module(name)\n", []),
    ],
)
def test_layers_checker_catches_relative_and_dynamic_imports(source, bad):
    # given a module of mq/ (which may use db only) importing as ``source`` does
    # when the checker reads it
    found = forbidden_imports(source, "mq/store_queue.py", "mq")
    # then it names exactly the forbidden packages
    assert found == bad


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

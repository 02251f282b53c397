"""The core's layers hold: the import contracts pass, every module imports on its own, no private name crosses modules.

The contracts live in pyproject.toml (`[tool.importlinter]`). A module importing "on its
own" means: in an interpreter where `ptq_core` is a stub package whose `__path__` is the
folder, so `ptq_core/__init__.py` (which imports nearly everything, in an order that can
hide a cycle) never runs first.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

from tests.support.paths import ROOT

PACKAGES = ("ptq_core", "ptq_ui")
NOT_IMPORTED = {"ptq_core.__main__"}  # importing it runs the command line

# For each name: forget every ptq_core module, put a stub parent in place, import the name.
# Third-party modules (torch, ...) stay loaded, so one interpreter checks them all quickly.
_IMPORT_EACH = """
import importlib, sys, types, traceback
folder, names = sys.argv[1], sys.argv[2:]
failed = []
for name in names:
    for key in [k for k in sys.modules if k == "ptq_core" or k.startswith("ptq_core.")]:
        del sys.modules[key]
    stub = types.ModuleType("ptq_core")
    stub.__path__ = [folder]
    sys.modules["ptq_core"] = stub
    try:
        importlib.import_module(name)
        assert not hasattr(sys.modules["ptq_core"], "__version__"), "ptq_core/__init__.py ran"
    except Exception as exc:
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def _module_names(package: str) -> list[str]:
    """Dotted names of every module and subpackage under `package`, from the files."""
    names = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def _import_each(names: list[str]) -> dict[str, str]:
    """Name -> error for the names that fail to import with a stub parent (empty when all import)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH, str(ROOT / "ptq_core"), *names],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=900,
    )
    failures = dict(line.split(": ", 1) for line in res.stdout.splitlines() if ": " in line)
    assert res.returncode == 0 or failures, res.stderr.strip().splitlines()[-3:]
    return failures


MISSING = "ptq_core.no_such_module"  # imported too, so the check shows it can fail
SUBPACKAGES = sorted(f"ptq_core.{p.parent.name}" for p in (ROOT / "ptq_core").glob("*/__init__.py"))
MODULES = [n for n in _module_names("ptq_core") if n != "ptq_core" and n not in NOT_IMPORTED]


@pytest.fixture(scope="module")
def import_failures() -> dict[str, str]:
    """Every core module imported alone (one interpreter, one module at a time: see `_IMPORT_EACH`)."""
    return _import_each([*MODULES, MISSING])


def test_import_contracts_hold():
    """`lint-imports` (the layers and the forbidden app imports of pyproject.toml) reports every contract kept."""
    pytest.importorskip("importlinter", reason="import-linter is not installed (requirements.txt)")
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-1000:]
    assert "0 broken" in res.stdout and " kept" in res.stdout, res.stdout[-1000:]


def test_every_core_module_imports_on_its_own(import_failures):
    assert len(MODULES) > 50 and "ptq_core.recon.engine" in MODULES  # the scan found the tree
    assert {n: e for n, e in import_failures.items() if n != MISSING} == {}


def test_subpackages_import_under_a_stub_parent(import_failures):
    """The review's check: `import ptq_core.recon` etc. without `ptq_core/__init__.py` having run."""
    assert {"ptq_core.recon", "ptq_core.layerwise", "ptq_core.methods", "ptq_core.cat"} <= set(SUBPACKAGES)
    assert set(SUBPACKAGES) <= set(MODULES)
    assert {n: e for n, e in import_failures.items() if n in SUBPACKAGES} == {}


def test_the_import_check_reports_a_failing_import(import_failures):
    """The check itself can fail: a module that does not exist is reported with its error."""
    assert import_failures.get(MISSING, "").startswith("ModuleNotFoundError"), import_failures


def _target(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom reads from."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _core_import_graph() -> dict[str, set[str]]:
    """Core module -> the core modules it imports anywhere (top level, in functions, under TYPE_CHECKING),
    with the packages whose `__init__` such an import runs first."""
    modules = set(_module_names("ptq_core"))
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for path in sorted((ROOT / "ptq_core").rglob("*.py")):
        is_package = path.name == "__init__.py"
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        module = ".".join(parts[:-1] if is_package else parts)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = _target(module, is_package, node)
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                # importing ptq_core.a.b runs ptq_core/a/__init__.py first (the root package is the stub's)
                parents = [".".join(t.split(".")[:i]) for i in range(2, t.count(".") + 1)]
                own = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)}
                graph[module].update(m for m in [*parents, t] if m and m not in own)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of two or more modules that import each other, directly or through others."""
    reach = {m: set() for m in graph}
    for start in graph:
        todo = list(graph[start])
        while todo:
            m = todo.pop()
            if m not in reach[start]:
                reach[start].add(m)
                todo += graph[m]
    groups = {frozenset([m, *(o for o in reach[m] if m in reach[o])]) for m in graph}
    return sorted(sorted(g) for g in groups if len(g) > 1)


def test_no_import_cycle_between_core_modules():
    """Static check: even an import inside a function or under TYPE_CHECKING may not close a loop."""
    graph = _core_import_graph()
    assert "ptq_core.recon.options" in graph["ptq_core.recon.engine"]  # the scan resolves relative imports
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_loop():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def _private_imports(folder: str) -> list[str]:
    """``module <- source.name`` for every private name (``_x``, not dunder) imported from a module of ours."""
    found = []
    paths = [ROOT / folder] if folder.endswith(".py") else sorted((ROOT / folder).rglob("*.py"))
    for path in paths:
        is_package = path.name == "__init__.py"
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        module = ".".join(parts[:-1] if is_package else parts)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = _target(module, is_package, node)
            if source.split(".")[0] not in PACKAGES:
                continue
            found += [
                f"{module} <- {source}.{a.name}"
                for a in node.names
                if a.name.startswith("_") and not a.name.startswith("__")
            ]
    return found


@pytest.mark.parametrize("folder", [*PACKAGES, "pages", "app.py", "tools", "benchmarks", "tests"])
def test_no_module_imports_a_private_name(folder):
    """The app, the tools, the benchmarks and the tests use the core's public names too."""
    assert _private_imports(folder) == []


def test_the_private_name_scan_resolves_relative_imports():
    """`from ..primitives import _x` inside ptq_core/recon/ is seen as ptq_core.primitives._x."""
    node = ast.parse("from ..primitives import _x, y").body[0]
    assert _target("ptq_core.recon.rounding", False, node) == "ptq_core.primitives"
    assert _target("ptq_core.recon", True, node) == "ptq_core.primitives"

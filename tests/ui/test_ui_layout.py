"""The Streamlit side is laid out by role and never computes with torch: checked on the source itself."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UI_FILES = sorted([*ROOT.glob("ptq_ui/**/*.py"), *ROOT.glob("pages/*.py"), ROOT / "app.py"])


def _imports(path: Path) -> set[str]:
    """Every module a file imports (absolute names; relative ones resolved against its package)."""
    out: set[str] = set()
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            out.add(module)
            out |= {f"{module}.{a.name}" for a in node.names}
    return out


def _uses(path: Path, attr: str) -> bool:
    """Whether the code (not its docstrings) of a file reads `st.<attr>`."""
    tree = ast.parse(path.read_text(), str(path))
    return any(
        isinstance(n, ast.Attribute) and n.attr == attr and isinstance(n.value, ast.Name) and n.value.id == "st"
        for n in ast.walk(tree)
    )


def _has_constant(path: Path, value: str) -> bool:
    return any(isinstance(n, ast.Constant) and n.value == value for n in ast.walk(ast.parse(path.read_text())))


def test_the_ui_files_are_found():
    assert len(UI_FILES) > 20 and ROOT / "ptq_ui/resources.py" in UI_FILES


def test_no_ui_file_imports_torch():
    offenders = {
        str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if m.split(".")[0] == "torch") for p in UI_FILES
    }
    assert {p: m for p, m in offenders.items() if m} == {}


def test_cache_resource_lives_only_in_resources():
    users = [str(p.relative_to(ROOT)) for p in UI_FILES if _uses(p, "cache_resource")]
    assert users == ["ptq_ui/resources.py"]


def test_cache_data_doors_live_in_services():
    users = {str(p.relative_to(ROOT)) for p in UI_FILES if _uses(p, "cache_data")}
    assert users and all(u.startswith("ptq_ui/services/") for u in users), users


def test_the_plotly_config_is_set_once():
    users = [str(p.relative_to(ROOT)) for p in UI_FILES if _has_constant(p, "displaylogo")]
    assert users == ["ptq_ui/charts/base.py"]


def test_pages_reach_the_core_only_through_the_ui_package():
    for page in sorted(ROOT.glob("pages/*.py")):
        core = sorted(m for m in _imports(page) if m.split(".")[0] == "ptq_core")
        assert core == [], (page.name, core)


def test_the_core_never_imports_the_ui():
    for path in sorted(ROOT.glob("ptq_core/**/*.py")):
        assert not any(m.split(".")[0] in ("ptq_ui", "streamlit") for m in _imports(path)), path


def test_the_package_says_how_to_add_a_page_in_four_steps():
    import ptq_ui

    doc = ptq_ui.__doc__ or ""
    recipe = doc[doc.index("How to add a page") :]
    steps = [line for line in recipe.splitlines() if line[:2] in {f"{i}." for i in range(1, 10)}]
    assert [s[:2] for s in steps] == ["1.", "2.", "3.", "4."]

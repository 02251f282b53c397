"""Every subpackage of the core imports on its own: no import cycle hidden by import order."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.paths import ROOT

SUBPACKAGES = sorted(p.parent.name for p in (ROOT / "ptq_core").glob("*/__init__.py"))


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_subpackage_imports_alone(name):
    """A stub parent package, so nothing `ptq_core/__init__.py` imports first can hide a cycle."""
    code = (
        "import sys, types; p = types.ModuleType('ptq_core'); p.__path__ = [sys.argv[1]]; "
        f"sys.modules['ptq_core'] = p; import ptq_core.{name}"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "ptq_core")], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr.strip().splitlines()[-1:]


def test_the_core_never_imports_the_app_libraries():
    for path in (ROOT / "ptq_core").rglob("*.py"):
        text = path.read_text()
        for lib in ("streamlit", "plotly"):
            assert f"import {lib}" not in text and f"from {lib}" not in text, (path, lib)

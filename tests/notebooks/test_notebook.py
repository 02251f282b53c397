"""The tutorial notebook runs top to bottom (its cells assert the properties they teach)."""

from __future__ import annotations

import os

import pytest

from tests.support.paths import ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = ROOT / "notebooks" / "tutorial.ipynb"


def test_tutorial_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("PTQ_EXPLORER_HOME", str(tmp_path / "store"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "lp_search (p=2)" in text and "AdaRound" in text and "with CAT" in text and "RTN W4A4 top-1" in text

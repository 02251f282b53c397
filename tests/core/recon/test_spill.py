"""Unit caches under a memory budget: tiers, disk files cleaned up, results unchanged by spilling."""

from __future__ import annotations

import copy
import os
import tempfile

import pytest
import torch

from ptq_core import QuantSpec, RunCancelled, quantize
from ptq_core.methods import PDQuantConfig, QDropConfig
from ptq_core.recon.spill import SpillArea, TieredStore
from ptq_core.zoo import ResNetCifar
from tests.support.helpers import randomize_bn

W2 = QuantSpec(wbits=2, abits=8)
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _private_tmp(tmp_path, monkeypatch):
    """Spill files go under a fresh TMPDIR, so the test can see what is left there."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    torch.set_num_threads(1)


def _spill_dirs(root) -> list[str]:
    return [p.name for p in root.iterdir() if p.name.startswith("ptq-cache-")]


def _model() -> torch.nn.Module:
    torch.manual_seed(1)
    return randomize_bn(ResNetCifar(depth=8), seed=1)


def _calib(n: int = 48) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def test_store_fills_memory_then_disk_and_leaves_no_file(tmp_path):
    area = SpillArea()
    store = TieredStore(CPU, CPU, budget=1000, area=area)
    a = store.empty((100,), torch.float32)  # 400 B: memory
    b = store.hold(torch.arange(200.0))  # 800 B: over the budget -> disk
    c = store.empty((150,), torch.float32)  # 600 B: fits next to a
    assert store.used == {"device": 0, "host": 1000, "disk": 800}
    assert store.on_disk == store.spilled == 800 and store.describe() == "cpu+disk"
    assert torch.equal(b, torch.arange(200.0)) and b[torch.tensor([7, 199])].tolist() == [7.0, 199.0]
    assert a.shape == (100,) and c.shape == (150,)
    assert area.path is not None and os.listdir(area.path) == []  # mapped files are unlinked at once
    area.close()
    assert list(tmp_path.iterdir()) == [] and float(b.sum()) == 199 * 200 / 2  # data still readable


def test_no_budget_keeps_everything_in_memory():
    store = TieredStore(CPU, CPU, budget=0, area=SpillArea())
    x = torch.ones(10)
    assert store.hold(x).data_ptr() == x.data_ptr() and store.spilled == 0 and store.describe() == "cpu"


@pytest.mark.parametrize("cls, extra", [(QDropConfig, {}), (PDQuantConfig, {"dc_steps": 5})], ids=["qdrop", "pdquant"])
def test_spilling_to_disk_changes_no_weight_or_output(cls, extra, tmp_path):
    model, calib = _model(), _calib()
    runs = {}
    for budget in (0.0, 0.02):  # 0.02 MB = 20 KB: the larger cached tensors of every unit spill
        config = cls(quant=W2, iters=6, calib=48, seed=3, cache_budget_mb=budget, **extra)
        runs[budget] = quantize(copy.deepcopy(model), calib, config)
    full, spilled = runs[0.0], runs[0.02]
    sd_full, sd_spill = full.model.state_dict(), spilled.model.state_dict()
    assert sd_full.keys() == sd_spill.keys()
    assert all(torch.equal(sd_full[k], sd_spill[k]) for k in sd_full)
    with torch.no_grad():
        assert torch.equal(full.model(calib), spilled.model(calib))
    rec_full, rec_spill = full.extras["recon"], spilled.extras["recon"]
    assert rec_full["disk_mb"] == 0 and rec_spill["disk_mb"] > 0 and rec_spill["spilled_mb"] == rec_spill["disk_mb"]
    assert any("disk" in u["cache_store"] for u in rec_spill["units"])
    assert [u["history"] for u in rec_full["units"]] == [u["history"] for u in rec_spill["units"]]
    assert _spill_dirs(tmp_path) == []  # the spill directory is gone after the run


def test_cancelled_run_leaves_no_spill_directory(tmp_path):
    def progress(ev):
        if ev.stage == "reconstruct":
            raise RunCancelled("stop")

    config = QDropConfig(quant=W2, iters=4, calib=32, progress_every=1, cache_budget_mb=0.001)
    with pytest.raises(RunCancelled):
        quantize(_model(), _calib(32), config, progress)
    assert _spill_dirs(tmp_path) == []


def test_budget_must_not_be_negative():
    from ptq_core.errors import ConfigError

    with pytest.raises(ConfigError, match="cache_budget_mb"):
        QDropConfig(cache_budget_mb=-1)

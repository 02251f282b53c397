"""Bad input gets a clear error and leaves the run store intact."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from ptq_core import RTNConfig, RunSpec, RunStore, run_quantization
from ptq_core.checkpoints import save_state_dict
from ptq_core.errors import (
    BitWidthError,
    CheckpointError,
    DataError,
    ModelNotFoundError,
    NonFiniteError,
    UnsafeCheckpointError,
)
from ptq_core.prepare import QuantSpec
from ptq_core.zoo import resnet20

CFG = RTNConfig(quant=QuantSpec(wbits=8, abits=8, w_observer="minmax", a_observer="minmax"), calib=32)


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['PTQ_EVIL_MARKER']}",))


@pytest.fixture
def store(store_home):
    s = RunStore()
    s.finish(s.start("earlier", "rtn", 4, 4, {"x": 1}), {"top1": 90.0}, [{"name": "a"}], {"total": 1.0})
    return s


def _snapshot(store: RunStore) -> list[dict]:
    return [r.to_dict() for r in store.list(status="done")]


def _run(store: RunStore, **kw):
    spec = RunSpec(
        model=kw.pop("model", "fmnist-resnet20"), method=kw.pop("config", CFG), device="cpu", eval_limit=64, **kw
    )
    return run_quantization(spec, store=store)


def _assert_intact(store: RunStore, before: list[dict], failed: int = 1) -> None:
    assert _snapshot(store) == before
    assert len(store.list(status="failed")) == failed


def test_unknown_model(store):
    before = _snapshot(store)
    with pytest.raises(ModelNotFoundError, match="unknown model"):
        _run(store, model="resnet1000")
    _assert_intact(store, before)


def test_corrupt_checkpoint(store, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    before = _snapshot(store)
    with pytest.raises(CheckpointError, match="bad.pt"):
        _run(store, weights=str(bad))
    _assert_intact(store, before)


def test_malicious_pickle_is_refused_and_never_runs(store, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("PTQ_EVIL_MARKER", str(marker))
    for i, writer in enumerate((lambda p: torch.save(Evil(), p), lambda p: p.write_bytes(pickle.dumps(Evil())))):
        evil = tmp_path / f"evil{i}.pt"
        writer(evil)
        before = _snapshot(store)
        with pytest.raises(UnsafeCheckpointError, match="system"):
            _run(store, weights=str(evil))
        _assert_intact(store, before, failed=i + 1)
    assert not marker.exists()


def test_nan_weights_are_refused_naming_the_layer(store, tmp_path):
    model = resnet20()
    with torch.no_grad():
        model.layer2[1].conv1.weight[0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_state_dict(model, path)
    before = _snapshot(store)
    with pytest.raises(NonFiniteError, match=r"layer2\.1\.conv1\.weight"):
        _run(store, weights=str(path))
    _assert_intact(store, before)


def test_shape_mismatch_reports_a_table(store, tmp_path):
    sd = resnet20().state_dict()
    sd["fc.weight"] = torch.zeros(5, 64)
    path = tmp_path / "shape.safetensors"
    save_state_dict(sd, path)
    with pytest.raises(CheckpointError, match="fc.weight"):
        _run(store, weights=str(path))


def test_empty_image_folder(store, tmp_path):
    empty = tmp_path / "images"
    (empty / "cat").mkdir(parents=True)
    before = _snapshot(store)
    with pytest.raises(DataError, match="no images|holds 0"):
        _run(store, data=f"imagefolder:{empty}")
    _assert_intact(store, before)


@pytest.mark.parametrize("bits", [1, 9])
def test_bits_out_of_range(bits):
    with pytest.raises(BitWidthError, match=f"bit-width {bits} is out of range"):
        QuantSpec(wbits=bits)

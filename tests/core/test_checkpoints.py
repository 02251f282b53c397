"""Tests for ptq_core.checkpoints: safe loading, checking and saving of weights."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from ptq_core.checkpoints import (
    apply_state_dict,
    check_finite,
    file_sha256,
    load_factory,
    load_state_dict,
    save_state_dict,
)
from ptq_core.errors import CheckpointError, ConfigError, NonFiniteError, UnsafeCheckpointError


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)
        self.fc = nn.Linear(8, 3)


class Evil:
    """A pickle payload that would create a marker file when unpickled."""

    marker = ""

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def _evil(marker: Path) -> Evil:
    evil = Evil()
    evil.marker = str(marker)
    return evil


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_safetensors_round_trip_from_path_and_bytes(tmp_path: Path) -> None:
    model = TinyNet()
    path = save_state_dict(model, tmp_path / "w.bin")  # content decides, not the extension
    _assert_same(load_state_dict(path), model.state_dict())
    _assert_same(load_state_dict(path.read_bytes(), name="up.safetensors"), model.state_dict())
    assert len(file_sha256(path)) == 64


def test_save_handles_shared_tensors(tmp_path: Path) -> None:
    weight = torch.randn(4, 4)
    sd = {"a": weight, "b": weight, "c": weight.t(), "d": weight[1:]}
    loaded = load_state_dict(save_state_dict(sd, tmp_path / "tied.safetensors"))
    _assert_same(loaded, {k: v.contiguous() for k, v in sd.items()})


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy"])
def test_torch_round_trip_unwraps_and_strips_module_prefix(tmp_path: Path, zipfile: bool) -> None:
    sd = TinyNet().state_dict()
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}
    path = tmp_path / "ckpt.pt"
    torch.save(wrapped, path, _use_new_zipfile_serialization=zipfile)
    _assert_same(load_state_dict(path), sd)
    torch.save({"model": sd}, path, _use_new_zipfile_serialization=zipfile)
    _assert_same(load_state_dict(path.read_bytes()), sd)


def test_full_module_pickle_is_refused_naming_the_class(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(nn.Sequential(nn.Conv2d(1, 2, 3)), path)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_state_dict(path)
    message = str(info.value)
    assert message.startswith("refused to load model.pt")
    assert "torch.nn.modules.conv.Conv2d" in message and "state_dict" in message


@pytest.mark.parametrize("kind", ["torch_zip", "torch_legacy", "raw_pickle"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    if kind == "raw_pickle":
        path.write_bytes(pickle.dumps(_evil(marker)))
    else:
        torch.save(_evil(marker), path, _use_new_zipfile_serialization=kind == "torch_zip")
    for source in (path, path.read_bytes()):
        with pytest.raises(UnsafeCheckpointError, match=r"needs code to load \(.*system"):
            load_state_dict(source)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage that is not a checkpoint", b"PK\x03\x04broken zip", b"\x80\x02\x8a"],
    ids=["empty", "garbage", "bad-zip", "bad-pickle"],
)
def test_corrupt_files_name_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="broken.pt") as info:
        load_state_dict(path)
    assert not isinstance(info.value, UnsafeCheckpointError)


@pytest.mark.parametrize("fmt", ["safetensors", "zip", "legacy"])
def test_truncated_files_name_the_file(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "full.pt"
    sd = {"w": torch.randn(64, 64)}
    if fmt == "safetensors":
        save_state_dict(sd, path)
    else:
        torch.save(sd, path, _use_new_zipfile_serialization=fmt == "zip")
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_state_dict(tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="upload"):
        load_state_dict(data[: len(data) // 2])


def test_missing_file_and_non_tensor_content(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nope.pt"):
        load_state_dict(tmp_path / "nope.pt")
    torch.save({"w": 1.0, "name": "x"}, tmp_path / "scalars.pt")
    with pytest.raises(CheckpointError, match="scalars.pt does not hold a state_dict"):
        load_state_dict(tmp_path / "scalars.pt")


def test_check_finite_names_the_key() -> None:
    check_finite({"ok": torch.ones(3), "steps": torch.tensor(3)})
    bad = torch.zeros(10)
    bad[2], bad[5] = float("nan"), float("inf")
    with pytest.raises(NonFiniteError, match=r"'fc.weight' has 2 non-finite"):
        check_finite({"ok": torch.ones(2), "fc.weight": bad})


def test_shape_mismatch_gives_table_and_leaves_model_unchanged() -> None:
    model = TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sd = {k: torch.zeros_like(v) for k, v in before.items()}
    sd["fc.weight"] = torch.zeros(3, 9)
    del sd["conv.bias"]
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        apply_state_dict(model, sd)
    lines = str(info.value).splitlines()
    assert "1 missing, 1 unexpected, 1 shape mismatch" in lines[0]
    assert lines[1].split() == ["key", "expected", "shape", "found", "shape", "problem"]
    assert any("fc.weight" in ln and "(3, 8)" in ln and "(3, 9)" in ln for ln in lines)
    assert any("conv.bias" in ln and "missing" in ln for ln in lines)
    assert any("extra.weight" in ln and "unexpected" in ln for ln in lines)
    _assert_same(model.state_dict(), before)


def test_apply_refuses_nan_and_loads_good_weights() -> None:
    model, source = TinyNet(), TinyNet()
    sd = {k: v.clone() for k, v in source.state_dict().items()}
    sd["fc.bias"][0] = float("nan")
    with pytest.raises(NonFiniteError, match="fc.bias"):
        apply_state_dict(model, sd)
    apply_state_dict(model, source.state_dict())
    _assert_same(model.state_dict(), source.state_dict())


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_versioned_torchvision_modules_load_from_any_file(tmp_path: Path, fmt: str) -> None:
    """MNASNet checks its module version on load; a file without versions (safetensors) must still load."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    source, model = torchvision.models.mnasnet0_5(weights=None), torchvision.models.mnasnet0_5(weights=None)
    path = tmp_path / f"mnasnet.{fmt}"
    save_state_dict(source.state_dict(), path)
    apply_state_dict(model, load_state_dict(path))
    _assert_same(model.state_dict(), source.state_dict())


FACTORY_FILE = """
import torch.nn as nn

def build():
    return nn.Linear(2, 3)

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 1)

def not_a_model():
    return 42

def needs_args(width):
    return nn.Linear(width, 1)
"""


def test_load_factory(tmp_path: Path) -> None:
    path = tmp_path / "my_models.py"
    path.write_text(FACTORY_FILE)
    assert isinstance(load_factory(f"{path}:build")(), nn.Linear)
    assert isinstance(load_factory(f"{path}:Net")().fc, nn.Linear)
    with pytest.raises(ConfigError, match="not an nn.Module"):
        load_factory(f"{path}:not_a_model")()
    with pytest.raises(ConfigError, match="no arguments"):
        load_factory(f"{path}:needs_args")
    with pytest.raises(ConfigError, match="no function or class named 'missing'"):
        load_factory(f"{path}:missing")
    with pytest.raises(ConfigError, match="does not exist"):
        load_factory(f"{tmp_path / 'nope.py'}:build")
    for bad in (str(path), f"{path}:", ":build", f"{path}:not-a-name"):
        with pytest.raises(ConfigError, match="path/to/file.py:name"):
            load_factory(bad)
    (tmp_path / "broken.py").write_text("raise RuntimeError('bad import')\n")
    with pytest.raises(ConfigError, match="importing .*broken.py failed"):
        load_factory(f"{tmp_path / 'broken.py'}:build")

"""Export of a stored run: it is rebuilt from its description, must reproduce its top-1, and is checked."""

from __future__ import annotations

import json

import pytest

from ptq_core.errors import ConfigError
from ptq_core.pipeline import run_quantization
from ptq_core.rebuild import rebuild_run
from ptq_core.run_export import write_artifact
from ptq_core.spec import RunSpec, make_config
from ptq_core.store import RunStore

SPEC = RunSpec(
    model="fmnist-resnet20",
    device="cpu",
    eval_limit=200,
    error_samples=32,
    method=make_config(
        "rtn",
        wbits=4,
        abits=4,
        calib=32,
        w_observer="minmax",
        a_observer="minmax",
        overrides={"layer3.*": {"wbits": 8, "abits": 8}},
    ),
)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("store") / "runs.sqlite")
    record, _ = run_quantization(SPEC, store)
    return store, record


def test_a_stored_run_exports_to_all_three_forms_and_agrees(stored, tmp_path):
    _store, record = stored
    rebuilt = rebuild_run(record)
    assert rebuilt.reproduced and rebuilt.result.metrics["top1"] == record.metrics["top1"]
    onnx = write_artifact(rebuilt, "onnx", tmp_path / "m.onnx")
    assert onnx.passed, onnx.checks
    assert onnx.checks["onnxruntime top-1"] == pytest.approx(record.metrics["top1"], abs=100 / 200)
    assert onnx.checks["test images"] == 200
    assert write_artifact(rebuilt, "int", tmp_path / "m.int.safetensors").passed
    enc = write_artifact(rebuilt, "encodings", tmp_path / "m.json")
    layers = {e["name"]: e for e in json.loads((tmp_path / "m.json").read_text())}
    assert enc.passed and layers["layer3.0.conv1"]["weight"]["bits"] == 8
    assert layers["layer1.0.conv1"]["weight"]["bits"] == 4


def test_a_run_that_does_not_reproduce_is_not_exported(stored, tmp_path):
    store, record = stored
    record.metrics["top1"] += 1.0  # as if the stored number came from other software
    with pytest.raises(ConfigError, match="nothing was exported"):
        rebuild_run(record)
    legacy = store.get(store.start("fmnist-resnet20", "rtn", 4, 4, {"calib": 32}))
    store.finish(legacy.run_id, {"top1": 50.0}, [], {})
    with pytest.raises(ConfigError, match="before runs kept their description"):
        rebuild_run(store.get(legacy.run_id))

"""Model zoo, torchvision loading offline, bring-your-own models, and the data sets."""

from __future__ import annotations

import json

import pytest
import torch

from ptq_core import calibration_tensor, load_data, load_model
from ptq_core.checkpoints import save_state_dict
from ptq_core.data import ASSETS_DIR, DEBIAN_DIR, load_fashion_mnist, make_loader
from ptq_core.errors import ConfigError, DataError, WeightsUnavailableError
from ptq_core.metrics import evaluate
from ptq_core.models import list_models, resolve_device, zoo_checkpoint
from ptq_core.zoo import ZOO_ARCHS

FLOOR = {
    "fmnist-resnet20": 92.0,
    "fmnist-mobilenetv2": 91.0,
    "fmnist-repvgg": 92.0,
    "fmnist-vit": 88.0,
    "fmnist-resnet18": 92.0,
}


@pytest.mark.parametrize("name", list(ZOO_ARCHS))
def test_zoo_checkpoint_measures_its_card_and_the_floor(name, fmnist):
    """The shipped checkpoint, evaluated here on the embedded 10k test split: its card's top-1, above the floor."""
    if not zoo_checkpoint(name):
        pytest.skip(f"{name} has no checkpoint in assets/ yet (tools/train_zoo.py writes it)")
    card = json.loads((ASSETS_DIR / f"{name}.json").read_text())
    assert {"architecture", "recipe", "parameters", "dataset"} <= set(card)
    loaded = load_model(name)
    assert sum(p.numel() for p in loaded.model.parameters()) == card["parameters"]
    test = fmnist.test if loaded.transform is None else load_data("fmnist-sample", loaded.transform).test
    acc = evaluate(loaded.model, make_loader(test))["top1"]
    assert acc == pytest.approx(card["fp_top1"], abs=0.01)
    assert acc >= FLOOR[name]


def test_repvgg_both_forms_agree(fmnist):
    x = fmnist.test.tensors[0][:64]
    train_form, deploy_form = load_model("fmnist-repvgg").model, load_model("fmnist-repvgg-deploy").model
    assert any(hasattr(m, "bn_id") for m in train_form.modules())
    with torch.no_grad():
        assert torch.allclose(train_form(x), deploy_form(x), atol=1e-4)


def test_embedded_data_shapes(fmnist):
    assert len(fmnist.calib) >= 2048 and len(fmnist.test) == 10_000
    x, y = fmnist.test[0]
    assert x.shape == (1, 28, 28) and 0 <= int(y) < 10
    calib = calibration_tensor(fmnist, 1024, seed=1)
    assert calib.shape == (1024, 1, 28, 28)
    assert torch.equal(calib, calibration_tensor(fmnist, 1024, seed=1))


@pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_full_fashion_mnist_from_debian():
    full = load_fashion_mnist(calib_size=512)
    assert len(full.test) == 10_000 and len(full.calib) == 512 and "Debian" in full.source


def test_unknown_data_spec():
    with pytest.raises(DataError, match="unknown data set"):
        load_data("cifar-1000")


def test_list_models_reports_status():
    entries = {e.name: e for e in list_models()}
    assert entries["fmnist-resnet20"].status == "ready"
    assert entries["resnet18"].source == "torchvision"
    assert entries["resnet18"].status in ("cached", "not cached")


def test_torchvision_offline_error_names_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # nothing cached here

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailableError, match=r"resnet18-.*\.pth"):
        load_model("resnet18")


def test_bring_your_own_model_from_a_file(tmp_path):
    src = tmp_path / "mynet.py"
    src.write_text(
        "import torch.nn as nn\n\ndef build():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n"
    )
    import torch.nn as nn

    ref = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    save_state_dict(ref, tmp_path / "w.safetensors")
    loaded = load_model(f"{src}:build", weights=str(tmp_path / "w.safetensors"))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), ref(x))
    with pytest.raises(WeightsUnavailableError, match="needs a weights file"):
        load_model(f"{src}:build")


def test_zoo_architecture_with_user_weights(tmp_path):
    model = ZOO_ARCHS["fmnist-resnet20"]()
    save_state_dict(model, tmp_path / "mine.safetensors")
    loaded = load_model("fmnist-resnet20", weights=str(tmp_path / "mine.safetensors"))
    assert torch.equal(loaded.model.fc.weight, model.fc.weight)


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ConfigError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no GPU"):
            resolve_device("cuda")


def test_imagefolder_with_a_torchvision_model_and_its_transforms(tmp_path, store_home):
    """An ImageNet-style folder feeds a torchvision model through the weights' own transforms."""
    import numpy as np
    import torchvision
    from PIL import Image

    from ptq_core import QuantSpec, RTNConfig, RunSpec, run_quantization

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "imgs" / cls / f"{i}.png")
    net = torchvision.models.get_model("mobilenet_v2", weights=None, num_classes=1000)
    save_state_dict(net, tmp_path / "w.safetensors")
    cfg = RTNConfig(quant=QuantSpec(wbits=8, abits=8, w_observer="minmax", a_observer="minmax"), calib=4, batch_size=4)
    spec = RunSpec(
        model="mobilenet_v2",
        method=cfg,
        data=f"imagefolder:{tmp_path / 'imgs'}",
        device="cpu",
        weights=str(tmp_path / "w.safetensors"),
    )
    res, _ = run_quantization(spec)
    assert res.metrics["eval_samples"] == 4 and res.extras["data"]["calib"] == 4
    assert len(res.layers) == 53

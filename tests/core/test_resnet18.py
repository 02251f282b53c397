"""The zoo's real-size network: torchvision ResNet-18 on Fashion-MNIST at 3x64x64 (small subsets only)."""

from __future__ import annotations

import json

import pytest
import torch

from ptq_core import QuantSpec, RTNConfig, calibration_tensor, load_data, load_model, quantize
from ptq_core.data import ASSETS_DIR, make_loader
from ptq_core.errors import DataError
from ptq_core.metrics import evaluate
from ptq_core.models import check_model_data, zoo_checkpoint

NAME = "fmnist-resnet18"
SUBSET = 500


@pytest.fixture(scope="module")
def resnet18():
    return load_model(NAME)


@pytest.fixture(scope="module")
def data(resnet18):
    return load_data("fmnist-sample", resnet18.transform)


def test_it_is_torchvisions_resnet18_stored_small():
    import torchvision

    card = json.loads((ASSETS_DIR / f"{NAME}.json").read_text())
    reference = torchvision.models.resnet18(num_classes=10)
    assert card["parameters"] == sum(p.numel() for p in reference.parameters())
    assert sum(f.stat().st_size for f in zoo_checkpoint(NAME)) < 25 * 2**20
    assert card["fp_top1"] >= 92.0


def test_the_data_is_resized_for_it_and_refused_without(resnet18, data):
    x, _ = data.test[0]
    assert x.shape == (3, 64, 64) and torch.equal(x[0], x[2])
    check_model_data(resnet18, data)
    with pytest.raises(DataError, match="cannot take the images"):
        check_model_data(resnet18, load_data("fmnist-sample"))


def test_float_and_w8a8_on_a_subset(resnet18, data):
    loader = make_loader(data.test, limit=SUBSET)
    calib = calibration_tensor(data, 64)

    def rtn_top1(bits: int) -> float:  # min-max ranges: the MSE search over 11 M weights is not what this checks
        spec = QuantSpec(wbits=bits, abits=bits, w_observer="minmax", a_observer="minmax")
        return evaluate(quantize(resnet18.model, calib, RTNConfig(quant=spec, calib=64)).model, loader)["top1"]

    fp, w8a8, w2a2 = evaluate(resnet18.model, loader)["top1"], rtn_top1(8), rtn_top1(2)
    assert fp >= 90.0, f"float top-1 {fp:.2f} on the first {SUBSET} test images"
    assert abs(fp - w8a8) <= 1.0 and w2a2 < fp - 5.0, (fp, w8a8, w2a2)

"""Reconstruction units for the zoo and torchvision architectures."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import resnet

from ptq_core import QuantSpec, prepare, quant_layers, reconstruction_units
from ptq_core.zoo import ZOO_ARCHS, ZOO_INPUTS, BasicBlock, EncoderBlock, InvertedResidual, RepVGGBlock
from tests.support.helpers import TinyResNet, randomize_bn

EXPECTED = {  # the block class each zoo model is built from, the kind of its first unit, the block type shown
    "fmnist-resnet20": (BasicBlock, "stem", "residual block"),
    "fmnist-mobilenetv2": (InvertedResidual, "stem", "inverted residual"),
    "fmnist-repvgg": (RepVGGBlock, "block", "RepVGG block"),
    "fmnist-vit": (EncoderBlock, "stem", "transformer encoder block"),
    "fmnist-resnet18": (resnet.BasicBlock, "stem", "residual block"),
}


def _units(model, x):
    qmodel, _ = prepare(randomize_bn(model), QuantSpec(), x)
    return qmodel, reconstruction_units(qmodel, x[:2])


def _expected_count(model: nn.Module, block: type[nn.Module]) -> int:
    """One unit per block, plus one per conv/linear layer outside every block (read off the float model)."""
    blocks = [name for name, m in model.named_modules() if isinstance(m, block)]
    loose = [
        name
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not any(name.startswith(b + ".") for b in blocks)
    ]
    return len(blocks) + len(loose)


@pytest.mark.parametrize("arch", list(ZOO_ARCHS))
def test_zoo_units(arch):
    model = ZOO_ARCHS[arch]()
    block, first, block_type = EXPECTED[arch]
    n = _expected_count(model, block)
    qmodel, units = _units(model, torch.randn(2, *ZOO_INPUTS.get(arch, (1, 28, 28))))
    assert (len(units), units[0].kind, units[-1].kind) == (n, first, "head")
    assert sum(u.block_type == block_type for u in units) == sum(isinstance(m, block) for m in model.modules())
    covered = [name for u in units for name in u.layers]
    assert sorted(covered) == sorted(name for name, _ in quant_layers(qmodel))  # each layer exactly once


def test_model_without_known_blocks_falls_back_to_layers():
    _, units = _units(TinyResNet(), TinyResNet.example_inputs())
    assert [u.kind for u in units] == ["stem", "layer", "layer", "head"]


TV = [
    ("resnet18", "residual block", 64),
    ("mobilenet_v2", "inverted residual", 64),
    ("regnet_x_400mf", "RegNet block", 64),
    ("mnasnet1_0", "MnasNet block", 64),
]


@pytest.mark.parametrize("name,block,size", TV)
def test_torchvision_cnns_prepare_fold_and_split(name, block, size):
    import torchvision

    model = randomize_bn(torchvision.models.get_model(name, weights=None))
    x = torch.randn(2, 3, size, size)
    qmodel, report = prepare(model, QuantSpec(), x)
    assert report.unsupported == []
    from ptq_core.modules import set_quant_state

    set_quant_state(qmodel, False, False)
    with torch.no_grad():
        ref, out = model(x), qmodel(x)
    assert (ref - out).abs().max() < 1e-4 * max(1.0, ref.abs().max().item())
    units = reconstruction_units(qmodel, x)
    assert units[0].kind == "stem" and units[-1].kind == "head"
    assert sum(u.block_type == block for u in units) >= 4


def test_torchvision_vit_attention_is_decomposed_and_split():
    import torchvision

    model = torchvision.models.vit_b_16(weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    qmodel, report = prepare(model, QuantSpec(), x)
    assert len(report.decomposed_attention) == 12 and report.unsupported == []
    assert "encoder.pos_embedding" in report.float_params and "class_token" in report.float_params
    from ptq_core.modules import set_quant_state

    set_quant_state(qmodel, False, False)
    with torch.no_grad():
        assert torch.allclose(model(x), qmodel(x), atol=1e-4)
    units = reconstruction_units(qmodel, x)
    assert sum(u.block_type == "transformer encoder block" for u in units) == 12

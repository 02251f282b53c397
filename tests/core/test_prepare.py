"""Model preparation: BN folding, bit policy, overrides, unsupported layers, attention."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ptq_core import ConfigError, NonFiniteError, QuantConv2d, QuantLinear, QuantSpec, prepare, quant_layers
from ptq_core.attention import DecomposedAttention
from ptq_core.modules import set_quant_state
from ptq_core.zoo import ZOO_ARCHS, zoo_input
from tests.support.helpers import TinyResNet, randomize_bn


@pytest.mark.parametrize("arch", list(ZOO_ARCHS))
def test_bn_folding_keeps_outputs(arch):
    model = randomize_bn(ZOO_ARCHS[arch]())
    x = torch.randn(4, *zoo_input(arch))
    qmodel, report = prepare(model, QuantSpec(), x)
    set_quant_state(qmodel, False, False)
    with torch.no_grad():
        diff = (qmodel(x) - model(x)).abs().max().item()
    assert diff < 1e-5
    assert not any(isinstance(m, nn.BatchNorm2d) for m in qmodel.modules()) or arch == "fmnist-repvgg"
    assert report.unsupported == []


def test_prepare_leaves_the_input_model_alone():
    model = randomize_bn(TinyResNet())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prepare(model, QuantSpec(), TinyResNet.example_inputs())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_first_and_last_layers_are_8_bit_by_default():
    _, report = prepare(randomize_bn(TinyResNet()), QuantSpec(wbits=2, abits=4), TinyResNet.example_inputs())
    bits = {info.name: (info.wbits, info.abits, info.role) for info in report.layers}
    assert bits["conv1"] == (8, 8, "first")
    assert bits["fc"] == (8, 8, "last")
    assert bits["conv2"] == (2, 4, "")


def test_first_last_policy_off_and_overrides():
    spec = QuantSpec(wbits=4, abits=4, first_last_bits=None, overrides={"conv[23]": {"wbits": 8}})
    _, report = prepare(randomize_bn(TinyResNet()), spec, TinyResNet.example_inputs())
    bits = {info.name: (info.wbits, info.abits) for info in report.layers}
    assert bits == {"conv1": (4, 4), "conv2": (8, 4), "conv3": (8, 4), "fc": (4, 4)}


def test_override_matching_nothing_is_an_error():
    with pytest.raises(ConfigError, match="match no quantizable layer"):
        prepare(TinyResNet(), QuantSpec(overrides={"nope.*": {"wbits": 8}}), TinyResNet.example_inputs())


def test_layers_become_quant_modules_in_execution_order():
    qmodel, report = prepare(randomize_bn(TinyResNet()), QuantSpec(), TinyResNet.example_inputs())
    assert [i.name for i in report.layers] == ["conv1", "conv2", "conv3", "fc"]
    kinds = {n: type(m) for n, m in quant_layers(qmodel)}
    assert kinds["conv1"] is QuantConv2d and kinds["fc"] is QuantLinear


class WithUnsupported(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.seq = nn.Conv1d(4, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x).flatten(2)  # (B, 4, L)
        return self.fc(self.seq(x).mean(2))


def test_unsupported_layer_is_named_and_left_in_float():
    model = WithUnsupported().eval()
    x = torch.randn(2, 1, 8, 8)
    qmodel, report = prepare(model, QuantSpec(), x)
    assert report.unsupported == [("seq", "Conv1d")]
    assert type(qmodel.seq) is nn.Conv1d and torch.equal(qmodel.seq.weight, model.seq.weight)
    assert {i.name for i in report.layers} == {"conv", "fc"}


def test_nan_weights_are_refused_naming_the_layer():
    model = TinyResNet()
    with torch.no_grad():
        model.conv2.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="conv2.weight"):
        prepare(model, QuantSpec(), TinyResNet.example_inputs())


@pytest.mark.parametrize("batch_first", [True, False])
def test_attention_decomposition_is_exact(batch_first):
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    dec = DecomposedAttention(mha).eval()
    x = torch.randn(3, 5, 16) if batch_first else torch.randn(5, 3, 16)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[0, -2:] = True
    with torch.no_grad():
        ref, _ = mha(x, x, x, key_padding_mask=mask, need_weights=False)
        out, _ = dec(x, x, x, key_padding_mask=mask, need_weights=False)
    assert torch.allclose(ref, out, atol=1e-5)


class AttnNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))


def test_attention_projections_are_quantized_not_bypassed():
    model = AttnNet().eval()
    x = torch.randn(2, 5, 8)
    qmodel, report = prepare(model, QuantSpec(), x)
    assert report.decomposed_attention == ["attn"]
    names = {i.name for i in report.layers}
    assert {"attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.out_proj", "head"} == names


def test_weight_only_keeps_first_and_last_activations_float():
    _, report = prepare(randomize_bn(TinyResNet()), QuantSpec(wbits=4, abits=32), TinyResNet.example_inputs())
    assert {(i.wbits, i.abits) for i in report.layers if i.role} == {(8, 32)}

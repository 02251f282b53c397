"""RepAPQ: branch merging, the protecting affine and its exact fold, MAE range search, stage term, outliers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ptq_core import QuantSpec, prepare, quantize
from ptq_core.analysis.outliers import channel_sample_maxima
from ptq_core.calibrate import calibrate_activations, calibrate_weights
from ptq_core.errors import ConfigError
from ptq_core.methods import RepAPQConfig
from ptq_core.methods.repapq import merge_branches, rep_blocks
from ptq_core.modules import set_quant_state
from ptq_core.observers import make_observer
from ptq_core.qscheme import QScheme
from ptq_core.recon import AdaRoundQuantizer
from ptq_core.recon.affine import ChannelAffine, fold_affine
from ptq_core.recon.stage import enclosing_stage, stage_rest
from ptq_core.zoo import RepVGGBlock
from tests.support.helpers import TinyResNet, randomize_bn


class TinyRep(nn.Module):
    """Two stages of RepVGG blocks (train form) and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stage0 = nn.Sequential(RepVGGBlock(1, 8))
        self.stage1 = nn.Sequential(RepVGGBlock(8, 12, 2), RepVGGBlock(12, 12))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stage1(self.stage0(x))), 1))


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(seed: int = 0) -> TinyRep:
    torch.manual_seed(seed)
    return randomize_bn(TinyRep(), seed)


def _images(n: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1, 12, 12, generator=torch.Generator().manual_seed(seed))


def _quantized(model: nn.Module, x: torch.Tensor, spec: QuantSpec) -> nn.Module:
    qmodel, _ = prepare(model, spec, x[:4])
    calibrate_weights(qmodel)
    calibrate_activations(qmodel, x)
    set_quant_state(qmodel, True, True)
    return qmodel.requires_grad_(False)


def _codes(layer: nn.Module) -> torch.Tensor:
    """Integer grid codes of a per-channel quantized conv weight."""
    fq = layer.weight_quantizer
    return torch.round(fq(layer.weight) / fq.scale.reshape(-1, 1, 1, 1)) + fq.zero_point.reshape(-1, 1, 1, 1)


# ---------------------------------------------------------------- the protecting affine and its fold


@pytest.mark.parametrize("kind", ["rtn", "adaround", "float"])
def test_affine_fold_leaves_outputs_unchanged(kind: str) -> None:
    x = _images()
    merged = merge_branches(_model())
    qmodel = _quantized(merged, x, QuantSpec(wbits=32 if kind == "float" else 4, abits=4))
    layer = qmodel.stage1[0].fused
    if kind == "adaround":
        rounder = AdaRoundQuantizer(layer.weight_quantizer, layer.weight)
        with torch.no_grad():
            rounder.alpha.copy_(torch.randn_like(rounder.alpha))
        rounder.harden()
        layer.weight_quantizer = rounder
    codes_before = None
    if kind != "float":
        codes_before = _codes(layer)
    affine = ChannelAffine(layer)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        affine.g.copy_(torch.rand(12, generator=g) * 1.5 + 0.5)
        affine.h.copy_(torch.randn(12, generator=g) * 0.3)
        with_affine = qmodel(x)
        plain = copy.deepcopy(qmodel)
        for m in plain.modules():
            m._forward_hooks.clear()
        assert (plain(x) - with_affine).abs().max() > 1e-2  # the affine really changes the outputs
        affine.fold()
        folded = qmodel(x)
    assert not layer._forward_hooks
    tol = 1e-5 * max(1.0, float(with_affine.abs().max()))
    assert float((folded - with_affine).abs().max()) <= tol
    if codes_before is not None:  # the integer codes are exactly those before the fold
        assert torch.equal(_codes(layer), codes_before)


def test_affine_refuses_per_tensor_weights_and_nonpositive_gains() -> None:
    x = _images(16)
    qmodel = _quantized(merge_branches(_model()), x, QuantSpec(wbits=4, abits=4, w_per_channel=False))
    with pytest.raises(ConfigError, match="per-output-channel"):
        ChannelAffine(qmodel.stage1[0].fused)
    assert not qmodel.stage1[0].fused._forward_hooks
    qmodel = _quantized(merge_branches(_model()), x, QuantSpec(wbits=4, abits=4))
    layer = qmodel.stage1[0].fused
    before = layer.weight.detach().clone()
    with pytest.raises(ConfigError, match="positive"):
        fold_affine(layer, -torch.ones(12), torch.zeros(12))
    assert torch.equal(layer.weight, before)
    with pytest.raises(ConfigError, match="per-channel"):
        RepAPQConfig(quant=QuantSpec(w_per_channel=False))
    with pytest.raises(ConfigError, match="distortion"):
        RepAPQConfig(distortion="l3")


# ---------------------------------------------------------------- MAE range search


def test_injected_outlier_moves_mae_range_less_than_mse() -> None:
    gen = torch.Generator().manual_seed(0)
    bulk = torch.randn(20000, generator=gen)
    spiked = bulk.clone()
    spiked[:20] = 40.0  # 0.1 % outliers
    moved = {}
    for name in ("mae", "mse"):
        ranges = []
        for data in (bulk, spiked):
            obs = make_observer(name, QScheme(bits=4))
            obs(data)
            ranges.append(obs._range()[1])
        moved[name] = float(ranges[1] - ranges[0])
    assert moved["mse"] > 0.5  # MSE widens its range toward the outliers
    assert moved["mae"] < 0.5 * moved["mse"]


# ---------------------------------------------------------------- the method


def test_repapq_refuses_a_model_without_rep_blocks() -> None:
    model = randomize_bn(TinyResNet())
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(ConfigError, match="re-parameterisable"):
        quantize(model, TinyResNet.example_inputs(16), RepAPQConfig(iters=2, calib=16))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_stage_helpers() -> None:
    model = merge_branches(_model())
    assert enclosing_stage(model, "stage1.0") == "stage1" and enclosing_stage(model, "fc") is None
    assert len(stage_rest(model, "stage1.0")) == 1 and len(stage_rest(model, "stage1.1")) == 0


def test_repapq_on_the_train_form() -> None:
    model = _model()
    x = _images(64)
    state = copy.deepcopy(model.state_dict())
    config = RepAPQConfig(
        quant=QuantSpec(wbits=8, abits=8),
        iters=40,
        calib=64,
        recon_batch=16,
        stage_weight=0.5,
        affine_lr=1e-2,
        round_lr=1e-2,
    )
    res = quantize(model, x, config)
    # the caller's model keeps its branches and weights
    assert all(not b.deployed for b in model.modules() if isinstance(b, RepVGGBlock))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert res.extras["repapq"]["merged_blocks"] == rep_blocks(model) == ["stage0.0", "stage1.0", "stage1.1"]
    assert res.extras["repapq"]["a_observer"] == "mae"
    assert all(not m._forward_hooks for m in res.model.modules())  # every affine folded away
    with torch.no_grad():
        ref = model(x)
        rel = float((res.model(x) - ref).norm() / ref.norm())
    assert rel < 0.05
    units = {u["name"]: u for u in res.extras["recon"]["units"]}
    gains = torch.tensor(units["stage1.0"]["affine"]["stage1.0.fused"]["g"])
    assert gains.shape == (12,) and (gains > 0).all() and (gains - 1).abs().max() > 1e-3  # trained, positive
    last = units["stage1.1"]["history"][-1]  # last block of its stage: the stage output is its own output
    assert last["stage"] == pytest.approx(0.5 * last["rec"], rel=1e-5)
    first = units["stage1.0"]["history"][-1]  # the stage's later block runs on its output
    assert first["stage"] != pytest.approx(0.5 * first["rec"], rel=1e-3)
    assert "stage" not in units["fc"]["history"][-1]  # the head has no enclosing stage


def test_ablation_switches() -> None:
    model = merge_branches(_model())
    base = RepAPQConfig()
    (opts,) = base.passes(model)
    assert (opts.rec_loss, opts.affine, opts.stage_weight) == ("mae", True, 1.0)
    assert base.run_config().quant.a_observer == "mae" and base.run_config().quant.w_observer == "mse"
    mse = RepAPQConfig(distortion="mse")
    assert mse.passes(model)[0].rec_loss == "mse" and mse.run_config().quant.a_observer == "mse"
    assert not RepAPQConfig(affine=False).passes(model)[0].affine
    assert RepAPQConfig(stage_weight=0.0).passes(model)[0].stage_weight == 0.0
    assert RepAPQConfig(mae_weights=True).run_config().quant.w_observer == "mae"
    fast = RepAPQConfig.from_preset("fast")
    assert (fast.iters, fast.recon_batch, fast.affine_lr) == (500, 32, 1e-2)


# ---------------------------------------------------------------- outlier statistics


def test_channel_sample_maxima() -> None:
    model = _model()
    x = _images(32)
    x[5] *= 50.0  # a sample-specific outlier
    out = channel_sample_maxima(model, x)
    assert list(out) == ["stage0.0", "stage1.0", "stage1.1"]
    assert all(not b.deployed for b in model.modules() if isinstance(b, RepVGGBlock))  # merged on a copy
    info = out["stage0.0"]
    assert info["maxima"].shape == (8, 32) and info["channel_score"].shape == (8,)
    with torch.no_grad():
        ref = model.stage0(x).abs().amax((2, 3)).T  # [C, N]
    assert torch.allclose(torch.from_numpy(info["maxima"]), ref, rtol=1e-4, atol=1e-5)
    assert info["top"][0]["sample"] == 5
    assert info["sample_score"][:, 5].min() > info["sample_score"][:, :5].max()
    with pytest.raises(ConfigError, match="unknown layer"):
        channel_sample_maxima(model, x, ["nope"])

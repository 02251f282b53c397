"""Reconstruction engine and AdaRound / BRECQ / QDrop / PD-Quant on tiny models."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn

from ptq_core import QuantSpec, RunCancelled, prepare, quantize, reconstruction_units
from ptq_core.cli import build_parser, spec_from_args
from ptq_core.errors import PTQError
from ptq_core.methods import AdaRoundConfig, BRECQConfig, PDQuantConfig, QDropConfig, RepAPQConfig, RTNConfig
from ptq_core.modules import quant_layers
from ptq_core.recon import (
    AdaRoundQuantizer,
    TailRunner,
    bn_statistics_loss,
    constraint_loss,
    correct_distribution,
    float_logits,
    logits_with_unit_output,
    module_input_output,
    prediction_kl,
)
from ptq_core.zoo import BasicBlock, ResNetCifar
from tests.support.helpers import TinyResNet, randomize_bn
from tests.support.paths import ROOT

W2 = QuantSpec(wbits=2, abits=8)
FAST = {"iters": 120, "round_lr": 3e-2, "calib": 128}


pytestmark = pytest.mark.usefixtures("one_thread")


def resnet8() -> nn.Module:
    """Three zoo BasicBlocks (BN inside, so DC has work), for 8x8 inputs."""
    torch.manual_seed(1)
    return randomize_bn(ResNetCifar(depth=8), seed=1)


def images(n: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def logit_mse(qmodel: nn.Module, model: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((qmodel(x) - model(x)).square().mean())


@pytest.mark.parametrize(
    "config",
    [
        AdaRoundConfig(quant=W2, **FAST),
        BRECQConfig(quant=W2, act_iters=40, **FAST),
        BRECQConfig(quant=W2, act_iters=0, loss="fisher", **FAST),
        QDropConfig(quant=W2, **FAST),
        PDQuantConfig(quant=W2, dc_steps=20, **FAST),
    ],
    ids=["adaround", "brecq", "brecq-fisher", "qdrop", "pdquant"],
)
def test_each_method_beats_rtn_at_2bit_weights(config):
    model, calib, held_out = resnet8(), images(128), images(128, seed=1)
    rtn = logit_mse(quantize(model, calib, RTNConfig(quant=W2)).model, model, held_out)
    res = quantize(model, calib, config)
    err = logit_mse(res.model, model, held_out)
    assert err < 0.9 * rtn, f"{config.method}: logit MSE {err:.4g} vs RTN {rtn:.4g}"
    units = res.extras["recon"]["units"]
    assert units and all(u["history"] for u in units if u["stage"] != "activations")
    # + 1e-4: PD-Quant's 8-bit stem now has DC (its BN is folded into it) and trains toward the corrected
    # targets, so its tiny error against the uncorrected float output may rise by about 3e-5
    assert all(u["error_after"] <= u["error_before"] * 1.05 + 1e-4 for u in units)


def test_hardened_adaround_is_within_one_step_of_nearest():
    model, calib = randomize_bn(TinyResNet()), TinyResNet.example_inputs(64)
    res = quantize(model, calib, AdaRoundConfig(quant=W2, **FAST))
    flipped = 0
    for _, layer in quant_layers(res.model):
        fq = layer.weight_quantizer
        assert isinstance(fq, AdaRoundQuantizer) and fq.hardened and not list(fq.parameters())
        shape = (-1,) + (1,) * (layer.weight.dim() - 1)
        scale, zp = fq.scale.reshape(shape), fq.zero_point.reshape(shape)
        nearest = (torch.round(layer.weight / scale) + zp).clamp(fq.scheme.qmin, fq.scheme.qmax)
        codes = fq.integer_codes(layer.weight)
        assert (codes - nearest).abs().max() <= 1
        assert torch.allclose(layer.quantized_weight(), (codes - zp) * scale)
        flipped += int((codes != nearest).sum())
    assert flipped > 0, "learning changed no rounding decision"


def test_distribution_correction_shrinks_the_bn_gap():
    block = randomize_bn(BasicBlock(4, 4), seed=3)
    x = 1.5 * torch.randn(40, 4, 6, 6) + 0.3
    with torch.no_grad():
        before = float(bn_statistics_loss(block, x)[0].mean())
    gaps = {}
    for lambda_c in (0.02, 1.0):  # the paper's ResNet weight, and a loose one
        x_dc, y_dc = correct_distribution(block, x, lambda_c=lambda_c, steps=60, lr=2e-2, group=8, chunk=16)
        with torch.no_grad():
            after, out = bn_statistics_loss(block, x_dc)
        gaps[lambda_c] = float(after.mean())
        assert torch.allclose(out, y_dc, atol=1e-5)
        assert float(constraint_loss(x_dc, x).mean()) < before  # it stays near the original
    assert gaps[0.02] < before and gaps[1.0] < 0.8 * before and gaps[1.0] < gaps[0.02]


def _reference_dc(block: nn.Module, x: torch.Tensor, lambda_c: float, steps: int, lr: float, patience: int):
    """The authors' procedure, batch by batch: torch Adam + ReduceLROnPlateau on the batch mean."""
    bns = [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)]
    x_new = x.clone().requires_grad_(True)
    opt = torch.optim.Adam([x_new], lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, min_lr=1e-5, patience=patience)
    for _ in range(steps):
        seen = []
        hs = [bn.register_forward_pre_hook(lambda _m, a, seen=seen: seen.append(a[0])) for bn in bns]
        block(x_new)
        for h in hs:
            h.remove()
        loss = 0.0
        for bn, t in zip(bns, seen, strict=True):
            flat = t.flatten(2)
            mean, std = flat.mean(2), torch.sqrt(flat.var(2) + 1e-6)
            loss = loss + (bn.running_mean - mean).norm() ** 2 / len(x)
            loss = loss + (torch.sqrt(bn.running_var + 1e-6) - std).norm() ** 2 / len(x)
        loss = loss + (x_new - x).square().sum(1).mean() / lambda_c
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step(loss.item())
    return x_new.detach()


def test_batched_dc_equals_per_batch_dc(device):
    block = randomize_bn(BasicBlock(3, 3), seed=4).requires_grad_(False).to(device)
    x = torch.randn(24, 3, 5, 5, generator=torch.Generator().manual_seed(5)).to(device)
    args = dict(lambda_c=0.02, steps=40, lr=0.2, patience=3)  # large lr: the plateau schedule does fire
    ref = torch.cat([_reference_dc(block, x[i : i + 8], **args) for i in range(0, 24, 8)])
    batched, _ = correct_distribution(block, x, group=8, chunk=24, **args)
    assert torch.allclose(batched, ref, atol=1e-4), float((batched - ref).abs().max())
    assert not torch.allclose(ref, x, atol=1e-2)


def test_kl_path_matches_the_full_model_on_residual_networks():
    tails_used = []
    for model, x in ((randomize_bn(TinyResNet()), TinyResNet.example_inputs(6)), (resnet8(), images(6))):
        spec = QuantSpec(wbits=32, abits=32, first_last_bits=None)
        qmodel, _ = prepare(model, spec, x)
        fp_logits = float_logits(model, x)
        units = reconstruction_units(qmodel, x[:2])
        tails = TailRunner(qmodel, [u.name for u in units])
        with torch.no_grad():
            for unit in units:
                x_in, _ = module_input_output(qmodel, unit.name, x, output=False)
                out = qmodel.get_submodule(unit.name)(x_in)
                for path in (functools.partial(logits_with_unit_output, qmodel), tails):
                    logits = path(unit.name, x, out)
                    assert torch.allclose(logits, fp_logits, atol=1e-5), unit.name
                    assert float(prediction_kl(logits, fp_logits, 4.0)) < 1e-7
                    assert not torch.allclose(path(unit.name, x, out + 1.0), fp_logits)  # it depends on the output
                tails_used.append((unit.name, tails.uses_tail(unit.name)))
    # TinyResNet's conv2 feeds an add whose other input comes from before it: that unit needs the full forward
    assert ("conv2", False) in tails_used and ("layer1.0", True) in tails_used


def test_kl_term_is_zero_when_the_unit_equals_the_float_one():
    model, calib = resnet8(), images(32)
    spec = QuantSpec(wbits=8, abits=32, first_last_bits=None)
    res = quantize(
        model,
        calib,
        PDQuantConfig(quant=spec, iters=3, dc=False, drop_prob=0.0, progress_every=1, round_lr=1e-12, calib=32),
    )
    first = [u["history"][0] for u in res.extras["recon"]["units"]]
    # 8-bit weights: RTN start is almost the float unit; the KL is tiny (exactly 0 needs an exact unit)
    assert all(h["kl"] < 1e-4 for h in first)


@pytest.mark.parametrize("cancel_stage", ["correct", "reconstruct"])
def test_cancellation_leaves_the_model_untouched(cancel_stage):
    model, calib = resnet8(), images(64)
    before = copy.deepcopy(model.state_dict())
    grads = [p.requires_grad for p in model.parameters()]
    seen = []

    def progress(ev):
        seen.append(ev.stage)
        if ev.stage == cancel_stage and seen.count(cancel_stage) >= 3:
            raise RunCancelled("stop")

    with pytest.raises(RunCancelled):
        quantize(model, calib, PDQuantConfig(quant=W2, iters=50, dc_steps=20, progress_every=1, calib=64), progress)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == grads
    assert all(p.grad is None for p in model.parameters())
    assert not model.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_progress_events_carry_unit_step_and_losses():
    events = []
    model, calib = resnet8(), images(32)
    quantize(model, calib, QDropConfig(quant=W2, iters=10, progress_every=5, calib=32), events.append)
    rec = [e for e in events if e.stage == "reconstruct"]
    assert {e.unit_index for e in rec} == set(range(rec[0].num_units))
    assert {e.step for e in rec} == {5, 10}
    assert all({"rec", "total"} <= set(e.losses) for e in rec)


def _preset_table() -> list[tuple[str, float, float, list[str]]]:
    """(field, paper value, fast value, methods) rows of the preset table in docs/methods.md."""
    text = (ROOT / "docs" / "methods.md").read_text()
    start = text.index("| field | paper | fast | methods |")
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.strip().startswith("|"):
            break
        field, paper, fast, methods = (c.strip().strip("`") for c in line.strip().strip("|").split("|"))
        names = list(RECON_CONFIGS) if methods == "all five" else [m.strip() for m in methods.split(",")]
        rows.append((field, float(paper.replace(" ", "")), float(fast.replace(" ", "")), names))
    return rows


RECON_CONFIGS = {
    "AdaRound": AdaRoundConfig,
    "BRECQ": BRECQConfig,
    "QDrop": QDropConfig,
    "PD-Quant": PDQuantConfig,
    "RepAPQ": RepAPQConfig,
}


def test_presets_match_the_documented_table():
    rows = _preset_table()
    assert {"calib", "iters"} <= {field for field, *_ in rows}
    for field, paper, fast, names in rows:
        for name in names:
            cls = RECON_CONFIGS[name]
            assert getattr(cls.from_preset("paper"), field) == pytest.approx(paper), (name, field)
            assert getattr(cls.from_preset("fast"), field) == pytest.approx(fast), (name, field)
    assert BRECQConfig.from_preset("paper", iters=7).iters == 7  # an explicit value beats the preset


def test_presets_and_cli_overrides():
    args = build_parser().parse_args(
        ["quantize", "--method", "pdquant", "--preset", "fast", "--iters", "9", "--calib", "64", "--no-dc"]
    )
    cfg = spec_from_args(args).method
    assert (cfg.preset, cfg.iters, cfg.calib, cfg.dc) == ("fast", 9, 64, False)
    assert type(cfg).from_dict(cfg.to_dict()) == cfg
    args = build_parser().parse_args(["quantize", "--method", "brecq", "--fisher"])
    assert spec_from_args(args).method.loss == "fisher" and spec_from_args(args).method.iters == 20000


def test_brecq_act_aware_rounding_quantizes_activations_in_the_rounding_pass():
    model = TinyResNet().eval()
    plain, aware = BRECQConfig.from_preset("fast"), BRECQConfig.from_preset("fast", act_aware_rounding=True)
    assert [o.quant_act for o in plain.passes(model)] == [False, True]  # the released code: rounding in float
    assert [o.quant_act for o in aware.passes(model)] == [True, True]
    args = build_parser().parse_args(["quantize", "--method", "brecq", "--act-aware-rounding"])
    assert spec_from_args(args).method.act_aware_rounding
    with pytest.raises(PTQError, match="brecq only"):
        spec_from_args(build_parser().parse_args(["quantize", "--method", "qdrop", "--act-aware-rounding"]))


@pytest.mark.parametrize("axis", [None, 1])
def test_fused_fake_quant_matches_the_composed_one(axis, device):
    from ptq_core.primitives import bernoulli_mask, fake_quantize, fake_quantize_fused

    g = torch.Generator().manual_seed(0)
    x = (2 * torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)).to(device)
    scale = torch.tensor(0.25, dtype=torch.float64) if axis is None else torch.tensor([0.1, 0.2, 0.3]).double()
    scale = scale.to(device)
    for zp in (0.0, 7.0):
        z = torch.full_like(scale, zp)
        for keep in (None, bernoulli_mask(x, 0.3)):
            xa, sa = x.clone().requires_grad_(), scale.clone().requires_grad_()
            ref = fake_quantize(xa, sa, z, 0, 15, axis)
            ref = ref if keep is None else torch.where(keep.bool(), xa, ref)
            xb, sb = x.clone().requires_grad_(), scale.clone().requires_grad_()
            out = fake_quantize_fused(xb, sb, z, 0, 15, axis, keep)
            assert torch.equal(out, ref)
            w = torch.randn(x.shape, generator=g, dtype=torch.float64).to(device)
            (ref * w).sum().backward()
            (out * w).sum().backward()
            assert torch.allclose(xa.grad, xb.grad) and torch.allclose(sa.grad, sb.grad)
    mask = bernoulli_mask(torch.zeros(200, 1000, device=device), 0.3)
    assert set(mask.unique().tolist()) == {0.0, 1.0} and abs(float(mask.mean()) - 0.3) < 0.01

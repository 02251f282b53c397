"""Layer-wise solvers: COMQ, GPTQ and multipoint quantization (issue 4)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ptq_core.errors import ConfigError, RunCancelled
from ptq_core.layerwise import (
    CodeQuantizer,
    GramAccumulator,
    MultipointQuantizer,
    allocate_points,
    comq_solve,
    deploy_multipoint,
    gptq_reference,
    gptq_solve,
    greedy_points,
    input_rows,
)
from ptq_core.methods import COMQConfig, GPTQConfig, MultipointConfig, quantize
from ptq_core.metrics import model_size_bits
from ptq_core.modules import quant_layers
from ptq_core.prepare import QuantSpec
from ptq_core.primitives import fake_quantize
from tests.support.helpers import TinyResNet, randomize_bn


def _layer(groups: int = 1, m: int = 12, d: int = 30, n: int = 400, seed: int = 0, dtype=torch.float32):
    """Random correlated inputs, weights [G, m, d], H [G, d, d] and a 4-bit per-row min-max grid."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(groups, n, d, generator=g, dtype=dtype) @ torch.randn(groups, d, d, generator=g, dtype=dtype)
    w = torch.randn(groups, m, d, generator=g, dtype=dtype)
    h = x.mT @ x / n
    rows = w.reshape(-1, d)
    lo, hi = rows.amin(1).clamp(max=0), rows.amax(1).clamp(min=0)
    scale = (hi - lo) / 15
    return w, h, scale, torch.round(-lo / scale), x


def _err(w, codes, h, scale, zp):
    q = (codes.reshape(w.shape) - zp.reshape(w.shape[0], -1, 1)) * scale.reshape(w.shape[0], -1, 1)
    diff = (w - q).double()
    return float((diff @ h.double() * diff).sum())


@pytest.mark.parametrize("groups", [1, 3])
def test_comq_coordinate_steps_never_raise_the_error(groups):
    w, h, scale, zp, _ = _layer(groups)
    sol = comq_solve(w, h, scale, zp, 0, 15, sweeps=3, start="nearest", update_scale=True)
    steps = sol.curve[1:] - sol.curve[:-1]
    assert sol.start_error == pytest.approx(sol.rtn_error)
    assert sol.curve[0] <= sol.start_error + 1e-6 and float(steps.max()) <= 1e-6 * sol.start_error
    assert sol.error <= sol.start_error and sol.error < 0.9 * sol.rtn_error
    assert float(sol.curve[-1]) == pytest.approx(sol.error, rel=1e-3)  # the tracked curve ends at the true error
    # from the reference code's start (Q = W) every sweep after the first is monotone too
    flt = comq_solve(w, h, scale, zp, 0, 15, sweeps=3, start="float", update_scale=False)
    after_first = flt.curve[w.numel() - 1 :]
    assert float((after_first[1:] - after_first[:-1]).max()) <= 1e-6 * flt.rtn_error


def test_comq_with_orthogonal_inputs_is_nearest_rounding():
    w, _, scale, zp, _ = _layer(groups=2, n=200)
    q, _ = torch.linalg.qr(torch.randn(2, 200, w.shape[2]))
    h = q.mT @ q * 3.0  # orthogonal columns of equal norm: H is a multiple of I
    nearest = torch.round(w.reshape(-1, w.shape[2]) / scale[:, None] + zp[:, None]).clamp(0, 15)
    for start in ("float", "nearest"):
        sol = comq_solve(w, h, scale, zp, 0, 15, start=start, update_scale=False)
        assert torch.equal(sol.codes, nearest)


def test_comq_scale_update_is_the_least_squares_scale():
    w, h, scale, zp, _ = _layer()
    sol = comq_solve(w, h, scale, zp, 0, 15, update_scale=True)
    base = _err(w, sol.codes, h, sol.scale, zp)
    for f in (0.98, 1.02):  # any other scale of the same codes is worse
        assert _err(w, sol.codes, h, sol.scale * f, zp) > base


@pytest.mark.parametrize("groups", [1, 2])
def test_gptq_matches_slow_reference(groups):
    w, h, scale, zp, _ = _layer(groups, m=6, d=20, dtype=torch.float64)
    fast = gptq_solve(w, h, scale, zp, 0, 15, block=8)
    assert torch.equal(fast, gptq_reference(w, h, scale, zp, 0, 15))
    assert _err(w, fast, h, scale, zp) < 0.8 * _err(
        w, torch.round(w / scale.reshape(groups, -1, 1) + zp.reshape(groups, -1, 1)).clamp(0, 15), h, scale, zp
    )
    # act-order is the reference run on columns sorted by decreasing H_jj
    perm = torch.argsort(h.diagonal(dim1=1, dim2=2), dim=1, descending=True)
    wp = w.gather(2, perm[:, None, :].expand_as(w))
    hp = torch.stack([h[g][perm[g]][:, perm[g]] for g in range(groups)])
    ref = gptq_reference(wp, hp, scale, zp, 0, 15)
    ordered = gptq_solve(w, h, scale, zp, 0, 15, act_order=True)
    assert torch.equal(ordered.gather(2, perm[:, None, :].expand_as(w)), ref)


def test_gram_matches_unfolded_inputs():
    conv = nn.Conv2d(6, 9, 3, stride=2, padding=1, groups=3)
    x = torch.randn(5, 6, 9, 9)
    acc = GramAccumulator(conv)
    acc.add(x[:2])
    acc.add(x[2:])
    rows = input_rows(conv, x)  # [G, N, d]
    assert torch.allclose(acc.result(), (rows.mT @ rows) / rows.shape[1], atol=1e-5)
    # rows times the grouped weight reproduce the conv output
    w = conv.weight.reshape(3, 3, -1)
    out = torch.bmm(rows, w.mT)  # [G, N, m]
    ref = F.conv2d(x, conv.weight, None, 2, 1, 1, 3).permute(0, 2, 3, 1).reshape(-1, 3, 3).transpose(0, 1)
    assert torch.allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("bits,grid", [(2, "signed"), (3, "symmetric"), (4, "signed")])
def test_multipoint_residual_shrinks_with_every_point(bits, grid):
    w = torch.randn(16, 50) * torch.rand(16, 1)
    coeffs, codes = greedy_points(w, 5, bits, grid)
    lo, hi = (
        (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if grid == "signed" else (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1)
    )
    assert codes.min() >= lo and codes.max() <= hi and torch.equal(codes, codes.round())
    residual = (w[None] - (coeffs[:, :, None] * codes).cumsum(0)).norm(dim=2)  # [5, 16]
    norms = torch.cat([w.norm(dim=1)[None], residual])
    assert bool((norms[1:] < norms[:-1]).all())


def test_allocation_follows_error_budget_threshold_and_random():
    errors = torch.tensor([[9.0, 1.0, 5.0, 3.0], [4.0, 0.5, 1.0, 2.0], [0.1, 0.1, 0.5, 1.0]])
    ref = torch.full((4,), 10.0)
    assert allocate_points(errors, 3, None, ref).tolist() == [3, 1, 2, 1]  # largest error first: 9, 5, then 4
    assert allocate_points(errors, None, 0.25, ref).tolist() == [3, 1, 2, 2]  # until e <= 2.5
    assert allocate_points(errors, 0, None, ref).tolist() == [1, 1, 1, 1]
    rnd = allocate_points(errors, 3, None, ref, "random", torch.Generator().manual_seed(0))
    assert int(rnd.sum()) == 7 and int(rnd.max()) <= 3


class _DepthwiseNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.gc = nn.Conv2d(8, 12, 1, groups=2)
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        x = F.relu(self.gc(F.relu(self.dw(F.relu(self.c1(x))))))
        return self.fc(x.mean((2, 3)))


def test_multipoint_deploy_form_equals_fake_quant():
    model, x = _DepthwiseNet().eval(), torch.randn(16, 1, 10, 10)
    cfg = MultipointConfig(quant=QuantSpec(wbits=3, abits=8, first_last_bits=None), calib=16, budget=40.0, n_max=3)
    res = quantize(model, x, cfg)
    points = res.extras["points"]
    assert max(max(p) for p in points.values()) > 1 and res.extras["overhead"]["extra_points"] > 0
    assert res.extras["overhead"]["extra_percent"] == pytest.approx(100 * 15 / 38, abs=1e-9)  # floor(0.4 * 38)
    deployed = deploy_multipoint(res.model)
    assert not any(isinstance(m.weight_quantizer, MultipointQuantizer) for _, m in quant_layers(deployed))
    with torch.no_grad():
        assert (deployed(x) - res.model(x)).abs().max() < 1e-5
    for name, layer in quant_layers(res.model):  # the fake-quant weight is the sum of the points
        wq = layer.quantized_weight().detach().reshape(layer.weight.shape[0], -1)
        q = layer.weight_quantizer
        assert torch.allclose(wq, (q.coeffs[:, :, None] * q.codes.float()).sum(0), atol=1e-7)
        assert q.points.tolist() == points[name]


def test_model_size_counts_every_multipoint_point():
    model, x = _DepthwiseNet().eval(), torch.randn(16, 1, 10, 10)
    sizes, overheads = [], []
    for budget in (0.0, 40.0):
        cfg = MultipointConfig(quant=QuantSpec(wbits=3, abits=8, first_last_bits=None), calib=16, budget=budget)
        res = quantize(model, x, cfg)
        sizes.append(model_size_bits(res.model))
        overheads.append(res.extras["overhead"])
    extra = overheads[1]["extra_points"]
    assert overheads[0]["extra_points"] == 0 and extra > 0
    # each extra point stores its 3-bit vector and one fp32 coefficient
    assert sizes[1] - sizes[0] == overheads[1]["extra_weight_bits"] + 32 * extra


def test_comq_and_gptq_methods_on_a_tiny_model():
    model = randomize_bn(TinyResNet())
    before = copy.deepcopy(model.state_dict())
    x = TinyResNet.example_inputs(32)
    spec = QuantSpec(wbits=3)
    assert spec.abits == 4 and COMQConfig().quant.abits == 32  # weight-only by default
    res = quantize(model, x, COMQConfig(quant=QuantSpec(wbits=3, abits=32), calib=32, start="nearest"))
    for rec in res.extras["layer_solutions"]:
        assert rec["error"] <= rec["rtn_error"] * (1 + 1e-6)
    for name, layer in quant_layers(res.model):
        fq = layer.weight_quantizer
        assert isinstance(fq, CodeQuantizer) and layer.quant_weight and layer.act_quantizer.scheme.is_float
        wq = layer.quantized_weight().detach()
        axis = 0 if fq.scheme.per_channel else None
        again = fake_quantize(wq, fq.scale, fq.zero_point, fq.scheme.qmin, fq.scheme.qmax, axis)
        assert torch.equal(again, wq)  # solved weights are a fixed point of the layer's grid
        trace = res.extras["trace"][name]
        assert len(trace["error"]) >= 64 and sum(trace["code_hist"]) == layer.weight.numel()
        assert sorted(trace["order"][0]) == list(range(layer.weight[0].numel()))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    g = quantize(model, x, GPTQConfig(quant=QuantSpec(wbits=3, abits=8), calib=32, act_order=True))
    assert all(layer.quant_act and layer.act_quantizer.is_calibrated for _, layer in quant_layers(g.model))
    recs = g.extras["layer_solutions"]
    assert sum(r["error"] for r in recs) < sum(r["rtn_error"] for r in recs)


def test_cancel_and_bad_settings():
    model, x = TinyResNet().eval(), TinyResNet.example_inputs(8)
    before = copy.deepcopy(model.state_dict())

    def cancel(ev):
        if ev.stage == "solve":
            raise RunCancelled("stop")

    with pytest.raises(RunCancelled):
        quantize(model, x, COMQConfig(calib=8, inputs="quantized"), cancel)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    for cfg, kw in (
        (COMQConfig, {"sweeps": 0}),
        (COMQConfig, {"order": "backwards"}),
        (COMQConfig, {"scalar": 0}),
        (COMQConfig, {"inputs": "fp"}),
        (GPTQConfig, {"percdamp": -0.1}),
        (GPTQConfig, {"block": 0}),
        (MultipointConfig, {"budget": None}),
        (MultipointConfig, {"n_max": 0}),
        (MultipointConfig, {"selection": "best"}),
        (MultipointConfig, {"grid": "float"}),
    ):
        with pytest.raises(ConfigError):
            cfg(**kw)


def test_extras_are_json_ready_for_the_run_store():
    import json

    from ptq_core.store import to_jsonable

    model, x = TinyResNet().eval(), TinyResNet.example_inputs(8)
    for cfg in (COMQConfig(calib=8, sweeps=2), MultipointConfig(calib=8, budget=20.0, selection="random")):
        extras = quantize(model, x, cfg).extras
        assert json.loads(json.dumps(to_jsonable(extras), allow_nan=False)) == json.loads(json.dumps(extras))


def test_cli_flags_reach_the_configs():
    from ptq_core.cli import build_parser, spec_from_args
    from ptq_core.errors import PTQError

    def config(*argv):
        return spec_from_args(build_parser().parse_args(["quantize", *argv])).method

    assert config("--method", "comq", "--sweeps", "3").sweeps == 3
    assert config("--method", "gptq", "--act-order", "--inputs", "float").act_order
    assert config("--method", "multipoint", "--mp-budget", "10").budget == 10.0
    with pytest.raises(PTQError):
        config("--method", "rtn", "--mp-budget", "10")

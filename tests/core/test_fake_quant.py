"""Tests for ptq_core.fake_quant.FakeQuantize."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ptq_core import primitives as P
from ptq_core.errors import ConfigError
from ptq_core.fake_quant import FakeQuantize
from ptq_core.qscheme import QScheme


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _calibrated(scheme: QScheme, x: torch.Tensor, observer: str = "minmax", **kw: object) -> FakeQuantize:
    fq = FakeQuantize(scheme, observer, **kw).to(x.device)
    fq(x)
    fq.calibrate()
    return fq


def test_float_scheme_is_identity() -> None:
    fq = FakeQuantize(QScheme(bits=32))
    x = _randn(3, 4)
    assert fq(x) is x
    fq.calibrate()
    assert fq(x) is x and not fq.is_calibrated and fq.bits == 32
    assert "float" in repr(fq)


def test_observe_calibrate_quantize_flow(device) -> None:
    scheme = QScheme(bits=4)
    fq = FakeQuantize(scheme).to(device)
    x = _randn(64, seed=1).to(device)
    assert fq(x) is x and fq.observe and not fq.is_calibrated  # observing only
    fq.calibrate()
    assert not fq.observe and fq.is_calibrated
    scale, zp = fq.observer.calculate_qparams()
    torch.testing.assert_close(fq(x), P.fake_quantize(x, scale, zp, 0, 15))
    assert len(torch.unique(fq(x))) <= 16
    fq.enable_observer()
    fq(x * 10)
    assert fq.observer.max_val.item() == pytest.approx(10 * x.max().item())


def test_calibrate_without_data_raises() -> None:
    with pytest.raises(ConfigError, match="not observed"):
        FakeQuantize(QScheme()).calibrate()


def test_per_channel_weights_match_torch(device) -> None:
    w = (_randn(8, 4, 3, 3, seed=2) * torch.linspace(0.1, 2, 8).view(8, 1, 1, 1)).to(device)  # [8, 4, 3, 3]
    fq = _calibrated(QScheme(bits=3, signed=True, per_channel=True), w)
    assert fq.scale.shape == fq.zero_point.shape == (8,)
    ref = torch.fake_quantize_per_channel_affine(w, fq.scale, fq.zero_point.to(torch.int32), 0, -4, 3)
    torch.testing.assert_close(fq(w), ref, atol=1e-6, rtol=0)


def test_mse_observer_through_fake_quantize(device) -> None:
    x = _randn(2000, seed=3)
    x[0] = 40.0
    x = x.to(device)
    mse = _calibrated(QScheme(bits=4), x, "mse", p=2.0, num_candidates=50)
    mm = _calibrated(QScheme(bits=4), x)
    assert mse.scale < mm.scale
    assert P.lp_loss(x, mse(x), 2.0) <= P.lp_loss(x, mm(x), 2.0)


def test_drop_prob(device) -> None:
    x = _randn(1000, seed=4).to(device)
    fq = _calibrated(QScheme(bits=2), x, drop_prob=1.0)
    fq.train()
    torch.testing.assert_close(fq(x), x, rtol=0, atol=0)
    fq.eval()
    xq = fq(x)
    assert not torch.equal(xq, x)
    fq.train()
    fq.drop_prob = 0.5
    torch.manual_seed(0)
    mixed = fq(x)
    kept = (mixed == x).float().mean().item()
    assert 0.35 < kept < 0.7 and torch.all((mixed == x) | (mixed == xq))
    with pytest.raises(ConfigError):
        fq.drop_prob = 1.5


def test_learnable_scale_gets_gradient_and_freezes_back(device) -> None:
    x = _randn(500, seed=5).to(device)
    fq = _calibrated(QScheme(bits=3), x)
    before = fq.scale.clone()
    fq.make_scale_learnable()
    assert isinstance(fq.scale, nn.Parameter) and any(p is fq.scale for p in fq.parameters())
    (fq(x) - x).square().sum().backward()
    assert fq.scale.grad is not None and fq.scale.grad.abs() > 0
    param = fq.scale
    fq.set_qparams(before * 2, fq.zero_point)
    assert fq.scale is param and fq.scale.item() == pytest.approx(2 * before.item())
    fq.freeze_scale()
    assert not isinstance(fq.scale, nn.Parameter) and "scale" in dict(fq.named_buffers())
    assert fq.scale.item() == pytest.approx(2 * before.item()) and not list(fq.parameters())


def test_set_qparams_validation() -> None:
    fq = FakeQuantize(QScheme(bits=4))
    with pytest.raises(ConfigError):
        fq.set_qparams(torch.ones(3), torch.zeros(3))  # per-tensor needs one element
    with pytest.raises(ConfigError):
        fq.set_qparams(torch.tensor(-1.0), torch.tensor(0.0))
    fq.set_qparams(torch.tensor([0.5]), torch.tensor([3.0]))
    assert fq.is_calibrated and fq.scale.shape == ()
    assert fq(torch.tensor([1.0, 100.0])).tolist() == [1.0, 6.0]  # 100 -> clamp(200 + 3, 0, 15) = 15


def test_state_dict_roundtrip_per_channel(device) -> None:
    w = _randn(5, 7, seed=6).to(device)
    scheme = QScheme(bits=4, per_channel=True)
    fq = _calibrated(scheme, w)
    fresh = FakeQuantize(scheme).to(device)
    fresh.load_state_dict(fq.state_dict())
    fresh.enable_observer(False)
    assert fresh.is_calibrated
    torch.testing.assert_close(fresh(w), fq(w))


def test_quant_error_and_repr(device) -> None:
    x = _randn(300, seed=7).to(device)
    fq = _calibrated(QScheme(bits=4, symmetric=True, signed=True), x, "percentile", percentile=99.0)
    err = fq.quant_error(x)
    sq = (x - fq(x)).square()
    # rounding moves a value by at most half a step, clipping by more
    beyond = (x - fq(x)).abs() > fq.scale / 2 * (1 + 1e-4)
    assert err["total"] == pytest.approx(sq.sum().item(), rel=1e-5)
    assert err["clipping"] == pytest.approx(sq[beyond].sum().item(), rel=1e-5) and err["clipping"] > 0
    assert err["clip_fraction"] == pytest.approx(beyond.float().mean().item())
    text = repr(fq)
    assert "bits=4" in text and "observer=percentile" in text and "symmetric" in text
    with pytest.raises(ConfigError):
        FakeQuantize(QScheme()).quant_error(x)

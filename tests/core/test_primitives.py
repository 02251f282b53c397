"""Tests for ptq_core.primitives and ptq_core.qscheme (oracles: torch fake_quantize ops)."""

from __future__ import annotations

import itertools

import pytest
import torch

from ptq_core import primitives as P
from ptq_core.errors import BitWidthError, ConfigError, NonFiniteError
from ptq_core.qscheme import FLOAT_BITS, QScheme

MODES = list(itertools.product([False, True], [False, True]))  # (symmetric, signed)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _heavy(n: int = 4096, seed: int = 0) -> torch.Tensor:
    """Student-t (3 dof) sample: heavy tails, two-sided."""
    g = _gen(seed)
    z = torch.randn(n, generator=g)
    chi2 = torch.randn(3, n, generator=g).square().sum(0)
    return z / (chi2 / 3).sqrt()


def _minmax_qparams(x: torch.Tensor, bits: int, sym: bool, signed: bool, axis: int | None = None):
    if axis is None:
        return P.compute_qparams(x.min(), x.max(), bits, sym, signed)
    rows = x.movedim(axis, 0).reshape(x.shape[axis], -1)
    return P.compute_qparams(rows.amin(1), rows.amax(1), bits, sym, signed)


# ---------------------------------------------------------------- QScheme / bits


def test_qscheme_grid_and_float() -> None:
    assert (QScheme(bits=4).qmin, QScheme(bits=4).qmax) == (0, 15)
    assert (QScheme(bits=4, signed=True).qmin, QScheme(bits=4, signed=True).qmax) == (-8, 7)
    assert QScheme(bits=FLOAT_BITS).is_float and not QScheme().is_float
    with pytest.raises(ConfigError):
        _ = QScheme(bits=32).qmin


@pytest.mark.parametrize("bits", [1, 9, 0, 16, 64])
def test_bad_bits_raise_clear_message(bits: int) -> None:
    with pytest.raises(BitWidthError, match=rf"bit-width {bits} is out of range: use 2-8, or 32 to keep float"):
        QScheme(bits=bits)
    with pytest.raises(BitWidthError, match="use 2-8"):
        P.quant_range(bits, signed=False)


def test_bits_type_and_float_in_primitives() -> None:
    with pytest.raises(BitWidthError, match="integer"):
        QScheme(bits=4.0)  # type: ignore[arg-type]
    with pytest.raises(BitWidthError):
        P.quant_range(32, signed=True)
    with pytest.raises(BitWidthError):
        P.compute_qparams(-1.0, 1.0, 9, False, False)


def test_qscheme_dict_roundtrip_and_replace() -> None:
    s = QScheme(bits=4, symmetric=True, signed=True, per_channel=True, ch_axis=1)
    assert QScheme.from_dict(s.to_dict()) == s
    assert s.replace(bits=8).bits == 8 and s.bits == 4
    with pytest.raises(ConfigError):
        QScheme.from_dict({"bitz": 4})
    with pytest.raises(BitWidthError):
        s.replace(bits=9)
    with pytest.raises(ConfigError):
        QScheme(symmetric="yes")  # type: ignore[arg-type]


# ---------------------------------------------------------------- qparams


def test_compute_qparams_hand_computed() -> None:
    s, z = P.compute_qparams(-1.0, 0.5, 8, symmetric=True, signed=True)
    assert s.item() == pytest.approx(1 / 127.5) and z.item() == 0
    s, z = P.compute_qparams(-1.0, 0.5, 8, symmetric=False, signed=False)
    assert s.item() == pytest.approx(1.5 / 255) and z.item() == 170
    s, z = P.compute_qparams(0.2, 3.0, 4, symmetric=True, signed=False)  # range widened to [0, 3]
    assert s.item() == pytest.approx(3.0 / 15) and z.item() == 0
    assert z.dtype == torch.float32


def test_compute_qparams_degenerate_and_nonfinite() -> None:
    s, z = P.compute_qparams(torch.zeros(3), torch.zeros(3), 4, False, False)
    assert (s > 0).all() and (z == 0).all()
    with pytest.raises(NonFiniteError):
        P.compute_qparams(torch.tensor(float("nan")), 1.0, 8, False, False)
    with pytest.raises(NonFiniteError):
        P.compute_qparams(-1.0, torch.tensor(float("inf")), 8, False, False)


# ---------------------------------------------------------------- oracle: torch fake_quantize


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("symmetric,signed", MODES)
@pytest.mark.parametrize("bits", range(2, 9))
def test_fake_quantize_matches_torch(bits: int, symmetric: bool, signed: bool, per_channel: bool, device) -> None:
    g = _gen(bits)
    x = (torch.randn(6, 3, 5, generator=g) * torch.linspace(0.1, 3, 6).view(6, 1, 1) + 0.3).to(device)  # [6, 3, 5]
    qmin, qmax = P.quant_range(bits, signed)
    axis = 0 if per_channel else None
    scale, zp = _minmax_qparams(x * 0.8, bits, symmetric, signed, axis)  # some clipping
    ours = P.fake_quantize(x, scale, zp, qmin, qmax, axis)
    if per_channel:
        ref = torch.fake_quantize_per_channel_affine(x, scale, zp.to(torch.int32), 0, qmin, qmax)
    else:
        ref = torch.fake_quantize_per_tensor_affine(x, scale.item(), int(zp.item()), qmin, qmax)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


def test_fake_quantize_per_channel_last_axis_matches_torch(device) -> None:
    x = torch.randn(2, 5, 4, generator=_gen(1)).to(device)  # channels on the last axis
    scale, zp = _minmax_qparams(x, 4, False, False, axis=-1)
    ours = P.fake_quantize(x, scale, zp, 0, 15, axis=-1)
    ref = torch.fake_quantize_per_channel_affine(x, scale, zp.to(torch.int32), 2, 0, 15)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("symmetric,signed", MODES)
def test_quantize_dequantize_roundtrip_within_half_step(symmetric: bool, signed: bool, device) -> None:
    x = torch.randn(2000, generator=_gen(2)).to(device)
    qmin, qmax = P.quant_range(4, signed)
    scale, zp = _minmax_qparams(x, 4, symmetric, signed)
    q = P.quantize(x, scale, zp, qmin, qmax)
    assert torch.equal(q, q.round()) and q.min() >= qmin and q.max() <= qmax
    lo, hi = (qmin - zp) * scale, (qmax - zp) * scale
    inside = (x >= lo) & (x <= hi)
    err = (P.dequantize(q, scale, zp) - x).abs()[inside]
    assert inside.sum() > 1000 and err.max() <= scale / 2 + 1e-6


@pytest.mark.parametrize("symmetric,signed", MODES)
@pytest.mark.parametrize("bits", [2, 3, 8])
def test_zero_is_exactly_representable(bits: int, symmetric: bool, signed: bool, device) -> None:
    qmin, qmax = P.quant_range(bits, signed)
    lows, highs = -torch.rand(50, generator=_gen(3)) * 5, torch.rand(50, generator=_gen(4)) * 3
    scale, zp = P.compute_qparams(lows.to(device), highs.to(device), bits, symmetric, signed)
    zeros = torch.zeros(4, 50, device=device)
    assert torch.equal(P.fake_quantize(zeros, scale, zp, qmin, qmax, axis=1), zeros)


def test_error_falls_as_bits_rise(device) -> None:
    x = torch.randn(4096, generator=_gen(5)).to(device)
    errors = []
    for bits in range(2, 9):
        scale, zp = _minmax_qparams(x, bits, False, False)
        errors.append(P.lp_loss(x, P.fake_quantize(x, scale, zp, *P.quant_range(bits, False)), 2).item())
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False))


# ---------------------------------------------------------------- gradients


def test_round_ste_gradient_is_identity() -> None:
    x = torch.tensor([0.2, 1.5, -2.7], requires_grad=True)
    y = P.round_ste(x)
    y.sum().backward()
    assert torch.equal(y, torch.tensor([0.0, 2.0, -3.0])) and torch.equal(x.grad, torch.ones(3))


def test_ste_gradient_ones_inside_zeros_outside(device) -> None:
    x = torch.tensor([-3.0, -2.2, -2.0, -0.4, 0.0, 0.37, 1.75, 1.8, 1.9, 5.0], device=device, requires_grad=True)
    scale, zp = torch.tensor(0.25, device=device), torch.tensor(8.0, device=device)  # grid [-2, 1.75], ends inside
    P.fake_quantize(x, scale, zp, 0, 15).sum().backward()
    assert x.grad.cpu().tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    x2 = x.detach().clone().requires_grad_(True)
    torch.fake_quantize_per_tensor_affine(x2, 0.25, 8, 0, 15).sum().backward()
    assert torch.equal(x.grad, x2.grad)  # torch's mask is the oracle


def test_lsq_gradient_to_scale(device) -> None:
    x = (torch.randn(500, generator=_gen(6)) * 2).to(device)
    scale = torch.tensor(0.3, device=device, requires_grad=True)
    zp = torch.tensor(3.0, device=device)
    (P.fake_quantize(x, scale, zp, -8, 7) * 1.0).sum().backward()
    assert scale.grad is not None and scale.grad.abs() > 0
    s_ref = torch.tensor([0.3], device=device, requires_grad=True)
    ref = torch._fake_quantize_learnable_per_tensor_affine(x, s_ref, torch.tensor([3.0], device=device), -8, 7, 1.0)
    ref.sum().backward()
    torch.testing.assert_close(scale.grad.reshape(1), s_ref.grad, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- error split, losses


def test_quantization_error_split(device) -> None:
    x = torch.cat([torch.randn(1000, generator=_gen(7)), torch.tensor([50.0, -40.0])]).to(device)
    scale, zp = _minmax_qparams(torch.randn(1000, generator=_gen(7)).to(device), 4, False, False)
    out = P.quantization_error(x, scale, zp, 0, 15)
    sse = (x - P.fake_quantize(x, scale, zp, 0, 15)).square().sum().item()
    assert out["total"] == pytest.approx(sse, rel=1e-5)
    assert out["clipping"] > out["rounding"] > 0 and 0 < out["clip_fraction"] < 0.01
    full = P.quantization_error(x, *_minmax_qparams(x, 4, False, False), 0, 15)
    assert full["clipping"] == 0 and full["clip_fraction"] == 0


def test_lp_loss_per_channel_shape() -> None:
    x = torch.zeros(4, 3, 2)
    xq = x + torch.arange(3.0).view(1, 3, 1)
    assert P.lp_loss(x, xq, 2, axis=1).tolist() == [0.0, 1.0, 4.0]
    assert P.lp_loss(x, xq, 1).item() == pytest.approx(1.0)


# ---------------------------------------------------------------- Lp search


def _loss_of_range(x, lo, hi, bits, sym, signed, p=2.4, axis=None):
    scale, zp = P.compute_qparams(lo, hi, bits, sym, signed)
    return P.lp_loss(x, P.fake_quantize(x, scale, zp, *P.quant_range(bits, signed), axis), p, axis)


@pytest.mark.parametrize("symmetric,signed", MODES)
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_lp_search_beats_minmax_on_heavy_tails(bits: int, symmetric: bool, signed: bool, device) -> None:
    x = _heavy(2048).to(device)
    lo, hi = P.lp_search(x, bits, symmetric, signed)
    searched = _loss_of_range(x, lo, hi, bits, symmetric, signed)
    minmax = _loss_of_range(x, x.min(), x.max(), bits, symmetric, signed)
    # min-max is one of the searched widths, so "no worse" would always hold: on heavy tails the
    # search must pick a clearly narrower range, with a strictly smaller loss
    assert hi - lo < 0.8 * (x.max() - x.min())
    assert searched < minmax
    assert lo <= 0 <= hi


def test_lp_search_one_sided_data_uses_zero_lower_bound() -> None:
    x = _heavy(2048).abs()
    lo, hi = P.lp_search(x, 3, symmetric=False, signed=False)
    assert lo == 0 and 0 < hi < x.max()


def test_mae_search_moves_less_than_mse_with_outlier() -> None:
    x = torch.randn(4096, generator=_gen(8))
    spiked = x.clone()
    spiked[0] = 60.0
    moves = {}
    for p in (1.0, 2.0):
        _, hi0 = P.lp_search(x, 4, True, True, p=p)
        _, hi1 = P.lp_search(spiked, 4, True, True, p=p)
        moves[p] = (hi1 - hi0).abs().item()
    assert moves[1.0] < moves[2.0]


def test_per_channel_search_matches_per_row_search(device) -> None:
    w = (torch.randn(5, 3, 4, generator=_gen(9)) * torch.tensor([0.1, 1, 5, 20, 0.5]).view(5, 1, 1)).to(device)
    for sym in (False, True):
        lo, hi = P.lp_search(w, 3, sym, True, axis=0)
        assert lo.shape == hi.shape == (5,)
        for c in range(5):
            lo_c, hi_c = P.lp_search(w[c], 3, sym, True)
            torch.testing.assert_close(torch.stack([lo[c], hi[c]]), torch.stack([lo_c, hi_c]))
        assert len(set(hi.tolist())) == 5  # each channel picked its own range
        per_channel = _loss_of_range(w, lo, hi, 3, sym, True, axis=0)
        shared = P.lp_search(w, 3, sym, True)
        assert per_channel.mean() < _loss_of_range(w, *shared, 3, sym, True)


def test_lp_search_chunking_does_not_change_result(monkeypatch: pytest.MonkeyPatch, device) -> None:
    x = _heavy(1024, seed=1).to(device)
    full = P.lp_search(x, 3, False, False, num_candidates=30)
    monkeypatch.setattr(P, "_CHUNK_ELEMENTS", 1500)  # ~1 candidate per chunk
    torch.testing.assert_close(P.lp_search(x, 3, False, False, num_candidates=30), full)


def test_lp_search_curve(device) -> None:
    x = _heavy(1024, seed=2).to(device)
    for sym in (False, True):
        lo, hi, curve = P.lp_search(x, 4, sym, True, num_candidates=40, return_curve=True)
        assert curve["loss"].shape == curve["width"].shape == curve["ratio"].shape == (40,)
        best = int(curve["best_index"])
        assert best == int(curve["loss"].argmin())
        assert curve["width"][best].item() == pytest.approx((hi - lo).item(), rel=1e-5)
        assert curve["loss"][best].item() == pytest.approx(_loss_of_range(x, lo, hi, 4, sym, True).item(), rel=1e-4)


def test_lp_search_validation() -> None:
    x = torch.randn(64)
    with pytest.raises(NonFiniteError):
        P.lp_search(torch.tensor([0.0, float("nan")]), 4, False, False)
    with pytest.raises(ConfigError):
        P.lp_search(x.view(8, 8), 4, False, False, axis=0, return_curve=True)
    with pytest.raises(ConfigError):
        P.lp_search(x, 4, False, False, p=0)
    with pytest.raises(BitWidthError):
        P.lp_search(x, 1, False, False)


def test_2d_search_range_includes_zero_for_one_signed_channels(device):
    """A channel whose values share one sign (e.g. a single weight) must still be representable."""
    w = torch.tensor([[0.5], [-0.25], [0.75]], device=device)  # three channels, one weight each, mixed signs overall
    from ptq_core.primitives import compute_qparams, fake_quantize, lp_search

    lo, hi = lp_search(w, 4, symmetric=False, signed=False, axis=0)
    scale, zp = compute_qparams(lo, hi, 4, False, False)
    assert torch.allclose(fake_quantize(w, scale, zp, 0, 15, axis=0), w, atol=1e-6)

"""Tests for ptq_core.observers (oracle: torch.ao.quantization min-max observers)."""

from __future__ import annotations

import pytest
import torch
from torch.ao.quantization import observer as tq_obs

from ptq_core import primitives as P
from ptq_core.errors import ConfigError, NonFiniteError
from ptq_core.observers import (
    OBSERVERS,
    MinMaxObserver,
    MSEObserver,
    PercentileObserver,
    make_observer,
)
from ptq_core.qscheme import QScheme


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _assert_qparams(ours: tuple[torch.Tensor, torch.Tensor], ref: tuple[torch.Tensor, torch.Tensor]) -> None:
    torch.testing.assert_close(ours[0], ref[0].to(torch.float32).reshape(ours[0].shape))
    torch.testing.assert_close(ours[1], ref[1].to(torch.float32).reshape(ours[1].shape))


# ---------------------------------------------------------------- min-max


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric,signed", [(False, False), (False, True), (True, True)])
def test_minmax_matches_torch_ao(bits: int, symmetric: bool, signed: bool) -> None:
    scheme = QScheme(bits=bits, symmetric=symmetric, signed=signed)
    ref = tq_obs.MinMaxObserver(
        dtype=torch.qint8 if signed else torch.quint8,
        qscheme=torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine,
        quant_min=scheme.qmin,
        quant_max=scheme.qmax,
    )
    ours = MinMaxObserver(scheme)
    for seed in range(3):
        x = _randn(16, 8, seed=seed) + 0.5
        ours(x)
        ref(x)
    _assert_qparams(ours.calculate_qparams(), ref.calculate_qparams())


def test_per_channel_minmax_matches_torch_ao() -> None:
    scheme = QScheme(bits=4, signed=True, per_channel=True, ch_axis=0)
    ref = tq_obs.PerChannelMinMaxObserver(
        ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_affine, quant_min=-8, quant_max=7
    )
    w = _randn(6, 3, 2, 2) * torch.arange(1.0, 7.0).view(6, 1, 1, 1)  # [6, 3, 2, 2]
    ours = MinMaxObserver(scheme)
    ours(w)
    ref(w)
    scale, zp = ours.calculate_qparams()
    assert scale.shape == (6,)
    _assert_qparams((scale, zp), ref.calculate_qparams())


def test_minmax_running_and_ema() -> None:
    batches = [torch.tensor([-1.0, 0.5, 2.0]), torch.tensor([-3.0, 1.0])]
    running, ema = MinMaxObserver(QScheme()), MinMaxObserver(QScheme(), momentum=0.9)
    for b in batches:
        running(b)
        ema(b)
    assert (running.min_val.item(), running.max_val.item()) == (-3.0, 2.0)
    assert ema.min_val.item() == pytest.approx(-1.2) and ema.max_val.item() == pytest.approx(1.9)
    with pytest.raises(ConfigError):
        MinMaxObserver(QScheme(), momentum=1.5)


def test_observer_forward_is_passthrough_and_lifecycle() -> None:
    obs = MinMaxObserver(QScheme(bits=4))
    assert not obs.observed
    with pytest.raises(ConfigError, match="not observed"):
        obs.calculate_qparams()
    x = _randn(4, 4).requires_grad_(True)
    y = obs(x)
    assert y is x and obs.observed and not obs.min_val.requires_grad
    obs.reset()
    assert not obs.observed
    with pytest.raises(NonFiniteError):
        obs(torch.tensor([1.0, float("nan")]))
    with pytest.raises(NonFiniteError):
        obs(torch.tensor([float("inf")]))


def test_per_channel_negative_axis_and_channel_mismatch() -> None:
    obs = MinMaxObserver(QScheme(per_channel=True, ch_axis=-1))
    obs(_randn(2, 3, 5))
    assert obs.calculate_qparams()[0].shape == (5,)
    with pytest.raises(ConfigError, match="channel count"):
        obs(_randn(2, 4))


# ---------------------------------------------------------------- percentile


def test_percentile_clips_outlier() -> None:
    x = _randn(10_000, seed=1)
    x[17] = 1000.0
    pct, mm = PercentileObserver(QScheme(), percentile=99.9), MinMaxObserver(QScheme())
    pct(x)
    mm(x)
    assert pct.max_val.item() < 5.0 and mm.max_val.item() == 1000.0
    assert pct.calculate_qparams()[0] < mm.calculate_qparams()[0] / 50


def test_percentile_hand_example_average_and_100() -> None:
    obs = PercentileObserver(QScheme(), percentile=99)
    obs(torch.arange(1.0, 101.0))
    assert (obs.min_val.item(), obs.max_val.item()) == (2.0, 99.0)  # nearest rank
    obs(torch.arange(1.0, 101.0) * 3)
    assert obs.max_val.item() == pytest.approx((99 + 297) / 2)  # averaged over batches
    full = PercentileObserver(QScheme(), percentile=100)
    full(torch.tensor([-2.0, 0.1, 3.0]))
    assert (full.min_val.item(), full.max_val.item()) == (-2.0, 3.0)
    with pytest.raises(ConfigError):
        PercentileObserver(QScheme(), percentile=40)


def test_percentile_per_channel_and_subsampling(monkeypatch: pytest.MonkeyPatch) -> None:
    obs = PercentileObserver(QScheme(per_channel=True, ch_axis=1), percentile=99.0)
    monkeypatch.setattr(obs, "max_samples", 600)  # forces sampling 200 of 1000 per channel
    x = _randn(1000, 3, seed=2) * torch.tensor([1.0, 10.0, 100.0])  # [1000, 3]
    obs(x)
    assert obs.max_val.shape == (3,)
    assert 1.0 < obs.max_val[0] < obs.max_val[1] < obs.max_val[2] < 400


# ---------------------------------------------------------------- MSE / Lp search


def test_mse_observer_equals_lp_search_when_data_fits() -> None:
    x = _randn(2, 500, seed=3)
    obs = MSEObserver(QScheme(bits=3), p=2.0, num_candidates=50)
    obs(x[0])
    obs(x[1])
    lo, hi = P.lp_search(x, 3, False, False, p=2.0, num_candidates=50)
    _assert_qparams(obs.calculate_qparams(), P.compute_qparams(lo, hi, 3, False, False))


def test_mse_observer_sample_is_bounded_deterministic_and_keeps_extremes() -> None:
    def run() -> MSEObserver:
        obs = MSEObserver(QScheme(bits=4), max_elements=1000, num_candidates=20)
        for seed in range(6):
            obs(_randn(700, seed=seed))
        obs(torch.tensor([-9.0] + [0.0] * 699))
        return obs

    a, b = run(), run()
    assert a.samples.numel() <= 1000 and torch.equal(a.samples, b.samples)
    assert a.min_val.item() == -9.0
    assert a.search_curve()["width"][-1].item() == pytest.approx(9.0 + a.max_val.item())
    torch.testing.assert_close(a.calculate_qparams(), b.calculate_qparams())


def test_mse_observer_per_channel_and_curve() -> None:
    w = _randn(4, 8, seed=4) * torch.tensor([0.1, 1.0, 3.0, 10.0]).view(4, 1)  # [4, 8]
    obs = MSEObserver(QScheme(bits=4, signed=True, per_channel=True), num_candidates=40)
    obs(w)
    scale, zp = obs.calculate_qparams()
    lo, hi = P.lp_search(w, 4, False, True, num_candidates=40, axis=0)
    _assert_qparams((scale, zp), P.compute_qparams(lo, hi, 4, False, True))
    assert len(set(scale.tolist())) == 4
    with pytest.raises(ConfigError):
        obs.search_curve()
    per_tensor = MSEObserver(QScheme(bits=4), num_candidates=40)
    per_tensor(w)
    curve = per_tensor.search_curve()
    assert curve["loss"].shape == (40,) and {"min_val", "max_val", "best_index"} <= set(curve)


def test_mse_beats_minmax_on_heavy_tails() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4000, generator=g) / torch.randn(4000, generator=g).abs().clamp(min=0.3)
    for bits in (2, 3, 4):
        scheme = QScheme(bits=bits)
        losses = []
        for obs in (MSEObserver(scheme), MinMaxObserver(scheme)):
            obs(x)
            xq = P.fake_quantize(x, *obs.calculate_qparams(), scheme.qmin, scheme.qmax)
            losses.append(P.lp_loss(x, xq, 2.4).item())
        assert losses[0] <= losses[1]


# ---------------------------------------------------------------- factory


def test_make_observer() -> None:
    assert set(OBSERVERS) == {"minmax", "mse", "mae", "percentile"}
    obs = make_observer("percentile", QScheme(), percentile=99.0)
    assert isinstance(obs, PercentileObserver) and obs.percentile == 99.0
    with pytest.raises(ConfigError, match="minmax, mse, percentile"):
        make_observer("histogram", QScheme())
    with pytest.raises(ConfigError, match="bad arguments"):
        make_observer("minmax", QScheme(), percentile=3)

"""The quantizer contract, the one on/off switch, `quant_state`, and the shared small helpers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ptq_core.errors import BitWidthError, ConfigError, DataError
from ptq_core.fake_quant import FakeQuantize
from ptq_core.layerwise.quantizers import CodeQuantizer, MultipointQuantizer
from ptq_core.modules import QuantConv2d, QuantLinear, quant_layers, quant_state, set_quant_state
from ptq_core.primitives import (
    bernoulli_mask,
    channel_rows,
    error_parts,
    fake_quantize,
    qdrop_mix,
    quant_range,
    quantization_error,
)
from ptq_core.qscheme import QScheme, int_range
from ptq_core.quantizer import AffineQuantizer, Quantizer
from ptq_core.recon.rounding import AdaRoundQuantizer

W_SCHEME = QScheme(bits=4, symmetric=True, signed=True, per_channel=True)
A_SCHEME = QScheme(bits=8)


def _model() -> nn.Sequential:
    conv = QuantConv2d.from_float(nn.Conv2d(2, 4, 3), W_SCHEME, A_SCHEME, "minmax", "minmax")
    fc = QuantLinear.from_float(nn.Linear(4, 3), W_SCHEME, A_SCHEME, "minmax", "minmax")
    return nn.Sequential(conv, nn.Flatten(2), nn.AdaptiveAvgPool1d(1), nn.Flatten(1), fc)


def _states(model: nn.Module) -> dict[str, tuple[bool, bool]]:
    return {n: (q.quant_weight, q.quant_act) for n, q in quant_layers(model)}


def _calibrated_weight_quantizer(w: torch.Tensor) -> FakeQuantize:
    fq = FakeQuantize(W_SCHEME, "minmax")
    fq(w)
    fq.calibrate()
    return fq


def test_quant_state_restores_mixed_states_after_nesting_and_an_exception():
    model = _model()
    model[0].set_quant_state(True, False)
    model[4].set_quant_state(False, True)
    before = _states(model)
    with pytest.raises(RuntimeError, match="inside"):
        with quant_state(model, False, False):
            assert set(_states(model).values()) == {(False, False)}
            with quant_state(model, act=True) as layers:
                assert [q.quant_act for q in layers] == [True, True]
                assert [q.quant_weight for q in layers] == [False, False]  # None: weight left as it was
                set_quant_state(model, True, True)  # a change inside the block is undone too
                raise RuntimeError("inside")
    assert _states(model) == before


def test_quant_state_takes_a_list_of_layers_and_leaves_the_others():
    model = _model()
    set_quant_state(model, True, True)
    with quant_state([model[0]], False, False):
        assert _states(model) == {"0": (False, False), "4": (True, True)}
    assert set(_states(model).values()) == {(True, True)}


def test_the_layer_flag_is_the_only_switch():
    layer = _model()[0]
    w = layer.weight.detach()
    layer.weight_quantizer = _calibrated_weight_quantizer(w)
    assert (layer.quant_weight, layer.quant_act) == (False, False)  # prepared layers start off
    assert not hasattr(layer.weight_quantizer, "enabled")
    assert torch.equal(layer.quantized_weight(), layer.weight)
    q = layer.weight_quantizer(w)  # called on its own, a calibrated quantizer always quantizes
    assert not torch.equal(q, w) and len(torch.unique(q[0])) <= 16
    layer.set_quant_state(True, False)
    assert torch.equal(layer.quantized_weight(), q)


def test_only_the_observer_backed_quantizer_owns_an_observer():
    w = torch.randn(4, 2, 3, 3)
    fq = _calibrated_weight_quantizer(w)
    codes = torch.randint(-8, 8, w.shape).float()
    points = torch.tensor([1, 2, 1, 1])
    multi = MultipointQuantizer(4, torch.randint(-8, 8, (2, 4, 18)), torch.rand(2, 4), points, w.shape)
    learned = [AdaRoundQuantizer(fq, w), CodeQuantizer(fq, codes, fq.scale, fq.zero_point), multi]
    assert hasattr(fq, "observer") and FakeQuantize(W_SCHEME).observe
    for q in learned:
        assert isinstance(q, Quantizer) and not isinstance(q, FakeQuantize)
        assert not any("observer" in name for name, _ in q.named_modules())
        assert not q.observe and q.is_calibrated and q.bits == 4
        assert q(w).shape == w.shape
    assert not isinstance(multi, AffineQuantizer) and "scale" not in multi.state_dict()
    assert learned[1].observer_name == "minmax"  # a record of how the grid was chosen, not an observer


def test_state_dicts_saved_with_the_unused_observer_still_load():
    w = torch.randn(4, 2, 3, 3)
    fq = _calibrated_weight_quantizer(w)
    ada = AdaRoundQuantizer(fq, w)
    with torch.no_grad():
        ada.alpha.normal_()  # learned rounding differs from a fresh start
    old = {**ada.state_dict(), "observer.min_val": torch.zeros(4), "observer.max_val": torch.ones(4)}
    fresh = AdaRoundQuantizer(fq, w)
    assert not torch.equal(fresh(w), ada(w))
    fresh.load_state_dict(old)  # strict: the legacy observer keys are dropped, nothing else
    assert torch.equal(fresh(w), ada(w))
    with pytest.raises(RuntimeError, match="Unexpected"):
        fresh.load_state_dict({**old, "not_a_key": torch.zeros(1)})
    multi = MultipointQuantizer(4, torch.ones(1, 4, 18, dtype=torch.int8), torch.ones(1, 4), torch.ones(4), w.shape)
    multi.load_state_dict(
        {**multi.state_dict(), "scale": torch.ones(4), "zero_point": torch.zeros(4), "_calibrated": torch.tensor(True)}
    )


def test_int_range_is_the_grid_of_every_scheme():
    for bits in range(2, 9):
        for signed in (False, True):
            s = QScheme(bits=bits, signed=signed)
            assert int_range(bits, signed) == (s.qmin, s.qmax) == quant_range(bits, signed)
            assert s.qmax - s.qmin == 2**bits - 1
    with pytest.raises(BitWidthError):
        int_range(32, True)
    with pytest.raises(ConfigError):
        _ = QScheme(bits=32).qmin


def test_channel_rows_matches_the_hand_written_views():
    w = torch.randn(5, 3, 2, 2)
    assert torch.equal(channel_rows(w, 0), w.reshape(5, -1))
    assert torch.equal(channel_rows(w, 1), w.transpose(0, 1).reshape(3, -1))
    assert torch.equal(channel_rows(w, -1)[1], w[..., 1].flatten())
    assert channel_rows(w, None).shape == (1, w.numel())
    with pytest.raises(DataError):
        channel_rows(torch.tensor(1.0), 0)


def test_error_parts_marks_exactly_the_values_beyond_the_grid():
    x = torch.tensor([-3.0, -0.26, 0.0, 0.26, 0.74, 5.0])
    scale, zp = torch.tensor(0.5), torch.tensor(0.0)
    sq, clipped = error_parts(x, scale, zp, -2, 1)  # grid -1.0 .. 0.5
    assert clipped.tolist() == [True, False, False, False, False, True]
    assert torch.equal(sq, (x - fake_quantize(x, scale, zp, -2, 1)).square())
    err = quantization_error(x, scale, zp, -2, 1)
    assert err["clipping"] == pytest.approx(2.0**2 + 4.5**2) and err["clip_fraction"] == pytest.approx(2 / 6)


def test_qdrop_mix_takes_each_element_from_one_side():
    q, f = torch.randn(64, 32), torch.randn(64, 32) * 100
    keep = bernoulli_mask(q, 0.5)
    mixed = qdrop_mix(q, f, keep)
    assert torch.equal(mixed, torch.where(keep.bool(), f, q))
    assert qdrop_mix(q, f, None) is q
    assert 0 < int(keep.sum()) < keep.numel()


def test_the_report_shows_a_multipoint_weight_without_a_stand_in_grid():
    from ptq_core.report import quantizer_params

    model = _model()
    layer = model[0]
    codes = torch.randint(-8, 8, (2, 4, 18))
    layer.weight_quantizer = MultipointQuantizer(
        4, codes, torch.rand(2, 4), torch.tensor([1, 2, 1, 1]), layer.weight.shape
    )
    layer.set_quant_state(True, False)
    assert quantizer_params(model)[0]["weight"] == {"bits": 4, "form": "MultipointQuantizer", "per_channel": False}

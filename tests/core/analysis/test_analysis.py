"""Properties of the Diagnose analyses: ranges/outliers, error split, clusters, sensitivity, diagnosis, allocation."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ptq_core.analysis import clusters, diagnosis, mixed_precision, ranges, sensitivity
from ptq_core.errors import ConfigError, RunCancelled
from ptq_core.modules import quant_layers, set_quant_state
from ptq_core.prepare import QuantSpec
from tests.support.helpers import TinyResNet, randomize_bn

MINMAX = QuantSpec(w_observer="minmax", a_observer="minmax")


@pytest.fixture
def model() -> TinyResNet:
    torch.manual_seed(0)
    return randomize_bn(TinyResNet())


@pytest.fixture
def images() -> torch.Tensor:
    torch.manual_seed(1)
    return TinyResNet.example_inputs(48)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- ranges and outlier scores -------------------------------------------------------------


def test_injected_outlier_channel_gets_the_top_zscore():
    torch.manual_seed(0)
    w = torch.randn(16, 8, 3, 3)
    w[5] *= 20
    stats = ranges.weight_channel_stats(w)
    assert int(np.argmax(stats.z)) == 5 and stats.z[5] > 3
    x = torch.rand(32, 16, 6, 6)
    x[:, 11] *= 50
    act = ranges.activation_channel_stats(x, axis=1)
    assert int(np.argmax(act.z)) == 11 and act.z[11] > 10 * max(sorted(act.z)[-2], 3.5)


def test_dead_and_constant_channels_are_found():
    x = torch.rand(8, 6, 5, 5)
    x[:, 2] = 0.0
    x[:, 4] = 3.0
    stats = ranges.activation_channel_stats(x)
    assert stats.dead == [2] and stats.constant == [4]
    assert np.allclose(stats.minimum[4], 3.0) and stats.count == 8 * 25


def test_layer_ranges_reads_weights_and_inputs(model, images):
    data = ranges.layer_ranges(model, images, "conv3")
    assert len(data["weights"]["z"]) == 16 and len(data["activations"]["z"]) == 8
    assert min(data["activations"]["minimum"]) >= 0  # conv3's input comes out of a ReLU
    with pytest.raises(ConfigError, match="no layer"):
        ranges.layer_ranges(model, images, "nope")


def test_clipping_falls_and_rounding_rises_as_the_range_grows():
    torch.manual_seed(0)
    rows = torch.randn(4, 20_000)
    splits = [ranges.channel_error_split(rows, 4, per_channel=False, ratio=r) for r in (0.2, 0.4, 0.6, 0.8, 1.0)]
    clip = [s["clipping"].sum() for s in splits]
    rnd = [s["rounding"].sum() for s in splits]
    assert all(a > b for a, b in itertools.pairwise(clip[:-1])) and clip[-1] == 0
    assert all(a < b for a, b in itertools.pairwise(rnd))
    # the split adds up to the measured error: mean squared error of each row on the same grid
    split = splits[2]
    lo, hi = 0.6 * rows.min(), 0.6 * rows.max()  # per-tensor grid over 60% of the range, 4 bits
    step = (hi - lo) / 15
    q = (torch.clamp(torch.round(rows / step) + torch.round(-lo / step), 0, 15) - torch.round(-lo / step)) * step
    assert np.allclose(split["total"], (rows - q).square().mean(1).numpy(), rtol=1e-4)
    assert np.allclose(split["clipping"] + split["rounding"], split["total"])


def test_per_tensor_grid_hurts_the_small_channels_next_to_an_outlier():
    torch.manual_seed(0)
    rows = torch.randn(8, 5000)
    rows[0] *= 30
    tensor = ranges.channel_error_split(rows, 4, per_channel=False)
    channel = ranges.channel_error_split(rows, 4, per_channel=True)
    assert (tensor["rounding"][1:] > 20 * channel["rounding"][1:]).all()
    with pytest.raises(ConfigError, match="clipping ratio"):
        ranges.channel_error_split(rows, 4, ratio=0.0)


# -- clusters ------------------------------------------------------------------------------


def test_cluster_view_shares_one_projection(model, images):
    q = sensitivity.rtn_model(model, images, MINMAX).model
    labels = np.arange(len(images)) % 10
    feats = clusters.capture_features(q, images, "conv3")
    assert feats.float_feats.shape == (48, 16 * 6 * 6)
    same = clusters.project(feats.float_feats, feats.float_feats)
    assert np.allclose(same["float"], same["quant"])  # identical features land on identical points
    view = clusters.cluster_view(q, images, labels, clusters.LOGITS, "pca", k=3)
    assert view["float"].shape == (48, 2) and set(view["clusters"]) == {0, 1, 2}
    fr, qr = view["pred_float"] == labels, view["pred_quant"] == labels
    assert ((view["outcome"] == 1) == (fr & ~qr)).all() and ((view["outcome"] == 0) == (fr & qr)).all()
    assert _same(q, sensitivity.rtn_model(model, images, MINMAX).model)  # the shared model was not switched
    with pytest.raises(ConfigError, match="UMAP takes at most"):
        clusters.project(np.zeros((3000, 4)), np.zeros((3000, 4)), "umap")


def test_quantized_features_move_more_at_fewer_bits(model, images):
    def shift(bits: int) -> float:
        q = sensitivity.rtn_model(model, images, sensitivity.uniform_spec(MINMAX, bits)).model
        f = clusters.capture_features(q, images, "conv3")
        return float(np.abs(f.quant_feats - f.float_feats).mean())

    assert shift(2) > 4 * shift(8)


# -- sensitivity ---------------------------------------------------------------------------


def test_proxy_ranks_two_bits_below_eight(model, images):
    before = copy.deepcopy(model)
    rows = sensitivity.sensitivity_proxy(model, images, images[:16], MINMAX, bits=(2, 8))
    by = {(r["layer"], r["bits"]): r for r in rows}
    layers = {r["layer"] for r in rows}
    assert layers == {"conv1", "conv2", "conv3", "fc"}
    for name in layers:
        assert by[name, 2]["sqnr_db"] < by[name, 8]["sqnr_db"] - 10
        assert by[name, 2]["noise"] > by[name, 8]["noise"]
    assert by["conv3", 8]["weights"] == 16 * 8 * 9
    assert _same(model, before)


def test_sweep_settings_split_weights_and_activations_and_the_all_but_view(model, images):
    assert sensitivity.parse_settings("W4A8, a4, 2, W2") == [(4, 8), (32, 4), (2, 2), (2, 32)]
    with pytest.raises(ConfigError, match="W4A8"):
        sensitivity.parse_settings("W4B8")
    only = sensitivity.sensitivity_proxy(model, images, images[:16], MINMAX, settings=[(32, 2)])
    assert {(r["setting"], r["wbits"], r["abits"], r["bits"]) for r in only} == {("A2", 32, 2, None)}
    rest = sensitivity.sensitivity_proxy(model, images, images[:16], MINMAX, settings=[(32, 2)], view="all but")
    alone = {r["layer"]: r["sqnr_db"] for r in only}
    for r in rest:  # every other layer's noise is in: never much cleaner than any of them alone
        assert r["view"] == "all but"
        assert all(r["sqnr_db"] <= s + 3.0 for name, s in alone.items() if name != r["layer"])


def _loader(model: torch.nn.Module, images: torch.Tensor) -> DataLoader:
    with torch.no_grad():
        labels = model(images).argmax(1)  # float model is 100% right by construction
    return DataLoader(TensorDataset(images, labels), batch_size=16)


def test_accuracy_sweep_and_cancel(model, images):
    loader = _loader(model, images)
    events = []
    rows = sensitivity.sensitivity_accuracy(model, images, loader, MINMAX, bits=(2,), progress=events.append)
    layers = [name for name, _ in quant_layers(sensitivity.rtn_model(model, images, MINMAX).model)]
    assert [r["layer"] for r in rows] == layers and all(r["fp_top1"] == 100.0 for r in rows)
    assert len(events) == len(layers) and events[-1].step == events[-1].total == len(layers)
    worst = max(rows, key=lambda r: r["drop"])
    assert worst["drop"] > 0  # two bits in one layer costs something somewhere
    qmodel = sensitivity.rtn_model(model, images, sensitivity.uniform_spec(MINMAX, 2)).model
    set_quant_state(qmodel, False, False)
    set_quant_state(qmodel, True, True, names={worst["layer"]})
    with torch.no_grad():
        top1 = 100.0 * (qmodel(images).argmax(1) == loader.dataset.tensors[1]).float().mean().item()
    assert worst["top1"] == pytest.approx(top1) and worst["drop"] == pytest.approx(100.0 - top1)

    def cancel(_event):
        raise RunCancelled("stop")

    before = copy.deepcopy(model)
    with pytest.raises(RunCancelled):
        sensitivity.sensitivity_accuracy(model, images, loader, MINMAX, bits=(2,), progress=cancel)
    assert _same(model, before)


def test_weight_act_split_isolates_each_side(model, images):
    loader = _loader(model, images)
    split = sensitivity.weight_act_split(
        model,
        images,
        loader,
        QuantSpec(wbits=32, abits=2, first_last_bits=None, w_observer="minmax", a_observer="minmax"),
    )
    assert split["float"]["top1"] == 100.0
    assert split["weights only"] == split["float"]  # weights stay float at 32 bits
    assert split["activations only"] == split["both"]
    assert split["both"]["top1"] < 100.0


# -- diagnosis -----------------------------------------------------------------------------


def _causes(result: dict, layer: str) -> set[str]:
    return {f["cause"] for f in result["findings"] if f["layer"] == layer}


def _diagnose(model, images, spec=MINMAX, **thresholds):
    q = sensitivity.rtn_model(model, images, spec)
    return diagnosis.diagnose(q.model, q.report, model, images, diagnosis.DiagnosisConfig(**thresholds))


def test_dead_channel_is_flagged(model, images):
    with torch.no_grad():
        model.conv1.weight[3] = 0.0
        model.bn1.running_mean[3] = 0.0
        model.bn1.bias[3] = -1.0  # relu(bn1(conv1)) of channel 3 is always 0: conv2's input channel 3 is dead
    result = _diagnose(model, images)
    assert "dead or near-constant channels" in _causes(result, "conv2")
    finding = next(f for f in result["findings"] if f["layer"] == "conv2" and f["cause"].startswith("dead"))
    assert "[3]" in finding["evidence"] and finding["fix"] == diagnosis.FIXES[finding["cause"]]


def test_low_bit_final_layer_is_flagged(model, images):
    low = _diagnose(
        model, images, QuantSpec(wbits=4, abits=4, first_last_bits=None, w_observer="minmax", a_observer="minmax")
    )
    assert "low-bit final layer" in _causes(low, "fc")
    eight = _diagnose(
        model, images, QuantSpec(wbits=4, abits=4, first_last_bits=8, w_observer="minmax", a_observer="minmax")
    )
    assert all(f["cause"] != "low-bit final layer" for f in eight["findings"])


def test_outlier_input_channel_is_found_and_threshold_flags(model, images):
    with torch.no_grad():
        model.bn1.weight[6] *= 40  # conv1 output channel 6 (conv2's input) becomes an outlier
        model.bn1.bias[6] = 5.0
    result = _diagnose(model, images, sqnr_db=60.0)
    assert "outlier channels (activations)" in _causes(result, "conv2")
    ev = next(f["evidence"] for f in result["findings"] if f["layer"] == "conv2" and "outlier" in f["cause"])
    assert ev.startswith("input channel(s) 6")
    assert result["threshold_db"] <= 60  # relative to the model's own spread: never above the absolute one
    assert all(r["flagged"] == (r["sqnr_alone"] < result["threshold_db"] and not r["kept"]) for r in result["layers"])
    assert {r["layer"] for r in result["layers"] if r["kept"]} == {"conv1", "fc"}  # first/last at 8 bits
    none = _diagnose(model, images, sqnr_db=0.0)
    assert all(f["severity"] == "watch" for f in none["findings"])


def test_residual_range_mismatch_is_found(model, images):
    with torch.no_grad():
        model.bn2.weight.mul_(1e-3)
        model.bn2.bias.mul_(1e-3)  # the residual branch becomes ~1000x smaller than the skip
    result = _diagnose(model, images)
    assert result["residual_checked"]
    assert "range mismatch at a residual add" in _causes(result, "conv3")
    assert "range mismatch at a residual add" not in _causes(_diagnose(randomize_bn(TinyResNet()), images), "conv3")


def test_negative_inputs_under_an_unsigned_grid_are_found(model, images):
    q = sensitivity.rtn_model(model, images, MINMAX)
    fq = q.model.conv1.act_quantizer
    assert diagnosis._lowest_level(q.model.conv1) < 0  # min-max keeps the negative range: no problem
    fq.set_qparams(fq.scale.clone(), torch.zeros_like(fq.zero_point))  # grid now starts at 0
    result = diagnosis.diagnose(q.model, q.report, model, images)
    assert "negative activations under an unsigned quantizer" in _causes(result, "conv1")


def test_bad_thresholds_are_refused():
    with pytest.raises(ConfigError):
        diagnosis.DiagnosisConfig(z=-1)
    with pytest.raises(ConfigError):
        diagnosis.DiagnosisConfig(sqnr_db=float("nan"))


# -- mixed precision -----------------------------------------------------------------------


def _rows(noise: dict[str, dict[int, float]], weights: dict[str, int]) -> list[dict]:
    return [
        {"layer": name, "index": i, "bits": b, "noise": n, "weights": weights[name]}
        for i, (name, per_bits) in enumerate(noise.items())
        for b, n in per_bits.items()
    ]


NOISE = {
    "a": {2: 0.5, 4: 0.03, 8: 1e-4},
    "b": {2: 0.02, 4: 0.002, 8: 1e-5},
    "c": {2: 0.9, 4: 0.2, 8: 1e-3},
    "d": {2: 0.05, 4: 0.004, 8: 2e-5},
}
WEIGHTS = {"a": 100, "b": 900, "c": 50, "d": 400}


def test_allocation_respects_the_budget_and_beats_uniform():
    rows = _rows(NOISE, WEIGHTS)
    total = sum(WEIGHTS.values())
    for budget in (2.0, 3.0, 4.0, 5.5, 8.0):
        alloc = mixed_precision.allocate(rows, budget)
        size = sum(WEIGHTS[n] * b for n, b in alloc.bits.items())
        assert size == alloc.size_bits <= budget * total
        for u in alloc.uniform:
            if u["fits"]:
                assert alloc.noise <= u["noise"] + 1e-12
    at4 = mixed_precision.allocate(rows, 4.0)
    uniform4 = next(u for u in at4.uniform if u["bits"] == 4)
    assert at4.noise < 0.5 * uniform4["noise"] and at4.predicted_sqnr_db > uniform4["predicted_sqnr_db"]


def test_allocation_is_the_exhaustive_optimum():
    rows = _rows(NOISE, WEIGHTS)
    names, options = list(NOISE), [2, 4, 8]
    for budget in (3.0, 4.0, 6.0):
        best = min(
            (sum(NOISE[n][b] for n, b in zip(names, combo, strict=True)), combo)
            for combo in itertools.product(options, repeat=4)
            if sum(WEIGHTS[n] * b for n, b in zip(names, combo, strict=True)) <= budget * 1450
        )
        assert mixed_precision.allocate(rows, budget).noise == pytest.approx(best[0])


def test_allocation_on_a_real_proxy(model, images):
    rows = sensitivity.sensitivity_proxy(model, images, images[:16], MINMAX, bits=(2, 4, 8))
    alloc = mixed_precision.allocate(rows, 4.0)
    uniform4 = next(u for u in alloc.uniform if u["bits"] == 4)
    assert alloc.size_bits <= alloc.budget_bits and alloc.noise <= uniform4["noise"]
    assert mixed_precision.overrides_for(alloc.bits)["fc"]["wbits"] == alloc.bits["fc"]


def test_allocation_refuses_impossible_budgets():
    rows = _rows(NOISE, WEIGHTS)
    with pytest.raises(ConfigError, match="below the smallest"):
        mixed_precision.allocate(rows, 1.5)
    with pytest.raises(ConfigError, match="incomplete"):
        mixed_precision.allocate(rows[:-1], 4.0)
    with pytest.raises(ConfigError, match="empty"):
        mixed_precision.allocate([], 4.0)

"""`ptq_core.explain`: the torch side of the Learn and Diagnose views, checked without the app."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ptq_core.analysis import ranges
from ptq_core.errors import ConfigError, DataError
from ptq_core.explain import (
    K_CHOICES,
    adaround_demo,
    allocation,
    architecture,
    cat,
    channel_view,
    clip_curve,
    correction_view,
    count_macs,
    example_batch,
    grid_view,
    knob_sweep,
    layer_values,
    multipoint_demo,
    qdrop_demo,
    qdrop_mix_picture,
    quantizer_view,
    sample_logits,
)
from ptq_core.prepare import QuantSpec


def _small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)).eval()


def test_macs_follow_the_layer_shapes_and_the_model_is_untouched():
    net = _small_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    macs = count_macs(net, torch.randn(2, 1, 8, 8))
    conv, lin = net[0], net[3]
    assert macs == {"0": 4 * 8 * 8 * conv.in_channels * 9, "3": lin.out_features * lin.in_features}
    arch = architecture(net, torch.randn(2, 1, 8, 8), QuantSpec(wbits=4, abits=4, first_last_bits=None))
    assert arch["total_macs"] == sum(macs.values())
    assert arch["quantized_layers"] == 2 and arch["total_params"] == sum(p.numel() for p in net.parameters())
    assert {r["layer"]: r["bits"] for r in arch["rows"] if r["status"] == "quantized"} == {"0": "W4/A4", "3": "W4/A4"}
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    assert not any(m._forward_hooks for m in net.modules())  # the hooks went on a copy


def test_a_model_that_does_not_take_the_data_is_one_line():
    with pytest.raises(DataError, match="cannot run on this data") as info:
        architecture(_small_net(), torch.randn(2, 3, 8, 8), QuantSpec())
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("ratio", [1.0, 0.6])
def test_the_quantizer_view_agrees_with_the_channel_error_split(ratio, symmetric):
    """One grid over a clipped range, one rounding: the Learn page and the Outlier channels page agree."""
    values = torch.randn(5000, generator=torch.Generator().manual_seed(1)).mul(3).add(0.5).numpy()
    view = quantizer_view(values, 4, ratio, symmetric)
    split = ranges.channel_error_split(torch.from_numpy(values)[None], 4, False, ratio, symmetric)
    assert view["scale"] == pytest.approx(float(split["scale"][0]), rel=1e-6)
    assert view["clipping_mse"] == pytest.approx(float(split["clipping"][0]), rel=1e-4, abs=1e-12)
    assert view["rounding_mse"] == pytest.approx(float(split["rounding"][0]), rel=1e-4)
    assert view["clip_fraction"] == pytest.approx(float(split["clip_fraction"][0]))
    assert (view["clip_fraction"] > 0) == (ratio < 1)


def test_the_clip_curve_optimum_is_its_lowest_point():
    values = np.random.default_rng(0).standard_t(3, size=20000).astype(np.float32)  # heavy tails: clipping pays
    curve = clip_curve(values, 3, symmetric=True)
    assert curve["best_mse"] == min(curve["mse"])
    assert 0 < curve["best_ratio"] < 1


def _logits(seed: int = 0, n: int = 600, classes: int = 5) -> dict:
    g = np.random.default_rng(seed)
    zf = g.normal(size=(2 * n, classes)).astype(np.float32) * 3
    labels = zf.argmax(1)
    zq = (0.4 * zf + g.normal(size=zf.shape) * 0.8 + np.linspace(-1, 1, classes)).astype(np.float32)
    return {
        "fit_q": zq[:n],
        "fit_f": zf[:n],
        "eval_q": zq[n:],
        "eval_f": zf[n:],
        "labels": labels[n:],
        "fit_set": {"size": n},
        "eval_set": {"size": n},
    }


def test_cat_correction_view_blends_between_quantized_and_corrected():
    logits = _logits()
    view = correction_view(logits, k=4, pca=None, alpha=1.0, fit_size=600)
    quantized = 100.0 * float((logits["eval_q"].argmax(1) == logits["labels"]).mean())
    curve = view["alpha_curve"]
    assert curve["alpha"] == cat.ALPHA_GRID and curve["top1"][0] == pytest.approx(quantized)  # alpha 0: no change
    assert curve["top1"][-1] > quantized  # the fitted correction helps on held-out samples
    assert len(view["cluster_means"]["float"]) == 4 and view["shown_index"] == list(range(len(logits["labels"])))
    one = sample_logits(logits, 4, None, 0.0, 600, index=3)
    assert one["corrected"] == pytest.approx(one["quantized"]) and one["label"] == int(logits["labels"][3])
    with pytest.raises(ConfigError, match="sample index"):
        sample_logits(logits, 4, None, 0.5, 600, index=len(logits["labels"]))


def test_cat_knob_sweep_covers_every_choice():
    logits = _logits(1)
    sweep = knob_sweep(logits, "k", k=4, pca=None, alpha=0.5, fit_size=600)
    assert sweep["values"] == K_CHOICES and len(sweep["top1"]) == len(K_CHOICES)
    assert all(0 <= t <= 100 for t in sweep["top1"])
    assert knob_sweep(logits, "pca", 4, None, 0.5, 600)["values"] == [0, 2, 3, 4, 5]
    with pytest.raises(ConfigError, match="knob"):
        knob_sweep(logits, "alpha", 4, None, 0.5, 600)


def test_qdrop_mix_is_exact_and_validated():
    rng = np.random.default_rng(0)
    x_fp = rng.normal(size=(16, 16)).astype(np.float32)
    x_q = np.round(x_fp * 2) / 2
    for p in (0.0, 1.0):
        pic = qdrop_mix_picture(x_fp, x_q, p)
        assert np.array_equal(pic["mixed"], x_fp if p == 1.0 else x_q)
    pic = qdrop_mix_picture(x_fp, x_q, 0.5)
    float_part = pic["mask"] == 1
    assert np.array_equal(pic["mixed"][float_part], x_fp[float_part])
    assert np.array_equal(pic["mixed"][~float_part], x_q[~float_part])
    with pytest.raises(ConfigError):
        qdrop_mix_picture(x_fp, x_q, 1.5)


def test_grid_view_is_validated():
    values = np.linspace(-1, 1, 101, dtype=np.float32)
    auto = quantizer_view(values, 4, 1.0, False)
    same = grid_view(values, 4, auto["scale"], auto["zero_point"], auto["signed"])
    assert same["total_mse"] == pytest.approx(auto["total_mse"])
    with pytest.raises(ConfigError, match="zero point"):
        grid_view(values, 4, 0.1, 16, False)
    with pytest.raises(ConfigError, match="scale"):
        grid_view(values, 4, 0.0, 0, False)


def test_multipoint_channel_view_adds_up():
    rng = np.random.default_rng(0)
    demo = {
        "channels": 2,
        "weights": rng.normal(size=(2, 5)).astype(np.float32),
        "coeffs": np.array([[0.5, 0.4], [0.1, 0.05]], dtype=np.float32),
        "codes": rng.integers(-4, 4, size=(2, 2, 5)).astype(np.int8),
        "residual": np.ones((3, 2)),
        "errors": np.ones((2, 2)),
        "reference": np.ones(2),
    }
    view = channel_view(demo, 1)
    expected = 0.4 * demo["codes"][0, 1] + 0.05 * demo["codes"][1, 1]
    assert np.allclose(view["partial"][-1], expected)
    with pytest.raises(ConfigError):
        channel_view(demo, 2)


@pytest.fixture(scope="module")
def resnet20():
    from ptq_core.models import load_model

    return load_model("fmnist-resnet20").model


def test_qdrop_demo_curves_have_the_right_ends(fmnist, resnet20):
    demo = qdrop_demo(resnet20, fmnist, "layer1.1", 3, n_images=16, draws=1)
    c = demo["curves"]
    assert c["input distance"][-1] == 0 and c["float block"][-1] == 0  # p = 1: the float input exactly
    assert c["quantized block"][0] == c["quantized block + in-block drop"][0]  # p = 0: nothing dropped
    assert c["quantized block + in-block drop"][-1] < c["quantized block"][-1]  # dropping inside helps at p = 1
    assert c["input distance"][0] > c["input distance"][5] > 0
    with pytest.raises(ConfigError, match="not a reconstruction block"):
        qdrop_demo(resnet20, fmnist, "layer1.1.conv1", 3, n_images=16, draws=1)


def test_adaround_demo_counts_flips_and_keeps_the_model(fmnist, resnet20):
    before = {k: v.clone() for k, v in resnet20.state_dict().items()}
    res = adaround_demo(resnet20, fmnist, "layer3.0.conv2", 2, 60, 0.01, n_images=64)
    assert res["flipped_up"] + res["flipped_down"] > 0
    assert res["output_error_adaround"] < res["output_error_nearest"]
    assert res["weight_mse_adaround"] >= res["weight_mse_nearest"]  # nearest is the best per weight
    assert res["snapshots"] and sum(res["snapshots"][-1]["hist"]) == res["weights"]
    assert all(torch.equal(v, resnet20.state_dict()[k]) for k, v in before.items())  # the shared model untouched
    with pytest.raises(ConfigError, match="not a quantizable"):
        adaround_demo(resnet20, fmnist, "layer3.0", 2, 10, 0.01, n_images=16)


def test_layer_values_of_the_first_layer_are_the_images(fmnist, resnet20):
    got = layer_values(resnet20, fmnist, "conv1", "activations", n_images=8)
    want = example_batch(resnet20, fmnist, 8).flatten().numpy()
    assert np.array_equal(np.sort(got), np.sort(want))
    weights = layer_values(resnet20, fmnist, "conv1", "weights")
    assert np.array_equal(np.sort(weights), np.sort(resnet20.conv1.weight.detach().flatten().numpy()))
    with pytest.raises(ConfigError, match="no layer"):
        layer_values(resnet20, fmnist, "nope", "weights")


def test_multipoint_extra_points_go_where_they_help(fmnist, resnet20):
    demo = multipoint_demo(resnet20, fmnist, "layer2.0.conv1", 2, n_points=3, n_images=16)
    assert np.array_equal(allocation(demo, 0), np.ones(demo["channels"], dtype=allocation(demo, 0).dtype))
    curve = demo["budget_curve"]
    assert all(a >= b - 1e-6 * abs(a) for a, b in zip(curve["error"], curve["error"][1:], strict=False))
    assert all(e <= r + 1e-6 * abs(r) for e, r in zip(curve["error"], curve["random"], strict=True))
    assert channel_view(demo, 0)["errors"] == demo["errors"][:, 0].tolist()

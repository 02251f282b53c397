"""Measured culprits and diagnosis on small models with one injected fault each.

Each fault is injected so that the float model computes the same function (scales moved
between layers, BatchNorm statistics compensated), labels are the float model's own
predictions (100 % float top-1), and the fault shows up only once quantized. The
ranking must put the faulty layer first, the diagnosis must name the fault at that
layer, and the ranked fix, applied as overrides to a fresh quantization, must give the
measured top-1.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ptq_core.analysis import culprits, diagnosis
from ptq_core.analysis.sensitivity import rtn_model
from ptq_core.metrics import evaluate
from ptq_core.overrides import parse_overrides
from ptq_core.prepare import QuantSpec
from tests.support.helpers import TinyChain, randomize_bn, self_labelled

MINMAX = dict(w_observer="minmax", a_observer="minmax", first_last_bits=None)


@pytest.fixture
def images() -> torch.Tensor:
    torch.manual_seed(3)
    return TinyChain.example_inputs(128)


def _model() -> TinyChain:
    torch.manual_seed(0)
    return randomize_bn(TinyChain())


def outlier_input_channel() -> TinyChain:
    """conv2's input channel 5 is 50x the others (conv1's output scaled up, conv2's weights scaled down)."""
    m = _model()
    with torch.no_grad():
        m.bn1.weight[5] *= 50
        m.bn1.bias[5] *= 50
        m.conv2.weight[:, 5] /= 50
    return m


def weight_outlier_channel() -> TinyChain:
    """conv2's output channel 3 weights are 50x the others (bn2's statistics compensate)."""
    m = _model()
    with torch.no_grad():
        m.conv2.weight[3] *= 50
        m.bn2.running_mean[3] *= 50
        m.bn2.running_var[3] *= 50**2
    return m


def _top(result: dict) -> tuple[str, str]:
    return result["candidates"][0]["layer"], result["candidates"][0]["side"]


def _applied_top1(model, images, loader, spec, result) -> float:
    spec = dataclasses.replace(spec, overrides=parse_overrides(result["overrides"]))
    return evaluate(rtn_model(model, images, spec).model, loader)["top1"]


@pytest.mark.parametrize(
    "make, spec, layer, side, cause",
    [
        (
            outlier_input_channel,
            QuantSpec(wbits=8, abits=4, **MINMAX),
            "conv2",
            "activations",
            "outlier channels (activations)",
        ),
        (
            weight_outlier_channel,
            QuantSpec(wbits=4, abits=8, w_per_channel=False, fold_bn=False, **MINMAX),
            "conv2",
            "weights",
            "outlier channels (weights)",
        ),
    ],
    ids=["outlier-input-channel", "low-bit-weights-cost-most"],
)
def test_injected_fault_is_ranked_first_named_and_its_fix_recovers(images, make, spec, layer, side, cause):
    model = make()
    loader = self_labelled(model, images)
    result = culprits.measured_culprits(model, images, loader, spec)
    assert _top(result) == (layer, side)
    assert result["sides"][0] == side  # the split looked on the right side first
    assert result["candidates"][0]["recovered"] > 3 * max(c["recovered"] for c in result["candidates"][1:])
    assert result["chosen"][0]["layer"] == layer
    # the ranked fix, applied from scratch, gives the measured top-1 (RTN is deterministic: exactly)
    assert _applied_top1(model, images, loader, spec, result) == pytest.approx(result["chosen"][-1]["cumulative_top1"])
    q = rtn_model(model, images, spec)
    found = diagnosis.diagnose(q.model, q.report, model, images)
    assert cause in {f["cause"] for f in found["findings"] if f["layer"] == layer}


def test_wrongly_unsigned_grid_is_ranked_first_and_named(images):
    model = _model()
    loader = self_labelled(model, images)
    spec = QuantSpec(wbits=8, abits=4, **MINMAX)
    q = rtn_model(model, images, spec)
    fq = q.model.conv3.act_quantizer  # conv3's input (bn2's output, no ReLU) is signed
    fq.set_qparams(fq.scale.clone(), torch.zeros_like(fq.zero_point))  # the grid now starts at 0
    result = culprits.measured_culprits(model, images, loader, spec, quantized=q)
    assert _top(result) == ("conv3", "activations")
    found = diagnosis.diagnose(q.model, q.report, model, images)
    assert "negative activations under an unsigned quantizer" in {
        f["cause"] for f in found["findings"] if f["layer"] == "conv3"
    }


def test_policy_layers_are_kept_not_candidates(images):
    model = _model()
    loader = self_labelled(model, images)
    spec = QuantSpec(wbits=4, abits=4, w_observer="minmax", a_observer="minmax", first_last_bits=8)
    result = culprits.measured_culprits(model, images, loader, spec, culprits.CulpritConfig(sides="both"))
    assert {k["layer"] for k in result["kept"]} == {"conv1", "fc"}
    assert {c["layer"] for c in result["candidates"]} == {"conv2", "conv3"}
    measured = evaluate(rtn_model(model, images, spec).model, loader)["top1"]  # the whole model quantized, here
    assert result["fp_top1"] == 100.0 and result["top1"] == pytest.approx(measured)
    assert result["loss"] == pytest.approx(100.0 - measured)


def _layer_bits(model, spec) -> dict[str, tuple[int, int]]:
    q = rtn_model(model, TinyChain.example_inputs(8), spec)
    return {info.name: (info.wbits, info.abits) for info in q.report.layers}


@pytest.mark.parametrize(
    "spec",
    [
        QuantSpec(wbits=4, abits=4, w_observer="mse", a_observer="mse"),
        QuantSpec(
            wbits=4, abits=4, w_observer="minmax", a_observer="minmax", w_per_channel=False, first_last_bits=None
        ),
        QuantSpec(wbits=2, abits=4, a_observer="percentile", a_symmetric=True),
    ],
    ids=["mse", "minmax-per-tensor", "percentile-symmetric"],
)
def test_no_suggested_fix_is_already_in_effect(images, spec):
    model = outlier_input_channel()
    with torch.no_grad():
        model.conv1.weight[2] = 0.0  # and a dead channel
    q = rtn_model(model, images, spec)
    found = diagnosis.diagnose(q.model, q.report, model, images)
    assert found["findings"]
    before = _layer_bits(model, spec)
    for f in found["findings"]:
        action = f["action"]
        if action is None:
            continue
        if action["kind"] == "settings":  # checked against the spec, not the model the rule looked at
            assert any(getattr(spec, k) != v for k, v in action["changes"].items()), f
        else:
            assert _layer_bits(model, diagnosis.apply_fix(spec, action))[f["layer"]] != before[f["layer"]], f
    outlier = [f for f in found["findings"] if f["cause"] == "outlier channels (activations)"]
    if spec.a_observer != "minmax":  # the old advice, "switch the activation observer to mse", must not come back
        assert outlier and all(f["action"]["kind"] == "override" for f in outlier)


def test_floor_verdict_quotes_a_stored_reconstruction_or_says_how_to_measure_it():
    from types import SimpleNamespace

    def rec(run_id, method, top1, bits=(2, 2), model="m", data="fmnist-sample"):
        return SimpleNamespace(
            run_id=run_id,
            status="done",
            model=model,
            method=method,
            wbits=bits[0],
            abits=bits[1],
            spec={"data": data},
            metrics={"top1": top1},
        )

    records = [
        rec("r1", "rtn", 57.5),
        rec("p1", "pdquant", 92.0),
        rec("p2", "pdquant", 91.0),
        rec("q1", "qdrop", 93.0, bits=(4, 2)),
        rec("p3", "pdquant", 95.0, data="fmnist-full"),
    ]
    got = diagnosis.reconstruction_measurement(records, "m", 2, 2, "fmnist-sample")
    assert (got["method"], got["run_id"], round(got["points"], 1)) == ("pdquant", "p1", 34.5)
    assert diagnosis.reconstruction_measurement(records, "m", 4, 2) is None  # no RTN run to compare with
    cfg = diagnosis.DiagnosisConfig()
    floor = diagnosis.floor_verdict(9.0, 2, cfg, got, "m")
    assert floor["floor"] and "near the 2-bit floor" in floor["text"] and "recovers +34.5 points" in floor["text"]
    unknown = diagnosis.floor_verdict(9.0, 2, cfg, None, "m", 2, 2)
    assert "--method pdquant --wbits 2 --abits 2" in unknown["text"]
    assert not diagnosis.floor_verdict(30.0, 4, cfg, None)["floor"]

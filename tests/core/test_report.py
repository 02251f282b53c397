"""The shareable report and the overfitting check.

The report of a stored RTN run is rebuilt from its description, must reproduce the stored
top-1, must hold every quantized layer's scales and zero points as the model uses them,
and must open in Chromium without a single network request or console error.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from ptq_core import QuantSpec, RTNConfig, RunSpec, run_quantization
from ptq_core.analysis.overfit import overfit_check
from ptq_core.analysis.sensitivity import rtn_model
from ptq_core.cli import main
from ptq_core.modules import quant_layers
from ptq_core.report import quantizer_params
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.helpers import TinyChain, randomize_bn, self_labelled

SPEC = RunSpec(
    model="fmnist-resnet20",
    device="cpu",
    eval_limit=64,
    error_samples=32,
    method=RTNConfig(quant=QuantSpec(wbits=4, abits=4, w_observer="minmax", a_observer="minmax"), calib=32),
)


@pytest.fixture(scope="module")
def report_file(tmp_path_factory, weights) -> tuple[Path, object]:
    """One stored RTN run and its report, written by the command line."""
    home = tmp_path_factory.mktemp("report-store")
    old = os.environ.get("PTQ_EXPLORER_HOME")
    os.environ["PTQ_EXPLORER_HOME"] = str(home)
    try:
        spec = SPEC if weights is None else dataclasses.replace(SPEC, weights=weights)
        record, _ = run_quantization(spec)
        out = home / "report.html"
        assert main(["report", record.run_id, "-o", str(out), "--quiet"]) == 0  # 0: the top-1 was reproduced
    finally:
        if old is None:
            os.environ.pop("PTQ_EXPLORER_HOME")
        else:
            os.environ["PTQ_EXPLORER_HOME"] = old
    return out, record


def test_report_reproduces_the_run_and_holds_its_measurements(report_file):
    path, record = report_file
    text = path.read_text()
    assert f"reproduced: the rebuilt top-1 {record.metrics['top1']:.2f}% equals the stored one" in text
    layers = [e["name"] for e in record.layers]
    assert all(
        f"<code>{name}</code>: weights 4-bit [0, 15] minmax" in text for name in layers if name not in ("conv1", "fc")
    )
    assert "<code>conv1</code>: weights 8-bit [0, 255]" in text  # the first/last policy, as the model runs it
    assert text.count("<svg") == 1 + 2 * len(layers)  # per-layer errors + a weight and an input histogram each
    for tag in ("<script", "<link", "@import", "url(", "src=", "http://", "https://"):
        assert tag not in text.replace('xmlns="http://www.w3.org/2000/svg"', ""), tag


def test_quantizer_params_read_what_the_model_uses():
    torch.manual_seed(0)
    model = randomize_bn(TinyChain())
    x = TinyChain.example_inputs(16)
    q = rtn_model(
        model, x, QuantSpec(wbits=4, abits=8, first_last_bits=None, w_observer="minmax", a_observer="minmax")
    ).model
    params = {p["layer"]: p for p in quantizer_params(q)}
    for name, layer in quant_layers(q):
        w = params[name]["weight"]
        assert w["bits"] == 4 and w["per_channel"] and len(w["scale"]) == layer.weight.shape[0]
        used = layer.weight_quantizer.scale.flatten().double()
        assert torch.allclose(torch.tensor(w["scale"], dtype=torch.float64), used)
        a = params[name]["input"]
        assert a["bits"] == 8 and len(a["scale"]) == 1 and a["qmax"] - a["qmin"] == 255


def test_overfitting_is_flagged_only_when_the_sets_diverge():
    torch.manual_seed(0)
    model = randomize_bn(TinyChain())
    x = TinyChain.example_inputs(256)
    loader = self_labelled(model, x)
    y = torch.cat([yb for _, yb in loader])
    spec = QuantSpec(wbits=8, abits=4, first_last_bits=None, w_observer="minmax", a_observer="minmax")
    calib, test = (x[:128], y[:128]), (x[128:], y[128:])
    same = overfit_check(rtn_model(model, calib[0], spec).model, calib, test)
    assert not same["flagged"] and abs(same["gap"]) <= max(2.0, 2 * same["noise"])
    # ranges fitted to small calibration images: the held-out images clip everywhere
    small = (x[:128] * 0.2, model(x[:128] * 0.2).argmax(1).detach())
    over = overfit_check(rtn_model(model, small[0], spec).model, small, test)
    assert over["flagged"] and over["gap"] > 2.0 and over["flagged_layers"]


@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"no chromium at {CHROMIUM}")
def test_report_opens_in_chromium_without_network_or_console_errors(report_file):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    path, _ = report_file
    requests, problems = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(path.as_uri(), wait_until="load")
            assert page.locator("svg").count() > 2 and "reproduced" in page.inner_text("body")
        finally:
            browser.close()
    assert requests == [path.as_uri()]  # the file itself, nothing else
    assert problems == []


def test_reconstruction_runs_store_the_overfitting_check():
    from torch.utils.data import TensorDataset

    from ptq_core.data import DataBundle
    from ptq_core.methods import AdaRoundConfig
    from ptq_core.models import LoadedModel, ModelEntry
    from ptq_core.pipeline import quantize_and_evaluate

    torch.manual_seed(0)
    model = randomize_bn(TinyChain())
    x = TinyChain.example_inputs(192)
    y = torch.cat([yb for _, yb in self_labelled(model, x)])
    bundle = DataBundle(
        "tiny", TensorDataset(x[:96], y[:96]), TensorDataset(x[96:], y[96:]), tuple("0123456789"), "test tensors"
    )
    loaded = LoadedModel(model, ModelEntry("tiny", "custom", "ready"))
    quant = QuantSpec(wbits=2, abits=8, first_last_bits=None, w_observer="minmax", a_observer="minmax")
    spec = RunSpec(
        model="tiny",
        device="cpu",
        error_samples=32,
        method=AdaRoundConfig.from_preset("fast", quant=quant, iters=2, calib=32),
    )
    result, _ = quantize_and_evaluate(spec, loaded, bundle, torch.device("cpu"))
    overfit = result.extras()["overfit"]
    assert overfit["calib"]["images"] == 32 and overfit["test"]["images"] == 32  # as many as were calibrated on
    assert {r["name"] for r in overfit["layers"]} == {"conv1", "conv2", "conv3", "fc"}
    assert isinstance(overfit["flagged"], bool)
    rtn = dataclasses.replace(spec, method=RTNConfig(quant=quant, calib=32))
    assert "overfit" not in quantize_and_evaluate(rtn, loaded, bundle, torch.device("cpu"))[0].extras()

"""The app at 50+ layers: torchvision ResNet-50 (54 quantized layers) with a user weights file and an ImageFolder.

The test writes a seeded random ResNet-50 state_dict and a tiny ImageFolder (64x64 PNGs),
runs round-to-nearest W8A8 (min-max ranges: the MSE search over 25 M weights is not what
this checks) on 4 calibration and 4 test images through the pipeline the app's jobs use
(`run_quantization`, with the images kept at 64x64 so it stays fast on a CPU; the app itself
would resize them to 224 for this architecture), and opens the pages
in AppTest with that model, weights and folder selected. Every page must render without
an error, the layer pickers must offer all 54 layers, and the per-layer charts and table
must show all of them, with one labelled row per layer (charts grow with the layer count).

The same run is then opened in headless Chromium (`streamlit run app.py` on the run's
store): on Layer errors both charts must draw all 54 layer names as separate, readable
rows (no two labels overlapping), and Compare runs must list the run, with no error box.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.app_support import assert_clean, new_app
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, PAGE_S, START_S, go, no_exception, open_app
from tests.support.paths import ROOT

APP_ENV = {"PTQ_UI_SYNC_JOBS": "1", "PTQ_UI_EVAL_LIMIT": "4"}
RESNET50_LAYERS = 54  # 53 convs (downsample included) and the fc
OWNER = "tester"


@pytest.fixture(scope="module")
def resnet50_files(tmp_path_factory):
    """(weights file, ImageFolder path): random-init ResNet-50 and 8 images of 64x64 in 2 classes."""
    import torchvision
    from PIL import Image

    root = tmp_path_factory.mktemp("r50")
    torch.manual_seed(0)
    weights = root / "resnet50-random.pt"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), weights)
    rng = np.random.default_rng(0)
    for i in range(8):
        folder = root / "images" / f"class_{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return str(weights), str(root / "images")


@pytest.fixture(scope="module")
def resnet50_run(resnet50_files, tmp_path_factory):
    """(store folder, run id): the RTN run of `resnet50_files`, recorded in a store of its own."""
    home = tmp_path_factory.mktemp("r50-store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PTQ_EXPLORER_HOME", str(home))
        return str(home), _run_rtn(*resnet50_files)


def _run_rtn(weights: str, folder: str) -> str:
    """RTN W8A8 on the model and folder, recorded in the default store as `OWNER`'s run; returns its id."""
    from torchvision import transforms

    from ptq_core import make_config
    from ptq_core.data import load_imagefolder
    from ptq_core.models import load_model
    from ptq_core.pipeline import run_quantization
    from ptq_core.spec import RunSpec

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    resources = (load_model("resnet50", weights=weights), load_imagefolder(folder, tf))
    spec = RunSpec(
        model="resnet50",
        weights=weights,
        data=f"imagefolder:{folder}",
        device="cpu",
        method=make_config("rtn", wbits=8, abits=8, calib=4, w_observer="minmax", a_observer="minmax"),
        eval_limit=4,
        error_samples=4,
    )
    record, _ = run_quantization(spec, resources=resources, owner=f"user:{OWNER}")
    assert record.status == "done" and len(record.layers) == RESNET50_LAYERS
    return record.run_id


def _figures(at) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def _layers_down_the_page(fig: dict) -> None:
    """Every trace has one point per layer on the y axis, and the chart is tall enough to label each row."""
    names = set()
    for trace in fig["data"]:
        names |= set(trace["y"])
    assert len(names) == RESNET50_LAYERS
    layout = fig["layout"]
    assert layout["yaxis"]["dtick"] == 1 and layout["yaxis"]["autorange"] == "reversed"
    assert layout["height"] >= 15 * RESNET50_LAYERS


def test_pages_stay_usable_with_resnet50(app_env, monkeypatch, resnet50_files, resnet50_run):
    weights, folder = resnet50_files
    home, run_id = resnet50_run
    monkeypatch.setenv("PTQ_EXPLORER_HOME", home)
    state = dict(
        user_name=OWNER,
        model="resnet50",
        model_source="torchvision",
        weights=weights,
        weights_for="resnet50",
        data_kind="imagefolder",
        data_folder=folder,
        data=f"imagefolder:{folder}",
        device="cpu",
        last_run_id=run_id,
    )
    t0 = time.perf_counter()
    at = new_app(None, "pages/layer_errors.py", **state)
    assert_clean(at)
    figs = _figures(at)
    assert len(figs) == 2  # alone and accumulated
    for fig in figs:
        _layers_down_the_page(fig)
    table = at.dataframe[0].value
    assert len(table) == RESNET50_LAYERS and table["layer"].is_unique

    at.switch_page("pages/quantize.py").run()
    assert_clean(at)
    sqnr = [f for f in _figures(at) if "SQNR" in json.dumps(f["layout"].get("title", ""))]
    assert sqnr, "the last run's per-layer SQNR chart is missing"
    _layers_down_the_page(sqnr[0])

    at.switch_page("pages/outlier_channels.py").run()
    assert_clean(at)
    picker = at.selectbox(key="w_oc_layer")
    assert len(picker.options) == RESNET50_LAYERS and picker.options[-1] == "fc"

    at.switch_page("pages/compare_runs.py").run()
    assert_clean(at)
    assert run_id in at.dataframe[0].value["run_id"].tolist()
    assert time.perf_counter() - t0 < 120, "the pages took too long to draw at 54 layers"


def _tick_rows(chart) -> list[tuple[str, float, float]]:
    """(text, top, height) of each y-axis tick label a drawn Plotly chart shows."""
    out = []
    for tick in chart.locator(".ytick text").all():
        box = tick.bounding_box()
        text = (tick.text_content() or "").strip()
        if box is not None and text:
            out.append((text, box["y"], box["height"]))
    return out


@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"no chromium at {CHROMIUM}: `apt-get install chromium`")
def test_resnet50_layers_are_readable_in_chromium(resnet50_run):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from ptq_ui.server import app_server

    home, run_id = resnet50_run
    env = dict(os.environ, PTQ_EXPLORER_HOME=home, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    artifacts = ROOT / "tests" / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    with open(Path(home) / "server.log", "w") as log, app_server(env, log, START_S) as url:
        with playwright.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(PAGE_S * 1000)
                open_app(page, url)
                go(page, "Layer errors")
                charts = page.locator(".js-plotly-plot")
                charts.nth(1).locator(".ytick text").first.wait_for()
                no_exception(page, "Layer errors")
                assert charts.count() == 2
                for i in range(2):
                    rows = sorted(_tick_rows(charts.nth(i)), key=lambda r: r[1])
                    assert len({text for text, _, _ in rows}) == RESNET50_LAYERS
                    for (a, top_a, height_a), (b, top_b, _) in zip(rows, rows[1:], strict=False):
                        assert top_b >= top_a + height_a - 1, f"labels {a!r} and {b!r} overlap"
                page.screenshot(path=str(artifacts / "layer_errors_resnet50.png"), full_page=True)
                go(page, "Compare runs")
                no_exception(page, "Compare runs")
                cell = page.locator("[role='gridcell']", has_text=run_id)  # the runs table (a canvas grid)
                cell.first.wait_for(state="attached", timeout=60_000)
            finally:
                browser.close()

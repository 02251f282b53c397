"""The "CAT corrections" page: renders on the embedded default with a tiny RTN base, and its sliders change it.

The figure builders are checked directly as well (AppTest sees Plotly charts only as specs).
"""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from ptq_ui import charts
from tests.support.app_support import assert_clean, captions, metric
from tests.support.paths import APP

PAGE = "pages/cat_corrections.py"

# environment of the app under test (applied by the `app_env` fixture in conftest.py)
APP_ENV = {"PTQ_UI_EVAL_LIMIT": "500"}


def test_page_renders_and_sliders_change_it(app_env):
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["run_form"] = {"quant": {"wbits": 4, "abits": 2}}  # base: RTN W4A2, 256 calibration images
    at.run()
    at.switch_page(PAGE).run()
    assert_clean(at)
    assert "K = 64 clusters" in captions(at) and "evaluation: the first 500 test images" in captions(at)
    assert "disjoint" in captions(at)
    assert metric(at, "CAT overhead (floats)") == f"{64 * 2 * 10 + 64 * 10:,}"
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert spec["data"][-1]["name"] == "centroids" and len(spec["data"][-1]["x"]) == 64

    at.select_slider(key="w_cat_k").set_value(1).run()  # one plain affine map
    assert_clean(at)
    assert "K = 1 clusters" in captions(at)
    assert metric(at, "CAT overhead (floats)") == f"{1 * 2 * 10 + 10:,}"
    assert len(json.loads(at.get("plotly_chart")[0].proto.spec)["data"][-1]["x"]) == 1

    at.slider(key="w_cat_alpha").set_value(0.0).run()  # no correction at all
    assert_clean(at)
    assert metric(at, "CAT top-1") == metric(at, "Base top-1")
    assert metric(at, "Fixes / breaks") == "0 / 0"

    at.select_slider(key="w_cat_k").set_value(8).run()
    at.select_slider(key="w_cat_pca").set_value(3)
    at.slider(key="w_cat_alpha").set_value(1.0).run()
    assert_clean(at)
    assert "K = 8 clusters, PCA 3, alpha 1.00" in captions(at)
    at.radio(key="cat_colour").set_value("status").run()
    at.radio(key="cat_ba_mode").set_value("one test image").run()
    assert_clean(at)
    assert "True class" in captions(at)
    at.radio(key="cat_sweep").set_value("pca").run()
    assert_clean(at)
    sweep = json.loads(at.get("plotly_chart")[-1].proto.spec)
    assert sweep["data"][0]["x"] == ["none", *map(str, range(2, 11))]


def test_quantize_page_adds_cat_and_draws_the_refine_method(app_env, monkeypatch):
    from ptq_core.store import RunStore

    monkeypatch.setenv("PTQ_UI_SYNC_JOBS", "1")
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["run_form"] = {"quant": {"wbits": 4, "abits": 2}}
    at.run()
    at.switch_page("pages/quantize.py").run()
    at.selectbox(key="w_q_method").set_value("cat_refine").run()  # stage 1's settings draw as a form
    assert_clean(at)
    assert at.text_input(key="w_qm_cat_refine_base").value == "pdquant"
    at.selectbox(key="w_q_method").set_value("rtn").run()
    at.number_input(key="w_q_calib").set_value(64).run()
    at.toggle(key="w_q_cat").set_value(True).run()
    at.number_input(key="w_q_cat_k").set_value(8).run()
    at.button(key="run").click().run()
    assert_clean(at)
    record = RunStore().get(at.session_state["last_run_id"])
    assert record.method == "rtn+cat" and record.extras["method"]["cat"]["k"] == 8
    assert record.metrics["top1_base"] == pytest.approx(record.extras["method"]["cat"]["top1_base"])
    assert "without CAT" in captions(at)


def test_figures_draw_the_given_data():
    fig = charts.cat.cluster_scatter([[0, 0], [1, 1], [2, 0]], ["right", "fixed", "fixed"], [[0.5, 0.5]], "status")
    names = [t.name for t in fig.data]
    assert names == ["right", "fixed", "centroids"] and len(fig.data[1].x) == 2
    sizes = charts.cat.cluster_sizes([30, 5, 0], [10, 2, 1], fallback=[2])
    assert list(sizes.data[0].marker.color) == ["#636efa", "#ef553b", "#b0b7c3"]
    fb = charts.cat.fixes_breaks([3, 0], [1, 2])
    assert list(fb.data[1].y) == [-1, -2]
    heat = charts.cat.table_heatmap([[1.0, 2.0]], "gamma", ["a", "b"], 1.0)
    assert heat.data[0].zmid == 1.0 and list(heat.data[0].x) == ["a", "b"]

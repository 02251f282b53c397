"""The Learn pages on AdaRound, QDrop, multipoint and CAT: each renders on the embedded default, and its
widgets change what it shows. The figure builders are checked directly too
(the torch-side demos are core functions: tests/core/test_explain.py)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.support.app_support import assert_clean, metric, new_app
from tests.support.paths import SUPPORT


def open_page(page: str, **state) -> AppTest:
    """A fresh session on `page`; `state` presets widget values by key (kept small for speed)."""
    at = new_app(None, page, timeout=240, **state)
    assert_clean(at)
    return at


def chart_spec(at: AppTest, index: int) -> str:
    return at.get("plotly_chart")[index].proto.spec


def test_adaround_page_learns_and_reacts(app_env):
    at = open_page("pages/learn_adaround.py", ar_iters=100)
    up, down = (
        int(metric(at, "Flipped up vs nearest").replace(",", "")),
        int(metric(at, "Flipped down vs nearest").replace(",", "")),
    )
    assert up + down > 0  # the learned rounding differs from nearest somewhere
    delta = next(m for m in at.metric if m.label.startswith("Output error")).delta
    assert delta.startswith("-")  # AdaRound lowers the layer's output error against nearest
    assert len(at.get("plotly_chart")) == 4
    before = chart_spec(at, 0)
    at.select_slider(key="ar_lambda").set_value(0.0).run()  # no push to 0/1: other decisions
    assert not at.exception and chart_spec(at, 0) != before


def test_qdrop_page_mixes_and_reacts(app_env):
    at = open_page("pages/learn_qdrop.py")
    kept = float(metric(at, "Elements kept float").rstrip("%"))
    assert 35 < kept < 65  # p = 0.5
    maps = chart_spec(at, 0)
    at.number_input(key="qd_seed").set_value(1).run()  # another mask draw
    assert not at.exception and chart_spec(at, 0) != maps
    curve = chart_spec(at, 1)
    at.slider(key="qd_p").set_value(0.0).run()
    assert not at.exception
    assert metric(at, "Elements kept float") == "0.0%"
    assert chart_spec(at, 1) != curve  # the marker on the curve moved


def test_learn_charts_are_plain_functions():
    from ptq_ui import charts

    fig = charts.learn.rounding_scatter({"frac": [0.1, 0.6, 0.4], "h": [0.0, 0.0, 1.0], "decision": [0, -1, 1]})
    assert [t.name for t in fig.data] == ["as nearest (1)", "flipped up (1)", "flipped down (1)"]
    fig = charts.learn.h_evolution_figure([5, 5], [{"step": 10, "hist": [9, 1]}], 2)
    assert fig.data[0].z.shape == (2, 2)


def test_quantizer_scale_and_zero_point_by_hand(app_env):
    at = open_page("pages/learn_quantizer.py")
    auto_scale = metric(at, "Scale s")
    at.radio(key="learn_mode").set_value("manual").run()
    assert not at.exception and metric(at, "Scale s") == auto_scale  # starts from the ratio's grid
    assert metric(at, "Clipped values") == "0.00%"
    zp = next(s for s in at.slider if s.label == "Zero point z")
    zp.set_value(zp.max).run()  # the grid slides down: the top of the values clips
    assert not at.exception
    assert float(metric(at, "Clipped values").rstrip("%")) > 10
    scale = next(n for n in at.number_input if n.label == "Scale s")
    scale.set_value(float(auto_scale) * 4).run()
    assert not at.exception and metric(at, "Scale s") != auto_scale


def test_compare_runs_filters_by_bits(app_env):
    from ptq_core.store import RunStore

    store = RunStore()
    for wbits, abits in ((4, 4), (2, 4)):
        with store.run("fmnist-resnet20", "rtn", wbits, abits, {"calib": 64}) as handle:
            handle.finish({"fp_top1": 90.0, "top1": 80.0}, [], {})
    at = open_page("pages/compare_runs.py")
    assert len(at.dataframe[0].value) == 2
    at.selectbox(key="w_cr_bits").set_value("W2A4").run()
    assert at.dataframe[0].value["bits"].tolist() == ["W2A4"]


def test_multipoint_page_spends_points_where_the_error_is(app_env):
    at = open_page("pages/learn_multipoint.py")
    assert int(metric(at, "Extra points")) > 0  # 25 % of the channels by default
    err = float(metric(at, "Layer output error"))
    rnd = float(metric(at, "Same budget, random channels"))
    assert err < rnd  # error-driven allocation beats random at the same budget
    at.select_slider(key="mp_budget").set_value(0).run()
    assert not at.exception and metric(at, "Extra points") == "0"
    assert float(metric(at, "Layer output error")) > err
    rows = at.dataframe[0].value
    assert list(rows["|residual| after"]) == sorted(rows["|residual| after"], reverse=True)  # shrinks every point


def test_cat_page_fits_clusters_and_reacts(app_env):
    at = open_page("pages/learn_cat.py")
    base = float(metric(at, "Quantized top-1").rstrip("%"))
    assert len(at.selectbox(key="cat_cluster").options) == 8
    at.slider(key="cat_alpha").set_value(0.0).run()  # no blend: exactly the quantized model
    assert not at.exception
    assert float(metric(at, "With CAT").rstrip("%")) == base and metric(at, "Fixed / broken") == "0 / 0"
    at.slider(key="cat_alpha").set_value(0.4).run()
    at.select_slider(key="cat_k").set_value(1).run()
    assert not at.exception and len(at.selectbox(key="cat_cluster").options) == 1  # one global affine map


def test_model_data_widgets_change_the_architecture_and_accuracy(app_env):
    at = open_page("pages/model_data.py")
    layers = metric(at, "Quantized layers")
    at.selectbox(key="w_model").set_value("fmnist-vit").run()
    assert not at.exception and metric(at, "Quantized layers") != layers
    at.selectbox(key="w_fp_limit").set_value(1000).run()
    at.button(key="fp_eval").click().run()
    assert not at.exception
    top1 = next(m for m in at.metric if m.label.startswith("Top-1 / top-5 on 1,000"))
    assert 50 < float(top1.value.rstrip("%")) <= 100  # the trained ViT, on real test images


def test_oversize_upload_is_refused_with_the_reason(app_env, monkeypatch):
    monkeypatch.setattr("ptq_ui.services.uploads.MAX_UPLOAD_MB", 1)
    monkeypatch.setenv("PTQ_ALLOWED_MODEL_DIRS", str(SUPPORT))  # the operator allows tests/support/
    at = open_page("pages/model_data.py")
    at.radio(key="w_model_source").set_value("custom").run()
    at.text_input(key="w_custom_factory").set_value("tests/support/helpers.py:TinyResNet").run()
    big = b"\0" * (2 * 2**20 + 10)
    at.file_uploader(key="upload:tests/support/helpers.py:TinyResNet").set_value(("big.safetensors", big, "")).run()
    assert not at.exception
    assert any("the limit is 1 MB" in e.value for e in at.error), [e.value for e in at.error]
    assert at.session_state["weights"] is None  # nothing attached

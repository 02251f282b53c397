"""The Diagnose pages: each renders on the embedded default and its widgets change what it shows.

Sizes are kept small through the pages' own persistent settings (seeded in the session
before the first run): min-max observers, few images, two bit-widths. Jobs run inline
(`PTQ_UI_SYNC_JOBS=1`); evaluations use the first 100 test images.
"""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from ptq_core.analysis import clusters
from tests.support.app_support import RESNET20_LAYERS, assert_clean, chart, metric, new_app, trace_names
from tests.support.paths import APP

SMALL = {
    "run_form": {"quant": {"w_observer": "minmax", "a_observer": "minmax"}},
    "oc_images": 32,
    "ac_images": 200,
    "sens_bits": [2, 8],
}

# environment of the app under test (applied by the `app_env` fixture in conftest.py)
APP_ENV = {"PTQ_UI_SYNC_JOBS": "1", "PTQ_UI_EVAL_LIMIT": "100"}


def open_page(weights: str | None, page: str, **state) -> AppTest:
    """A fresh session with the small settings (plus `state`), switched to `page`."""
    at = new_app(weights, page, timeout=180, **{**SMALL, **state})
    assert_clean(at)
    return at


def test_outlier_channels_page(app_env, weights):
    at = open_page(weights, "pages/outlier_channels.py", oc_layer="conv1")
    assert metric(at, "Channels") == "16"  # conv1: 16 output channels (weights tab first)
    assert float(metric(at, "Clipping MSE (all channels)")) == 0.0  # ratio 1: nothing clipped
    rounding_full = float(metric(at, "Rounding MSE (all channels)"))
    at.slider(key="w_oc_ratio").set_value(0.3).run()
    assert_clean(at)
    assert float(metric(at, "Clipping MSE (all channels)")) > 0
    assert float(metric(at, "Rounding MSE (all channels)")) < rounding_full
    at.selectbox(key="w_oc_layer").set_value("layer2.0.conv1").run()
    assert_clean(at)
    assert metric(at, "Channels") == "32"
    at.radio(key="w_oc_split_source").set_value("weights").run()
    per_tensor = float(metric(at, "Rounding MSE (all channels)"))
    at.radio(key="w_oc_gran").set_value("per-channel").run()
    assert float(metric(at, "Rounding MSE (all channels)")) < per_tensor  # own grid per channel: finer steps
    at.slider(key="w_oc_z").set_value(1.0).run()
    assert int(metric(at, "Outlier channels")) > 0
    heat = chart(at, "oc_map")["data"][0]
    assert heat["type"] == "heatmap" and heat["z"]["shape"] == "16, 32"  # conv1's 16 output channels x 32 images
    at.selectbox(key="w_oc_map_layer").set_value("layer2.0.conv1").run()
    assert_clean(at)
    assert chart(at, "oc_map")["data"][0]["z"]["shape"] == "32, 32"


def test_activation_clusters_page(app_env, weights, monkeypatch):
    at = open_page(weights, "pages/activation_clusters.py")
    assert metric(at, "Images") == "200"
    fig = chart(at, "ac_scatter")
    assert "T-shirt/top" in trace_names(fig) and fig["data"][0]["type"] == "scattergl"
    at.radio(key="w_ac_color").set_value("cluster").run()
    assert_clean(at)
    assert "cluster 0" in trace_names(chart(at, "ac_scatter"))
    at.radio(key="w_ac_mode").set_value("overlay").run()
    assert "displacement" in trace_names(chart(at, "ac_scatter"))
    broken_at_4 = int(metric(at, "Broken by quantization"))
    at.slider(key="w_ac_bits").set_value(2).run()
    assert_clean(at)
    assert int(metric(at, "Broken by quantization")) > broken_at_4
    at.selectbox(key="w_ac_layer").set_value("layer3.2.conv2").run()
    assert_clean(at)
    at.radio(key="w_ac_method").set_value("umap").run()  # UMAP waits for the button
    assert not at.exception and any("on request" in i.value for i in at.info)
    assert not any("ac_scatter" in c.proto.id for c in at.get("plotly_chart"))
    # the job plumbing, with a fast stand-in for the UMAP fit (a real cold fit compiles for minutes on 2 cores)
    monkeypatch.setattr(
        clusters,
        "project",
        lambda f, q, method, seed: {"float": f[:, :2], "quant": q[:, :2], "method": method, "explained": []},
    )
    at.button(key="ac_umap_go").click().run()
    assert_clean(at)
    assert at.session_state["umap_job"].status == "done"
    assert chart(at, "ac_scatter")["layout"]["xaxis"]["title"]["text"] == "UMAP 1"
    at.slider(key="w_ac_images").set_value(4000).run()
    assert any("at most 5,000 points" in e.value for e in at.error)


def test_sensitivity_page(app_env, weights):
    at = open_page(weights, "pages/sensitivity.py")
    heat = chart(at, "sens_proxy")["data"][0]
    assert heat["y"] == ["2-bit", "8-bit"] and len(heat["x"]) == RESNET20_LAYERS
    assert "Not counted: conv1, fc, kept at 8 bits" in captions_text(at)  # policy layers are set apart
    at.slider(key="w_dg_sqnr").set_value(40.0).run()
    assert_clean(at)
    assert any("floor" in w.value for w in at.warning)  # the median layer is below 40 dB: one verdict, no flood
    assert int(metric(at, "Flagged layers")) < RESNET20_LAYERS
    size_low = metric(at, "Size of the swept layers")
    at.slider(key="w_mp_budget").set_value(6.0).run()
    assert metric(at, "Size of the swept layers") != size_low
    at.button(key="mp_use").click().run()
    assert "layer1.0.conv1=" in at.session_state["run_form"]["overrides"]
    at.button(key="sens_split_go").click().run()
    assert_clean(at)
    assert metric(at, "Weights only").endswith("%") and metric(at, "Activations only").endswith("%")
    at.multiselect(key="w_sens_bits").set_value([]).run()
    assert any("at least one bit-width" in e.value for e in at.error) and not at.exception


def captions_text(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def _findings(at: AppTest) -> list[dict]:
    table = next(d for d in at.dataframe if "likely cause" in d.value.columns)
    return table.value.to_dict("records")


def test_finding_opens_its_evidence_with_the_same_number(app_env, weights):
    at = open_page(weights, "pages/sensitivity.py", sens_bits=[4])
    rows = _findings(at)
    i, row = next((i, r) for i, r in enumerate(rows[:8]) if r["likely cause"] == "outlier channels (activations)")
    z = row["evidence"].split("(z = ")[1].split(")")[0]
    at.button(key=f"dg_show_{i}").click().run()
    assert_clean(at)
    assert at.session_state["oc_layer"] == row["layer"]
    shown = [m.value for m in at.metric if m.label == "Largest z-score"]
    assert shown[1] == z  # the Activations tab shows the diagnosis's very statistic


def test_apply_this_fix_fills_the_quantize_form(app_env, weights):
    at = open_page(weights, "pages/sensitivity.py", sens_bits=[4])
    rows = _findings(at)
    i = next(i for i, r in enumerate(rows[:8]) if r["fix"] != "no quantizer setting to change")
    fix = rows[i]["fix"]
    at.button(key=f"dg_fix_{i}").click().run()
    assert_clean(at)
    form = at.session_state["run_form"]
    if fix.startswith("override "):
        assert fix.removeprefix("override ") in form["overrides"].splitlines()
    else:
        name, value = fix.split(" = ")
        assert str(form["quant"][name]) == value


def test_measured_culprits_run_as_a_job_and_apply(app_env, weights):
    at = open_page(weights, "pages/sensitivity.py", sens_bits=[4], cu_limit=100)
    at.button(key="cu_run").click().run()
    assert_clean(at)
    res = at.session_state["culprit_job"].result
    names = {c["layer"] for c in res["candidates"]}
    assert names and not names & {"conv1", "fc"}  # kept at 8 bits by the policy: never candidates
    assert [c["recovered"] for c in res["candidates"]] == sorted(
        (c["recovered"] for c in res["candidates"]), reverse=True
    )
    if res["chosen"]:
        at.button(key="cu_apply").click().run()
        assert at.session_state["run_form"]["overrides"] == res["overrides"]


def test_sensitivity_sweeps_separate_bits_and_the_other_view(app_env, weights):
    at = open_page(weights, "pages/sensitivity.py", sens_bits=[], sens_settings="W8A4, A4", sens_view="all but")
    heat = chart(at, "sens_proxy")["data"][0]
    assert heat["y"] == ["W8A4", "A4"]
    assert "Leaving out helps most" in captions_text(at)


def test_sensitivity_full_sweep_runs_as_a_job(app_env, weights):
    at = open_page(weights, "pages/sensitivity.py", sens_bits=[2], sens_limit=100)
    assert any("at least two bit-widths" in i.value for i in at.info)  # mixed precision needs two
    at.button(key="sens_run").click().run()
    assert_clean(at)
    job = at.session_state["sens_job"]
    assert job.status == "done" and len(job.result["rows"]) == RESNET20_LAYERS
    drop = chart(at, "sens_sweep")["data"][0]
    assert drop["y"] == ["2-bit"]
    assert max(r["drop"] for r in job.result["rows"]) > 0


def test_sensitivity_sweep_on_ray_is_an_option(app_env, weights, monkeypatch):
    from ptq_core.errors import ConfigError
    from ptq_ui.services import diagnose

    asked = []

    def start(sel, spec, bits, limit, ray_workers=None, **_settings_and_view):
        asked.append(ray_workers)
        raise ConfigError("stopped by the test")

    monkeypatch.setattr(diagnose, "start_sensitivity_sweep", start)
    at = open_page(weights, "pages/sensitivity.py", sens_bits=[2], sens_limit=100)
    at.button(key="sens_run").click().run()
    assert asked == [None]  # the default: in this process
    at.toggle(key="w_sens_ray").set_value(True).run()
    at.number_input(key="w_sens_ray_workers").set_value(3).run()
    at.button(key="sens_run").click().run()
    assert asked == [None, 3] and not at.exception


def test_layer_errors_live_curve_follows_the_bit_width(app_env, weights):
    at = open_page(weights, "pages/layer_errors.py")
    assert any("switch on the live curve" in i.value for i in at.info)
    at.toggle(key="w_le_live").set_value(True).run()
    assert_clean(at)
    fig4 = chart(at, "le_alone")
    assert any("W4/A4" in n for n in trace_names(fig4))
    at.slider(key="w_le_live_bits").set_value(8).run()
    assert_clean(at)
    fig8 = chart(at, "le_acc")
    assert any("W8/A8" in n for n in trace_names(fig8))
    sqnr4 = [y for y in chart(at.slider(key="w_le_live_bits").set_value(4).run(), "le_acc")["data"][0]["y"] if y]
    sqnr8 = [y for y in fig8["data"][0]["y"] if y]
    assert sum(sqnr8) / len(sqnr8) > sum(sqnr4) / len(sqnr4) + 10  # 4 more bits: much higher SQNR


def test_pages_explain_an_unavailable_model(app_env):
    """A torchvision model without cached weights: a warning on each page, never an exception."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["model_source"] = "torchvision"
    at.session_state["model"] = "resnet18"
    at.run()
    for page in ("pages/outlier_channels.py", "pages/activation_clusters.py", "pages/sensitivity.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert any("resnet18" in w.value and "not cached" in w.value for w in at.warning), page

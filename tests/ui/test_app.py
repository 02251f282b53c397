"""The Streamlit app: every page renders, widgets change what is shown, an RTN run completes and is saved.

AppTest runs the app in this process. Jobs run inline (`PTQ_UI_SYNC_JOBS=1`) because
`run_every` fragments do not tick under AppTest; evaluation uses 500 test images.
If the zoo checkpoint of fmnist-resnet20 is not there (the zoo is still training), the
tests attach seeded random-init weights to it, which exercises the same code paths.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, fields
from typing import ClassVar, Literal

import pytest
import torch
from streamlit.testing.v1 import AppTest

from ptq_core.errors import ConfigError
from ptq_core.methods import METHODS, MethodConfig, ProgressEvent
from ptq_core.settings import setting
from ptq_core.store import RunStore
from tests.support.app_support import RESNET20_LAYERS, assert_clean, metric, new_app
from tests.support.helpers import wait_until
from tests.support.paths import APP, SUPPORT

PAGES = [
    "pages/model_data.py",
    "pages/quantize.py",
    "pages/layer_errors.py",
    "pages/compare_runs.py",
    "pages/learn_quantizer.py",
]
MODEL_PAGES = {"pages/model_data.py", "pages/quantize.py", "pages/learn_quantizer.py"}  # pages that load the model

# environment of the app under test (applied by the `app_env` fixture in conftest.py)
APP_ENV = {"PTQ_UI_SYNC_JOBS": "1", "PTQ_UI_EVAL_LIMIT": "500"}


def test_every_page_renders(app_env, weights):
    at = new_app(weights)
    assert_clean(at)
    assert metric(at, "Quantized layers") == str(RESNET20_LAYERS)
    assert at.dataframe, "architecture table missing"
    for page in PAGES[1:]:
        at.switch_page(page).run()
        assert_clean(at)
    assert float(metric(at, "Total MSE")) > 0  # the Learn page drew its quantizer


def test_pages_explain_an_unavailable_model(app_env):
    """A torchvision model without cached weights (or on the wrong data): warnings, never an exception."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["model_source"] = "torchvision"
    at.session_state["model"] = "resnet18"
    at.run()
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        if page in MODEL_PAGES:
            assert any("resnet18" in w.value and "not cached" in w.value for w in at.warning), page


def test_unusable_store_is_reported(app_env, weights, monkeypatch):
    home = app_env / "not-a-store"
    home.mkdir()
    (home / "runs.sqlite").write_text("this is not SQLite")
    monkeypatch.setenv("PTQ_EXPLORER_HOME", str(home))
    at = new_app(weights, "pages/compare_runs.py")
    assert not at.exception
    assert any("unusable" in e.value for e in at.error)
    assert (home / "runs.sqlite").read_text() == "this is not SQLite"


def test_learn_widgets_change_the_error(app_env, weights):
    at = new_app(weights, "pages/learn_quantizer.py")
    mse4 = float(metric(at, "Total MSE"))
    at.slider(key="learn_bits").set_value(2).run()
    assert_clean(at)
    mse2 = float(metric(at, "Total MSE"))
    assert mse2 > mse4 * 4  # two bits fewer: about 16x the rounding error
    assert metric(at, "Clipped values") == "0.00%"
    at.slider(key="learn_ratio").set_value(0.3).run()
    assert float(metric(at, "Clipped values").rstrip("%")) > 0
    at.radio(key="w_learn_source").set_value("activations").run()
    assert_clean(at)


def _rtn_settings(at: AppTest) -> None:
    at.selectbox(key="w_q_w_observer").set_value("minmax")
    at.selectbox(key="w_q_a_observer").set_value("minmax")
    at.number_input(key="w_q_calib").set_value(64)
    at.run()


def test_quantize_rtn_run_is_saved_and_compared(app_env, weights):
    at = new_app(weights, "pages/quantize.py", user_name="tester")
    assert_clean(at)
    assert any("No saved run" in i.value for i in at.info)
    _rtn_settings(at)
    at.button(key="run").click().run()
    assert_clean(at)
    run_id = at.session_state["last_run_id"]
    assert run_id and metric(at, "Quantized top-1").endswith("%")
    record = RunStore().get(run_id)
    assert record.status == "done" and record.metrics["eval_samples"] == 500 and record.config["calib"] == 64

    at.switch_page("pages/compare_runs.py").run()
    assert_clean(at)
    assert run_id in at.dataframe[0].value["run_id"].tolist()
    at.switch_page("pages/layer_errors.py").run()
    assert_clean(at)
    assert at.multiselect(key="w_le_runs").value == [run_id]

    reloaded = new_app(weights, "pages/quantize.py", user_name="tester")  # a reload by the same user shows it
    assert_clean(reloaded)
    assert metric(reloaded, "Quantized top-1") == metric(at.switch_page("pages/quantize.py").run(), "Quantized top-1")


def _recon_method() -> str | None:
    """A registered method with a `preset` and an `iters` field (a reconstruction method), if any."""
    for name, (cls, _fn) in METHODS.items():
        names = {f.name for f in fields(cls)}
        if {"preset", "iters"} <= names and hasattr(cls, "from_preset"):
            return name
    return None


@pytest.mark.skipif(_recon_method() is None, reason="no reconstruction method registered")
def test_quantize_reconstruction_run_at_a_tiny_preset(app_env, weights):
    method = _recon_method()
    at = new_app(weights, "pages/quantize.py")
    at.selectbox(key="w_q_method").set_value(method).run()
    assert_clean(at)
    assert at.selectbox(key=f"w_qm_{method}_preset").value == "fast"  # the fast preset is the default
    assert at.number_input(key="w_q_calib").value == METHODS[method][0].from_preset("fast").calib
    at.number_input(key=f"w_qm_{method}_iters").set_value(5)
    _rtn_settings(at)  # min-max ranges, 64 calibration images
    at.button(key="run").click().run()
    assert_clean(at)
    record = RunStore().get(at.session_state["last_run_id"])
    assert record.status == "done" and record.method == method and record.config["iters"] == 5


def test_failed_run_shows_error_and_keeps_saved_runs(app_env, weights, monkeypatch):
    store = RunStore()
    with store.run("fmnist-resnet20", "rtn", 4, 4, {}) as handle:
        handle.finish({"top1": 50.0}, [], {})

    def boom(*_a, **_k):
        raise ConfigError("the calibration went wrong on purpose")

    monkeypatch.setattr("ptq_core.pipeline.quantize_and_evaluate", boom)
    at = new_app(weights, "pages/quantize.py")
    at.button(key="run").click().run()
    assert not at.exception
    assert any("went wrong on purpose" in e.value for e in at.error)
    statuses = sorted(r.status for r in store.list())
    assert statuses == ["done", "failed"]


def test_bad_override_is_refused(app_env, weights):
    at = new_app(weights, "pages/quantize.py")
    at.text_area(key="w_q_overrides").set_value("nosuchlayer.*=8/8").run()
    assert any("matches no layer" in e.value for e in at.error)
    assert at.button(key="run").disabled  # nothing can run while a setting is invalid
    at.text_area(key="w_q_overrides").set_value("layer1.*=9/4").run()
    assert any("out of range" in e.value for e in at.error)
    at.text_area(key="w_q_overrides").set_value("layer1.*=8/4").run()
    assert not at.error and not at.button(key="run").disabled


def test_unsafe_upload_is_refused(app_env, monkeypatch):
    monkeypatch.setenv("PTQ_ALLOWED_MODEL_DIRS", str(SUPPORT))  # the operator allows tests/support/

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    buf = io.BytesIO()
    torch.save({"w": Evil()}, buf)
    at = new_app(None)
    at.radio(key="w_model_source").set_value("custom").run()
    at.text_input(key="w_custom_factory").set_value("tests/support/helpers.py:TinyResNet").run()
    at.file_uploader(key="upload:tests/support/helpers.py:TinyResNet").set_value(("evil.pt", buf.getvalue(), "")).run()
    assert not at.exception
    assert any("refused to load evil.pt" in e.value for e in at.error)


@dataclass
class DummyConfig(MethodConfig):
    """A method with its own settings, to check the generic form."""

    method: ClassVar[str] = "dummy"
    iters: int = setting(200, help="optimisation steps per block", min=1, max=10000)
    lr: float = setting(1e-3, help="learning rate")
    warmup: bool = setting(True, help="warm up")
    loss: Literal["mse", "lp"] = setting("mse", help="loss")
    drop_prob: float | None = setting(None, help="dropping probability", min=0, max=1)


def test_method_form_is_built_from_the_config_fields(app_env, weights, monkeypatch):
    monkeypatch.setitem(METHODS, "dummy", (DummyConfig, lambda *a: None))
    at = new_app(weights, "pages/quantize.py")
    at.selectbox(key="w_q_method").set_value("dummy").run()
    assert_clean(at)
    at.number_input(key="w_qm_dummy_iters").set_value(5)
    at.selectbox(key="w_qm_dummy_loss").set_value("lp")
    at.checkbox(key="w_qm_dummy_drop_prob__on").check().run()
    at.number_input(key="w_qm_dummy_drop_prob").set_value(0.5).run()
    assert_clean(at)
    config = json.loads(at.code[0].value)["method"]
    assert config["method"] == "dummy" and config["iters"] == 5 and config["loss"] == "lp"
    assert config["drop_prob"] == 0.5 and config["warmup"] is True and config["quant"]["wbits"] == 4


def test_compare_runs_filters_and_deletes(app_env):
    store = RunStore()
    for method, top1 in (("rtn", 80.0), ("other", 85.0)):
        with store.run("fmnist-resnet20", method, 4, 4, {"calib": 64}, owner="session:me") as handle:
            handle.finish({"fp_top1": 90.0, "top1": top1, "size_bits": 8e6}, [], {})
    at = new_app(None, "pages/compare_runs.py", session_id="me")
    assert_clean(at)
    assert len(at.dataframe[0].value) == 2
    at.selectbox(key="w_cr_method").set_value("other").run()
    assert at.dataframe[0].value["method"].tolist() == ["other"]
    target = at.dataframe[0].value["run_id"].tolist()
    at.multiselect(key="w_cr_selected").set_value(target).run()
    at.checkbox(key="cr_sure").check().run()
    at.button(key="cr_delete").click().run()
    assert_clean(at)
    assert [r.method for r in store.list()] == ["rtn"]


def test_job_thread_reports_progress_and_cancels():
    from ptq_ui.jobs import start_job

    def work(progress):  # reports until cancelled (the progress call raises then), at most 3000 steps
        for i in range(3000):
            progress(ProgressEvent("reconstruct", i + 1, 3000, unit="layer1", losses={"rec": 1.0 / (i + 1)}))
            time.sleep(0.01)
        return "finished"

    job = start_job(work, "test", sync=False)
    wait_until(lambda: job.snapshot().last is not None, what="the job's first progress event")
    snap = job.snapshot()
    assert snap.status == "running" and snap.losses
    job.cancel()
    job.thread.join(30)
    assert job.snapshot().status == "cancelled" and job.result is None


def test_charts_are_plain_functions():
    from ptq_ui import charts

    layers = [
        {"name": "conv1", "sqnr_db": 30.0, "wbits": 8, "abits": 8},
        {"name": "layer1.0", "sqnr_db": None, "wbits": 4, "abits": 4},
    ]
    fig = charts.runs.sqnr_bars(layers)
    assert [t.name for t in fig.data] == ["W8/A8", "W4/A4"]
    lines = charts.runs.layer_metric_lines({"a": layers, "b": layers}, "sqnr_db", "t")
    assert len(lines.data) == 2

"""Trustworthy runs in the app: what the Quantize page shows is what runs, is stored, and is labelled.

One test per defect of the trustworthy-runs issue, plus a property test over random widget
changes. Jobs run inline and evaluations use the first 500 test images.
"""

from __future__ import annotations

import csv
import io
import random

import numpy as np
import pytest
from PIL import Image

from ptq_core.spec import RunSpec, make_config
from ptq_core.store import RunRecord, RunStore
from tests.support.app_support import captions, metric, new_app, shown_spec

APP_ENV = {"PTQ_UI_SYNC_JOBS": "1", "PTQ_UI_EVAL_LIMIT": "500"}
QUANTIZE = "pages/quantize.py"
SMALL = {"run_form": {"quant": {"w_observer": "minmax", "a_observer": "minmax"}, "calib": 64}}


def _run_and_check(at) -> dict:
    """Press Run; the stored description must equal the one shown just before."""
    shown = shown_spec(at)
    at.button(key="run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    record = RunStore().get(at.session_state["last_run_id"])
    assert record.status == "done", record.error
    assert record.spec == shown
    return shown


def test_a_bad_override_resets_no_other_setting(app_env, weights):
    """Defect 1: a bad override hid the form; fixing it showed calib 1 / batch 1 / 500 test images."""
    at = new_app(weights, QUANTIZE, **SMALL)
    at.number_input(key="w_q_calib").set_value(96).run()
    at.number_input(key="w_q_batch_size").set_value(48).run()
    at.selectbox(key="w_q_eval_limit").set_value(2000).run()
    at.text_area(key="w_q_overrides").set_value("foo=bar").run()
    assert any("PATTERN=W/A" in e.value for e in at.error)
    assert at.number_input(key="w_q_calib").value == 96  # the rest of the form is still drawn, unchanged
    at.text_area(key="w_q_overrides").set_value("").run()
    assert not at.error
    assert (at.number_input(key="w_q_calib").value, at.number_input(key="w_q_batch_size").value) == (96, 48)
    assert at.selectbox(key="w_q_eval_limit").value == 2000
    shown = shown_spec(at)
    assert (shown["method"]["calib"], shown["method"]["batch_size"], shown["eval_limit"]) == (96, 48, 2000)
    at.selectbox(key="w_q_eval_limit").set_value(500).run()  # keep the run short
    spec = _run_and_check(at)
    assert (spec["method"]["calib"], spec["method"]["batch_size"]) == (96, 48)


def _image_folder(root, per_class: int = 6):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def test_a_small_data_set_does_not_overwrite_the_calibration_choice(app_env, tv_weights, tmp_path):
    """Defect 2: 12 ImageFolder images clamped calibration to 12, and it stayed 12 on the bigger data.

    ImageFolder data goes with a torchvision model (zoo models take Fashion-MNIST tensors only,
    and that pair is refused), so both data sets here are folders: 300 images, then 12.
    """
    big, small = _image_folder(tmp_path / "big", per_class=150), _image_folder(tmp_path / "small")
    at = new_app(
        None,
        QUANTIZE,
        **SMALL,
        model_source="torchvision",
        model="mobilenet_v2",
        data_kind="imagefolder",
        data_folder=str(big),
        data=f"imagefolder:{big}",
    )
    at.session_state["weights"], at.session_state["weights_for"] = tv_weights, "mobilenet_v2"
    at.run()
    at.number_input(key="w_q_calib").set_value(128).run()
    at.switch_page("pages/model_data.py").run()
    at.text_input(key="w_data_folder").set_value(str(small)).run()
    assert at.radio(key="w_model_source").value == "torchvision"  # changing the data keeps the model
    at.switch_page(QUANTIZE).run()
    assert at.number_input(key="w_q_calib").value <= 12
    assert shown_spec(at)["method"]["calib"] <= 12 and any("128" in i.value for i in at.info)
    at.switch_page("pages/model_data.py").run()
    at.text_input(key="w_data_folder").set_value(str(big)).run()
    at.switch_page(QUANTIZE).run()
    assert at.number_input(key="w_q_calib").value == 128
    assert shown_spec(at)["method"]["calib"] == 128


def test_overrides_are_labelled_everywhere(app_env, weights):
    """Defect 3: a run with per-layer overrides was labelled and filtered as uniform W2/A2."""
    store = RunStore()
    uniform = RunSpec(method=make_config("rtn", wbits=2, abits=2)).to_dict()
    with store.run("fmnist-resnet20", "rtn", 2, 2, uniform["method"], spec=uniform) as handle:
        handle.finish({"fp_top1": 93.0, "top1": 57.0, "eval_samples": 500, "w_bits_avg": 2.3}, [], {}, label="W2A2")
    at = new_app(weights, QUANTIZE, **SMALL)
    at.selectbox(key="w_q_wbits").set_value(2).run()
    at.selectbox(key="w_q_abits").set_value(2).run()
    at.text_area(key="w_q_overrides").set_value("layer3.*=8/8").run()
    _run_and_check(at)
    record = RunStore().get(at.session_state["last_run_id"])
    assert record.label.startswith("W2A2 + ") and "bits avg" in record.label
    assert record.label in captions(at)  # the result header
    at.switch_page("pages/compare_runs.py").run()
    table = at.dataframe[0].value
    assert sorted(table["bits"]) == sorted(["W2A2", record.label])
    assert record.label in at.selectbox(key="w_cr_bits").options and "W2A2" in at.selectbox(key="w_cr_bits").options
    at.selectbox(key="w_cr_bits").set_value("W2A2").run()
    assert at.dataframe[0].value["run_id"].tolist() == [handle.run_id]
    rows = list(csv.DictReader(io.StringIO(store.export_csv())))
    assert {r["bits"] for r in rows} == {"W2A2", record.label}
    assert float(next(r for r in rows if r["bits"] == record.label)["w_bits_avg"]) > 2.5


def _stored(store: RunStore, seed: int, eval_limit: int, top1: float, fail: str | None = None) -> str:
    spec = RunSpec(method=make_config("qdrop", preset="fast", wbits=4, abits=4, seed=seed), eval_limit=eval_limit)
    d = spec.to_dict()
    run_id = store.start("fmnist-resnet20", "qdrop", 4, 4, d["method"], spec=d)
    if fail:
        store.fail(run_id, fail)
    else:
        store.finish(
            run_id,
            {"fp_top1": 93.0 + eval_limit / 1e4, "top1": top1, "eval_samples": eval_limit},
            [],
            {},
            extras={"data": {"name": "fmnist-sample"}},
            label="W4A4",
        )
    return run_id


def test_compare_runs_says_what_each_number_is(app_env):
    """Defect 4: no test-image count, observer, overrides, preset, seed or data; failed runs showed no error."""
    store = RunStore()
    _stored(store, 0, 500, 90.0)
    _stored(store, 1, 2000, 91.0)
    failed = _stored(store, 2, 500, 0.0, fail="ConfigError: the calibration went wrong")
    at = new_app(None, "pages/compare_runs.py")
    assert not at.exception
    table = at.dataframe[0].value
    for column in ("test images", "data", "observers", "overrides", "preset", "iters", "seed", "calib", "error"):
        assert column in table.columns, column
    assert sorted(table["test images"].dropna().astype(int)) == [500, 500, 2000]
    assert set(table["seed"]) == {0, 1, 2} and set(table["preset"]) == {"fast"}
    at.selectbox(key="w_cr_detail").set_value(failed).run()
    assert any("the calibration went wrong" in e.value for e in at.error)
    rows = list(csv.DictReader(io.StringIO(store.export_csv())))
    assert {r["spec.method.seed"] for r in rows} == {"0", "1", "2"}
    assert all(RunSpec.from_json(r["spec_json"]).method.preset == "fast" for r in rows)


def test_activation_clusters_say_which_bits_they_use(app_env, weights):
    """Defect 5: the page applied the Quantize page's overrides silently; its bits slider then did nothing."""
    state = {
        "run_form": {"quant": {"w_observer": "minmax", "a_observer": "minmax"}, "overrides": "layer*=8/8"},
        "ac_images": 100,
        "ac_layer": "logits",
    }
    at = new_app(weights, "pages/activation_clusters.py", **state)
    assert not at.exception
    text = captions(at)
    assert "Round-to-nearest at W4/A4," in text and "overrides" not in text.split("Round-to-nearest")[1].split(".")[0]
    at.slider(key="w_ac_bits").set_value(2).run()
    shift2 = metric(at, "Median relative shift")
    at.slider(key="w_ac_bits").set_value(8).run()
    assert float(metric(at, "Median relative shift")) < float(shift2)  # the slider moves every layer
    at.checkbox(key="w_ac_overrides").check().run()
    assert "layer\\*" in captions(at) or "layer*" in captions(at)


def test_every_accuracy_says_on_which_test_images(app_env, weights):
    """Defect 6: the same quantity showed different numbers on different pages with nothing saying why."""
    at = new_app(weights, QUANTIZE, **SMALL)
    _run_and_check(at)
    assert "on the first 500 test images" in captions(at)
    at.switch_page("pages/learn_cat.py").run()
    assert "on the first 1,000 test images" in captions(at) and "RTN W3A3" in captions(at)
    at.switch_page("pages/model_data.py").run()
    labels = [m.label for m in at.metric if "op-1" in m.label]
    assert labels and all("test split" in label or "images" in label for label in labels)


@pytest.mark.parametrize("seed", [0, 1])
def test_random_widget_changes_store_what_was_shown(app_env, weights, seed):
    """Property: after any sequence of changes (invalid ones included), Run stores the description shown."""
    rng = random.Random(seed)
    at = new_app(weights, QUANTIZE, **SMALL)
    changes = [
        lambda: at.selectbox(key="w_q_wbits").set_value(rng.choice([2, 3, 4, 8])),
        lambda: at.selectbox(key="w_q_abits").set_value(rng.choice([4, 8, 32])),
        lambda: at.selectbox(key="w_q_w_observer").set_value(rng.choice(["minmax", "percentile"])),
        lambda: at.number_input(key="w_q_calib").set_value(rng.choice([16, 32, 48])),
        lambda: at.number_input(key="w_q_batch_size").set_value(rng.choice([8, 16, 64])),
        lambda: at.number_input(key="w_q_seed").set_value(rng.randrange(100)),
        lambda: at.text_area(key="w_q_overrides").set_value(rng.choice(["foo=bar", "layer9.*=8/8", "fc=8/8", ""])),
        lambda: at.radio(key="w_q_granularity").set_value(rng.choice(["per-channel", "per-tensor"])),
        lambda: at.checkbox(key="w_q_a_symmetric").set_value(rng.random() < 0.5),
    ]
    for _ in range(8):
        rng.choice(changes)()
        at.run()
        assert not at.exception, [e.value for e in at.exception]
    at.text_area(key="w_q_overrides").set_value(rng.choice(["fc=8/8", ""])).run()  # end on a valid form
    spec = _run_and_check(at)
    assert spec["method"]["calib"] == at.number_input(key="w_q_calib").value


def test_a_saved_run_is_exported_from_compare_runs(app_env, weights):
    """Export (issue 15): the run is rebuilt, checked, and its three files are offered with the encodings."""
    at = new_app(weights, QUANTIZE, **SMALL)
    _run_and_check(at)
    run_id = at.session_state["last_run_id"]
    at.switch_page("pages/compare_runs.py").run()
    at.selectbox(key="w_cr_detail").set_value(run_id).run()
    at.button(key="cr_export_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "onnx: checked" in captions(at) and "int: checked" in captions(at)
    table = at.dataframe[-1].value
    assert "layer1.0.conv1" in table["layer"].tolist() and set(table["W bits"]) >= {4, 8}


def test_compare_runs_builds_a_shareable_report(app_env, weights):
    """A stored run's report is rebuilt from its description in a job and offered as one HTML file."""
    from ptq_core import run_quantization

    quant = {"wbits": 4, "abits": 4, "w_observer": "minmax", "a_observer": "minmax"}
    spec = RunSpec(
        model="fmnist-resnet20",
        weights=weights,
        device="cpu",
        eval_limit=64,
        error_samples=32,
        method=make_config("rtn", calib=32, **quant),
    )
    record, _ = run_quantization(spec)
    at = new_app(None, "pages/compare_runs.py")
    at.selectbox(key="w_cr_detail").set_value(record.run_id).run()
    at.button(key="cr_report").click().run()
    assert not at.exception, [e.value for e in at.exception]
    result = at.session_state["report_job"].result
    assert result["reproduced"] and result["html"].startswith("<!doctype html>")
    assert f"top-1 {record.metrics['top1']:.2f}% equals the stored" in captions(at)
    assert at.get("download_button")


def _sweep_cell(store: RunStore, method: str, wbits: int, seed: int, top1: float) -> None:
    spec = RunSpec(method=make_config(method, wbits=wbits, abits=4, seed=seed)).to_dict()
    record = RunRecord(
        run_id=f"{method}{wbits}s{seed}",
        created=float(seed + 10 * wbits),
        finished=99.0,
        status="done",
        model="fmnist-resnet20",
        method=method,
        wbits=wbits,
        abits=4,
        config=spec["method"],
        metrics={"top1": top1, "fp_top1": 94.0},
        spec=spec,
        sweep="grid",
        cell=f"method={method} wbits={wbits} seed={seed}",
    )
    store.add(record)


def test_compare_runs_draws_a_sweep_as_a_table_and_a_plot(app_env):
    store = RunStore()
    _stored(store, 0, 500, 90.0)  # not in the sweep
    for method, wbits, seed, top1 in [
        ("rtn", 2, 0, 50.0),
        ("rtn", 2, 1, 54.0),
        ("rtn", 4, 0, 90.0),
        ("rtn", 4, 1, 92.0),
        ("adaround", 2, 0, 70.0),
    ]:
        _sweep_cell(store, method, wbits, seed, top1)
    at = new_app(None, "pages/compare_runs.py")
    assert not at.exception
    at.selectbox(key="w_cr_sweep").set_value("grid").run()
    assert not at.exception, [e.value for e in at.exception]
    groups = at.dataframe[0].value
    assert list(groups["cells"]) == ["method=adaround wbits=2", "method=rtn wbits=2", "method=rtn wbits=4"]
    rtn2 = groups[groups["cells"] == "method=rtn wbits=2"].iloc[0]
    assert rtn2["top1"] == 52.0 and rtn2["std"] == pytest.approx(2**0.5 * 2) and rtn2["seeds"] == "0, 1"
    plot = at.get("plotly_chart")[0].proto.spec
    assert '"name":"rtn"' in plot.replace(" ", "") and '"name":"adaround"' in plot.replace(" ", "")
    assert len(at.dataframe[1].value) == 5  # the run table lists the sweep's runs only

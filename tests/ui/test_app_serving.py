"""A served app used by several people: ownership, safety switches, readable errors, model/data pairs.

Each test is one case of the serving issue; sessions are AppTests with their own `session_id`
(like two browser tabs), jobs run inline.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ptq_core.spec import RunSpec, make_config
from ptq_core.store import RunStore
from tests.support.app_support import captions, new_app
from tests.support.paths import SUPPORT

APP_ENV = {"PTQ_UI_SYNC_JOBS": "1", "PTQ_UI_EVAL_LIMIT": "200"}
MODEL_DATA, QUANTIZE, COMPARE = "pages/model_data.py", "pages/quantize.py", "pages/compare_runs.py"


def _stored(owner: str, top1: float = 80.0, model: str = "fmnist-resnet20") -> str:
    spec = RunSpec(model=model, method=make_config("rtn", wbits=4, abits=4, calib=32), eval_limit=200).to_dict()
    with RunStore().run(model, "rtn", 4, 4, spec["method"], spec=spec, owner=owner) as handle:
        handle.finish({"fp_top1": 90.0, "top1": top1, "eval_samples": 200}, [], {}, label="W4A4")
    return handle.run_id


def _errors(at) -> list[str]:
    return [e.value for e in at.error]


# -- ownership ------------------------------------------------------------------------------


def test_b_cannot_delete_a_run_of_a(app_env):
    a_run = _stored("session:aaaa", 81.0)
    b_run = _stored("session:bbbb", 82.0)
    b = new_app(None, COMPARE, session_id="bbbb")
    assert set(b.dataframe[0].value["run_id"]) == {a_run, b_run}  # everyone's runs are listed
    assert dict(zip(b.dataframe[0].value["run_id"], b.dataframe[0].value["owner"], strict=True))[b_run] == "you"
    b.multiselect(key="w_cr_selected").set_value([a_run]).run()
    assert b.button(key="cr_delete").disabled and b.checkbox(key="cr_sure").disabled
    assert any("only your own runs" in w.value for w in b.warning)
    b.multiselect(key="w_cr_selected").set_value([b_run]).run()
    b.checkbox(key="cr_sure").check().run()
    b.button(key="cr_delete").click().run()
    assert not b.exception
    assert [r.run_id for r in RunStore().list()] == [a_run]  # B's own went, A's stayed


def test_the_runs_service_refuses_to_delete_someone_elses_run_unless_the_team_allows_it(app_env, monkeypatch):
    from ptq_ui.services import runs

    a_run = _stored("session:aaaa")
    assert runs.delete_runs([a_run], "session:bbbb") == 0
    monkeypatch.setenv("PTQ_DELETE_ANY_RUN", "1")  # a trusting team's store
    assert runs.delete_runs([a_run], "session:bbbb") == 1


def test_last_run_and_the_quantize_fallback_are_your_own(app_env, weights):
    _stored("session:aaaa", 77.7)
    b = new_app(weights, session_id="bbbb")  # the sidebar, on the first page
    assert "You are session:bbbb" in captions(b) and "Your last run" not in captions(b)
    b.switch_page(QUANTIZE).run()
    assert not b.exception and "77.70" not in "".join(m.value for m in b.metric)
    assert any("No saved run of yours" in i.value for i in b.info)
    a = new_app(weights, session_id="aaaa")
    assert "Your last run" in captions(a) and "top-1 77.70%" in captions(a)
    a.switch_page(QUANTIZE).run()
    assert not any("No saved run of yours" in i.value for i in a.info)
    assert any(m.value == "77.70%" for m in a.metric)  # A's result is shown to A


def test_a_name_makes_the_runs_yours_across_sessions(app_env):
    run = _stored("user:Ada")
    at = new_app(None, session_id="cccc")
    at.text_input(key="w_user_name").set_value("Ada*").run()
    assert at.session_state["user_name"] == "Ada"  # kept clean
    at.switch_page(COMPARE).run()
    at.multiselect(key="w_cr_selected").set_value([run]).run()
    assert not at.checkbox(key="cr_sure").disabled


# -- interrupted runs -----------------------------------------------------------------------


def test_an_interrupted_run_is_shown_and_can_be_re_run(app_env, weights):
    import sqlite3
    import subprocess
    import sys

    store = RunStore()
    spec = RunSpec(model="fmnist-resnet20", weights=weights, method=make_config("rtn", calib=32), eval_limit=200)
    run_id = store.start(spec.model, "rtn", 4, 4, spec.method.to_dict(), spec=spec.to_dict(), owner="session:aaaa")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with sqlite3.connect(store.path) as conn:  # as if its server had been killed with -9
        conn.execute("UPDATE runs SET pid = ? WHERE run_id = ?", (dead.pid, run_id))
    at = new_app(weights, COMPARE, session_id="bbbb")
    assert at.dataframe[0].value["status"].tolist() == ["interrupted"]
    assert any("interrupted" in e and "ended without finishing" in e for e in _errors(at))
    at.button(key="cr_rerun").click().run()
    assert not at.exception
    assert any("Queued again" in s.value for s in at.success), _errors(at)
    runs = RunStore().list()
    assert [r.status for r in runs] == ["done", "interrupted"]
    assert runs[0].owner == "session:bbbb" and runs[0].spec == spec.to_dict()


# -- safety: model code from files -----------------------------------------------------------


def _factory_file(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "net.py"
    path.write_text("import torch\nfrom torch import nn\n\n" + body)
    return path


def test_a_server_side_factory_path_is_refused_unless_allowed(app_env, weights, tmp_path, monkeypatch):
    path = _factory_file(tmp_path / "models", "def build():\n    return nn.Linear(2, 2)\n")
    monkeypatch.delenv("PTQ_ALLOWED_MODEL_DIRS", raising=False)
    monkeypatch.delenv("PTQ_ALLOW_UPLOADED_CODE", raising=False)
    at = new_app(weights, MODEL_DATA)
    at.radio(key="w_model_source").set_value("custom").run()
    assert any("off on this server" in i.value for i in at.info)
    assert not [t for t in at.text_input if t.key == "w_custom_factory"]  # no way to type a path
    # a session that names a path anyway (e.g. an old session state) is refused before any import
    evil = _factory_file(tmp_path / "evil", "raise SystemExit('this must never run')\n")
    at = new_app(None)
    at.session_state["model"] = f"{evil}:build"
    at.session_state["weights"], at.session_state["weights_for"] = weights or "w.safetensors", f"{evil}:build"
    at.switch_page(QUANTIZE).run()
    assert not at.exception and any("model files on the server are off" in e for e in _errors(at))
    monkeypatch.setenv("PTQ_ALLOWED_MODEL_DIRS", str(tmp_path / "other"))
    at = new_app(None, MODEL_DATA)
    at.radio(key="w_model_source").set_value("custom").run()
    at.text_input(key="w_custom_factory").set_value(f"{path}:build").run()
    at.file_uploader(key=f"upload:{path}:build").set_value(("w.safetensors", b"\0" * 64, "")).run()
    assert not at.exception and not at.success


def test_uploaded_code_runs_only_when_allowed_and_its_path_is_not_shown(app_env, tmp_path, monkeypatch):
    from ptq_core.checkpoints import save_state_dict
    from tests.support.helpers import TinyResNet

    code = (SUPPORT / "helpers.py").read_bytes()
    weights = save_state_dict(TinyResNet(), tmp_path / "tiny.safetensors").read_bytes()
    monkeypatch.delenv("PTQ_ALLOWED_MODEL_DIRS", raising=False)
    monkeypatch.setenv("PTQ_ALLOW_UPLOADED_CODE", "1")
    at = new_app(None, MODEL_DATA, session_id="dddd")
    at.radio(key="w_model_source").set_value("custom").run()
    at.file_uploader(key="code_upload").set_value(("helpers.py", code, "text/x-python")).run()
    at.text_input(key="w_custom_attr").set_value("TinyResNet").run()
    model = at.session_state["model"]
    home = Path(os.environ["PTQ_EXPLORER_HOME"])
    assert Path(model.rsplit(":", 1)[0]).parent == home / "uploads" / "dddd"  # the session's folder
    at.file_uploader(key=f"upload:{model}").set_value(("tiny.safetensors", weights, "")).run()
    assert not at.exception and not at.error, _errors(at)
    assert any("fits uploaded helpers.py:TinyResNet" in s.value for s in at.success)
    shown = captions(at) + "".join(m.value for m in at.markdown)
    assert str(home) not in shown and "uploaded helpers.py:TinyResNet" in shown
    monkeypatch.setenv("PTQ_ALLOW_UPLOADED_CODE", "0")  # the operator turns it off: the model is refused
    at.run()
    assert any("off on this server" in i.value for i in at.info)
    at.switch_page(QUANTIZE).run()
    assert not at.exception and any("uploaded model code is off" in e for e in _errors(at)), _errors(at)


def test_upload_folders_are_per_session_and_removed_with_the_session(app_env):
    from ptq_ui import resources

    folder = resources.uploads_root() / "eeee"
    folder.mkdir(parents=True)
    (folder / "x.safetensors").write_bytes(b"x")
    resources.release_dir(folder)  # what the session-scoped cache calls when the session ends
    assert not folder.exists()
    assert resources.uploads_root().parent == Path(os.environ["PTQ_EXPLORER_HOME"])


# -- readable errors --------------------------------------------------------------------------


def test_a_factory_that_raises_shows_its_own_message(app_env, weights, tmp_path, monkeypatch):
    path = _factory_file(tmp_path / "models", "def build():\n    raise RuntimeError('no layer3.* here')\n")
    monkeypatch.setenv("PTQ_ALLOWED_MODEL_DIRS", str(tmp_path / "models"))
    name = f"{path}:build"
    at = new_app(None, MODEL_DATA, model_source="custom", custom_factory=name)
    at.session_state["weights"], at.session_state["weights_for"] = weights or "w.safetensors", name
    at.run()
    assert not at.exception
    assert "model factory build in net.py raised RuntimeError: no layer3.\\* here" in _errors(at)  # literal *


def test_a_checkpoint_that_does_not_fit_shows_no_success_box(app_env, tmp_path):
    from ptq_core.checkpoints import save_state_dict
    from tests.support.helpers import TinyResNet

    wrong = save_state_dict(TinyResNet(), tmp_path / "tiny.safetensors").read_bytes()
    at = new_app(None, MODEL_DATA)
    at.file_uploader(key="upload:fmnist-resnet20").set_value(("tiny.safetensors", wrong, "")).run()
    assert not at.exception
    assert any("shape" in e or "missing" in e for e in _errors(at)), _errors(at)
    assert not at.success and at.session_state["weights"] is None


def _image_folder(root: Path, size: int = 28) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def test_a_zoo_model_with_imagefolder_data_is_refused_on_model_and_data(app_env, weights, tmp_path):
    folder = _image_folder(tmp_path / "imgs")
    at = new_app(weights, MODEL_DATA)
    at.radio(key="w_data_kind").set_value("imagefolder").run()
    at.text_input(key="w_data_folder").set_value(str(folder)).run()
    assert not at.exception
    assert any("cannot use" in e and "Image images" in e for e in _errors(at)), _errors(at)
    at.switch_page(QUANTIZE).run()  # and no run can start from it
    assert not at.exception and not [b for b in at.button if b.key == "run"]


def test_a_torchvision_model_with_fashion_mnist_is_refused_with_the_shapes(app_env, tv_weights):
    at = new_app(None, MODEL_DATA, model_source="torchvision", model="mobilenet_v2")
    at.session_state["weights"], at.session_state["weights_for"] = tv_weights, "mobilenet_v2"
    at.run()
    assert not at.exception
    assert any("1 × 28 × 28" in e and "3 channels" in e for e in _errors(at)), _errors(at)


def test_choosing_imagefolder_keeps_the_model_source_and_model(app_env, tv_weights):
    at = new_app(None, MODEL_DATA, model_source="torchvision", model="mobilenet_v2")
    at.radio(key="w_data_kind").set_value("imagefolder").run()  # no folder yet
    assert at.radio(key="w_model_source").value == "torchvision"
    assert at.selectbox(key="w_model").value == "mobilenet_v2"
    at.radio(key="w_data_kind").set_value("fmnist-sample").run()
    at.radio(key="w_data_kind").set_value("imagefolder").run()
    assert at.radio(key="w_model_source").value == "torchvision"
    assert at.session_state["model"] == "mobilenet_v2"

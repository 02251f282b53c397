"""The app's one door into `ptq_core`: cached models and data, derived tables, runs and jobs.

Caching policy: `st.cache_resource` holds loaded models and data bundles, keyed by
name, weights file and device; they are shared between sessions and never changed
(runs load and quantize their own copy through `run_quantization`).
`st.cache_data` holds small derived results (tables, arrays, curves) keyed by plain
strings and numbers. Pages call the functions here and never import torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
import torch

from ptq_core.checkpoints import check_finite, load_state_dict, save_state_dict
from ptq_core.data import DataBundle, load_data
from ptq_core.errors import CheckpointError, ConfigError, DataError, PTQError
from ptq_core.methods import METHODS, MethodConfig
from ptq_core.models import LoadedModel, check_model_data, list_models, load_model, resolve_device
from ptq_core.pipeline import run_quantization
from ptq_core.prepare import QuantSpec
from ptq_core.qscheme import FLOAT_BITS, MAX_BITS, MIN_BITS
from ptq_core.serving import check_factory_allowed, is_factory, uploaded_code_allowed
from ptq_core.spec import RunSpec
from ptq_core.store import RunRecord, RunStore, default_store_path
from ptq_core.sweep import sweep_records, sweep_summary

from . import analysis
from .jobs import Job, job_queue, start_job
from .state import Selection, session_id

__all__ = ["PTQError", "BITS", "FLOAT_BITS", "MAX_UPLOAD_MB", "cuda_available", "device_label",
           "model_entries", "loaded_info", "architecture", "float_accuracy", "quantizable_layers", "layer_values",
           "quantizer_view", "clip_curve", "method_classes", "store", "list_runs", "get_run", "delete_runs",
           "export_runs", "start_quantization", "save_upload", "default_eval_limit", "uploads_root", "session_dir",
           "save_code_upload", "redact", "redact_json", "model_label", "check_weights", "delete_any", "queue_counts",
           "rerun", "uploaded_code_allowed", "start_export", "read_file", "list_sweeps", "sweep_view"]  # fmt: skip

BITS = [*range(MIN_BITS, MAX_BITS + 1), FLOAT_BITS]  # 32 = keep float
MAX_UPLOAD_MB = 150
MAX_CODE_KB = 256  # an uploaded model file


def _configure_torch() -> None:
    """Keep torch modest on small hosts: `PTQ_UI_THREADS`, default half the cores."""
    threads = int(os.environ.get("PTQ_UI_THREADS", max(1, (os.cpu_count() or 2) // 2)))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


_configure_torch()


# -- devices and model list ----------------------------------------------------------------


def cuda_available() -> bool:
    """Whether a CUDA device can be used."""
    return torch.cuda.is_available()


def device_label(device: str) -> str:
    """What `device` resolves to, e.g. "auto → cpu"."""
    try:
        resolved = str(resolve_device(device))
    except PTQError as exc:
        return f"{device} (unavailable: {exc})"
    return resolved if resolved == device else f"{device} → {resolved}"


@st.cache_data(ttl=15, show_spinner=False)
def model_entries() -> list[dict[str, Any]]:
    """Every named model with its weights' status (name, source, status, detail, data, card)."""
    return [{"name": e.name, "source": e.source, "status": e.status, "detail": e.detail, "data": e.data,
             "card": e.card} for e in list_models()]  # fmt: skip


# -- cached resources (never mutated) ------------------------------------------------------


@st.cache_resource(max_entries=3, show_spinner="Loading the model…")
def _model(name: str, weights: str, device: str) -> LoadedModel:
    return load_model(name, weights or None, resolve_device(device))


@st.cache_resource(max_entries=3, show_spinner="Loading the data…")
def _bundle(data: str, transform_key: str, _loaded: LoadedModel | None) -> DataBundle:
    return load_data(data, _loaded.transform if _loaded is not None else None)


def _resources(sel: Selection) -> tuple[LoadedModel, DataBundle]:
    """The shared float model and data bundle of a selection (raise PTQError when unavailable).

    A `file.py:factory` model is refused unless the operator allowed it (`ptq_core.serving`).
    """
    check_factory_allowed(sel.model, [session_dir()])
    loaded = _model(*sel.key)
    folder = not sel.data.startswith("fmnist-")
    return loaded, _bundle(sel.data, "|".join(sel.key) if folder else "", loaded if folder else None)


@st.cache_data(max_entries=32, show_spinner="Checking that the model takes this data…")
def _pair_problem(key: tuple[str, str, str], data: str, _loaded: LoadedModel, _bundle: DataBundle) -> str | None:
    try:
        check_model_data(_loaded, _bundle)
    except PTQError as exc:
        return str(exc)
    return None


def loaded_info(sel: Selection) -> dict[str, Any]:
    """Load the selection and describe it: model entry, card, data sizes.

    Raises:
        PTQError: The model or data cannot be loaded, or the model does not take the data.
    """
    loaded, bundle = _resources(sel)
    problem = _pair_problem(sel.key, sel.data, loaded, bundle)
    if problem:
        raise DataError(problem)
    e = loaded.entry
    return {"name": e.name, "source": e.source, "status": e.status, "detail": e.detail, "card": dict(e.card),
            "data": bundle.describe(), "classes": list(bundle.classes)}  # fmt: skip


# -- derived, cached data ------------------------------------------------------------------


@st.cache_data(max_entries=16, show_spinner="Measuring the architecture…")
def _architecture(key: tuple[str, str, str], data: str, spec_json: str) -> dict[str, Any]:
    loaded, bundle = _resources(Selection(*key[:2], data, key[2]))
    example = analysis.example_batch(loaded.model, bundle)
    return analysis.architecture(loaded.model, example, QuantSpec.from_dict(json.loads(spec_json)))


def architecture(sel: Selection, spec: QuantSpec) -> dict[str, Any]:
    """Architecture table under `spec` (see `analysis.architecture`)."""
    return _architecture(sel.key, sel.data, json.dumps(spec.to_dict(), sort_keys=True))


@st.cache_data(max_entries=16, show_spinner="Evaluating the float model…")
def _float_accuracy(key: tuple[str, str, str], data: str, limit: int | None) -> dict[str, float]:
    loaded, bundle = _resources(Selection(*key[:2], data, key[2]))
    return analysis.float_accuracy(loaded.model, bundle, limit)


def float_accuracy(sel: Selection, limit: int | None) -> dict[str, float]:
    """Float top-1/top-5 (%) on the first `limit` test images (all if None)."""
    return _float_accuracy(sel.key, sel.data, limit)


@st.cache_data(max_entries=16, show_spinner=False)
def _layers(key: tuple[str, str, str], data: str) -> list[str]:
    return analysis.quantizable_layers(_resources(Selection(*key[:2], data, key[2]))[0].model)


def quantizable_layers(sel: Selection) -> list[str]:
    """Conv and linear layer names of the selected model."""
    return _layers(sel.key, sel.data)


@st.cache_data(max_entries=16, show_spinner="Collecting values…")
def _values(key: tuple[str, str, str], data: str, layer: str, source: str) -> np.ndarray:
    loaded, bundle = _resources(Selection(*key[:2], data, key[2]))
    return analysis.layer_values(loaded.model, bundle, layer, source)


def layer_values(sel: Selection, layer: str, source: str) -> np.ndarray:
    """A layer's weights or input activations (at most 200k values)."""
    return _values(sel.key, sel.data, layer, source)


@st.cache_data(max_entries=256, show_spinner=False)
def _quantizer(key: tuple[str, str, str], data: str, layer: str, source: str, bits: int, ratio: float,
               symmetric: bool) -> dict[str, Any]:  # fmt: skip
    return analysis.quantizer_view(_values(key, data, layer, source), bits, ratio, symmetric)


def quantizer_view(sel: Selection, layer: str, source: str, bits: int, ratio: float, symmetric: bool) -> dict:
    """Grid, histogram and errors of the Learn page's quantizer."""
    return _quantizer(sel.key, sel.data, layer, source, bits, ratio, symmetric)


@st.cache_data(max_entries=64, show_spinner=False)
def _curve(key: tuple[str, str, str], data: str, layer: str, source: str, bits: int, symmetric: bool) -> dict:
    return analysis.clip_curve(_values(key, data, layer, source), bits, symmetric)


def clip_curve(sel: Selection, layer: str, source: str, bits: int, symmetric: bool) -> dict[str, Any]:
    """MSE against the clipping ratio, with the optimum."""
    return _curve(sel.key, sel.data, layer, source, bits, symmetric)


# -- methods and runs ----------------------------------------------------------------------


def method_classes() -> dict[str, type[MethodConfig]]:
    """Registered methods: name -> config class (new methods appear here when they register)."""
    return {name: cls for name, (cls, _fn) in METHODS.items()}


@st.cache_resource(show_spinner=False)
def _store(path: str) -> RunStore:
    return RunStore(path)


def store() -> RunStore:
    """The run store at `$PTQ_EXPLORER_HOME` (or the user data folder)."""
    return _store(str(default_store_path()))


def list_runs(status: str | None = None, model: str | None = None, method: str | None = None,
              limit: int | None = None, owner: str | None = None) -> list[RunRecord]:  # fmt: skip
    """Saved runs, newest first (only `owner`'s when given)."""
    return store().list(status, model, method, limit, owner)


def delete_any() -> bool:
    """Whether every user may delete every run (env `PTQ_DELETE_ANY_RUN=1`, a trusting team)."""
    return os.environ.get("PTQ_DELETE_ANY_RUN", "").strip().lower() in ("1", "true", "yes")


def list_sweeps() -> list[dict[str, Any]]:
    """The sweeps in the store, newest first: name, runs, done, failed."""
    return store().sweeps()


def sweep_view(name: str) -> tuple[list[RunRecord], list[dict[str, Any]]]:
    """A sweep's newest run per cell, and its cells grouped over seeds (top-1 mean ± std).

    Each group row has a `series`: its cell key without the seed and the weight bits (the
    method, when the method is an axis), so the rows draw as one line per series.
    """
    records = sweep_records(store(), name)
    rows = sweep_summary(records)
    for row in rows:
        rest = " ".join(t.removeprefix("method=") for t in row["group"].split() if not t.startswith("wbits="))
        row["series"] = rest or row["method"]
    return records, rows


def get_run(run_id: str) -> RunRecord:
    """One saved run (ConfigError when it is gone)."""
    return store().get(run_id)


def delete_runs(run_ids: list[str], owner: str) -> int:
    """Delete those of the runs that belong to `owner` (any run under `delete_any`); returns how many went."""
    return store().delete(run_ids, None if delete_any() else owner)


def export_runs(run_ids: list[str] | None, fmt: str) -> str:
    """CSV or JSON text of the runs (all when None)."""
    return store().export_csv(run_ids) if fmt == "csv" else store().export_json(run_ids)


def default_eval_limit() -> int | None:
    """Test images per run: env `PTQ_UI_EVAL_LIMIT` (tests), else None (the whole test split)."""
    value = os.environ.get("PTQ_UI_EVAL_LIMIT", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def start_quantization(sel: Selection, spec: RunSpec, owner: str) -> Job:
    """Queue `spec` for a worker thread over the already loaded model and data; the job is kept in the session.

    The job waits in the server's queue (`jobs.job_queue`) for a free slot; the run is stored as `owner`'s.
    """
    run_store = store()
    resources = _resources(sel)

    def work(progress) -> dict[str, Any]:
        record, _qres = run_quantization(spec, run_store, progress, resources, owner=owner)
        return {"run_id": record.run_id, "top1": record.metrics["top1"]}  # no tensors kept

    job = start_job(work, spec.title(), queue=job_queue())
    st.session_state["job"] = job
    return job


def start_export(run_id: str) -> Job:
    """Rebuild a saved run and write its three export files on a worker thread (kept as "export_job").

    The job's result: ``{"run_id", "files": {format: path}, "reports": [...], "encodings": rows}``.
    """
    from ptq_core.export import encodings
    from ptq_core.rebuild import rebuild_run
    from ptq_core.run_export import FORMATS, SUFFIX, write_artifact

    record = store().get(run_id)
    folder = session_dir() / "exports"  # removed with the session, like uploads
    folder.mkdir(parents=True, exist_ok=True)

    def work(progress) -> dict[str, Any]:
        rebuilt = rebuild_run(record, progress)
        reports = [write_artifact(rebuilt, fmt, folder / f"{run_id}{SUFFIX[fmt]}") for fmt in FORMATS]
        rows = [_encoding_row(e) for e in encodings(rebuilt.quantized.model)]
        return {"run_id": run_id, "files": {r.format: r.path for r in reports},
                "reports": [r.to_dict() for r in reports], "encodings": rows}  # fmt: skip

    job = start_job(work, f"export of run {run_id}", queue=job_queue())
    st.session_state["export_job"] = job
    return job


def _encoding_row(e: dict[str, Any]) -> dict[str, Any]:
    """One table row of a layer's encoding: bits, grid bounds and the range of its scales."""
    w, a = e.get("weight") or {}, e.get("activation") or {}
    ws = np.asarray(w.get("scale", []), dtype=float).ravel()
    one = lambda v: v[0] if isinstance(v, list) and len(v) == 1 else v  # noqa: E731
    return {"layer": e["name"], "W bits": e.get("wbits"), "A bits": e.get("abits"),
            "W grid": f"[{w.get('quant_min')}, {w.get('quant_max')}]" if w else "float",
            "W scale min": float(ws.min()) if ws.size else None, "W scale max": float(ws.max()) if ws.size else None,
            "A grid": f"[{a.get('quant_min')}, {a.get('quant_max')}]" if a else "float",
            "A scale": one(a.get("scale")) if a else None, "A zero point": one(a.get("zero_point")) if a else None}


def read_file(path: str) -> bytes:
    """The bytes of a file this app wrote (for a download button)."""
    return Path(path).read_bytes()


def rerun(spec_dict: dict[str, Any], owner: str) -> Job:
    """Queue a stored run's description again (e.g. one that was interrupted), as `owner`'s run."""
    if not spec_dict:
        raise ConfigError("this run was stored before runs kept their description: it cannot be re-run exactly")
    spec = RunSpec.from_dict(spec_dict)
    sel = Selection(spec.model, spec.weights, spec.data, spec.device)
    if spec.weights and not Path(spec.weights).is_file():
        raise CheckpointError("the weights this run used were an upload of a session that has ended; upload "
                              "them again and start the run from the Quantize page")  # fmt: skip
    loaded_info(sel)  # refused like a choice on Model & data
    return start_quantization(sel, spec, owner)


def queue_counts() -> dict[str, int]:
    """Jobs running and waiting in the whole server, and how many may run at once."""
    q = job_queue()
    running, waiting = q.counts()
    return {"running": running, "waiting": waiting, "slots": q.slots, "threads": q.threads or 0}


def start_report(run_id: str) -> Job:
    """Rebuild a stored run from its description and render its HTML report on a worker thread.

    The job (kept in the session as "report_job") returns ``{"run_id", "html", "reproduced",
    "rebuilt_top1", "stored_top1"}``.
    """
    from ptq_core.report import build_report, render_html

    record = store().get(run_id)

    def work(progress) -> dict[str, Any]:
        data = build_report(record, progress)
        return {"run_id": run_id, "html": render_html(data), "reproduced": data["reproduced"],
                "rebuilt_top1": data["rebuilt_top1"], "stored_top1": data["stored_top1"]}  # fmt: skip

    job = start_job(work, f"report of run {run_id}", queue=job_queue())
    st.session_state["report_job"] = job
    return job


# -- uploads -------------------------------------------------------------------------------


def uploads_root() -> Path:
    """Where sessions keep their uploads: `uploads/` beside the run store."""
    return default_store_path().parent / "uploads"


def _release_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


@st.cache_resource(scope="session", on_release=_release_dir, show_spinner=False)
def _session_dir(sid: str) -> Path:
    path = uploads_root() / sid
    path.mkdir(parents=True, exist_ok=True)
    return path


def session_dir() -> Path:
    """This session's upload folder; removed when the session ends."""
    return _session_dir(session_id())


def redact(text: str) -> str:
    """`text` with the upload folder's server path replaced by ``uploads/`` (paths are not shown)."""
    return re.sub(re.escape(str(uploads_root())) + r"/[0-9a-f]+/", "uploads/", text)


def redact_json(obj: Any) -> Any:
    """A JSON-able value with upload paths redacted (see `redact`)."""
    return json.loads(redact(json.dumps(obj)))


def model_label(name: str) -> str:
    """How a model name is shown: an uploaded file as ``uploaded net.py:build``, never its server path."""
    if is_factory(name) and str(uploads_root()) in name:
        file, _, attr = name.rpartition(":")
        return f"uploaded {Path(file).name.split('-', 1)[-1]}:{attr}"
    return redact(name)


def _safe_name(filename: str) -> str:
    return re.sub(r"[^\w.-]", "_", Path(filename).name)[:60] or "upload"


def save_code_upload(data: bytes, filename: str) -> str:
    """Keep an uploaded model file (.py) in this session's folder; returns its path. Nothing runs here.

    Raises:
        ConfigError: Uploaded code is off on this server, the file is too large, not UTF-8 or not Python.
    """
    if not uploaded_code_allowed():
        raise ConfigError("uploading model code is off on this server (the operator turns it on with "
                          "PTQ_ALLOW_UPLOADED_CODE=1)")  # fmt: skip
    if len(data) > MAX_CODE_KB * 1024:
        raise ConfigError(f"{filename} is {len(data) // 1024} KB; a model file may have {MAX_CODE_KB} KB")
    try:
        compile(data.decode("utf-8"), filename, "exec")  # syntax only; nothing is executed
    except (UnicodeDecodeError, SyntaxError, ValueError) as exc:
        raise ConfigError(f"{filename} is not a Python file ({type(exc).__name__}: {exc})") from None
    stem = _safe_name(filename).removesuffix(".py")
    path = session_dir() / f"{hashlib.sha256(data).hexdigest()[:12]}-{stem}.py"
    path.write_bytes(data)
    return str(path)


def save_upload(data: bytes, filename: str) -> str:
    """Check an uploaded state_dict safely and keep it as a .safetensors file in this session's folder.

    Returns its path. Whether it fits an architecture is checked by `check_weights`.

    Raises:
        CheckpointError / UnsafeCheckpointError / NonFiniteError with the reason.
    """
    if len(data) > MAX_UPLOAD_MB * 2**20:
        raise CheckpointError(f"{filename} is {len(data) / 2**20:.0f} MB; the limit is {MAX_UPLOAD_MB} MB")
    state_dict = load_state_dict(data, name=filename)  # safetensors or weights_only torch.load; never code
    check_finite(state_dict)
    path = session_dir() / f"{hashlib.sha256(data).hexdigest()[:20]}.safetensors"
    if not path.is_file():
        save_state_dict(state_dict, path)
    return str(path)


def check_weights(model: str, path: str, device: str) -> None:
    """Load `model` with the weights at `path` (cached for the run); raise PTQError when they do not fit."""
    check_factory_allowed(model, [session_dir()])
    _model(model, path, device)

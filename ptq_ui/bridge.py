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
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
import torch

from ptq_core.checkpoints import check_finite, load_state_dict, save_state_dict
from ptq_core.data import DataBundle, load_data
from ptq_core.errors import CheckpointError, PTQError
from ptq_core.methods import METHODS, MethodConfig
from ptq_core.models import LoadedModel, list_models, load_model, resolve_device
from ptq_core.pipeline import run_quantization
from ptq_core.prepare import QuantSpec
from ptq_core.qscheme import FLOAT_BITS, MAX_BITS, MIN_BITS
from ptq_core.spec import RunSpec
from ptq_core.store import RunRecord, RunStore, default_store_path
from ptq_core.sweep import sweep_records, sweep_summary

from . import analysis
from .jobs import Job, start_job
from .state import Selection

__all__ = ["PTQError", "BITS", "FLOAT_BITS", "MAX_UPLOAD_MB", "cuda_available", "device_label",
           "model_entries", "loaded_info", "architecture", "float_accuracy", "quantizable_layers", "layer_values",
           "quantizer_view", "clip_curve", "method_classes", "store", "list_runs", "get_run", "delete_runs",
           "list_sweeps", "sweep_view", "export_runs", "start_quantization", "save_upload",
           "default_eval_limit"]  # fmt: skip

BITS = [*range(MIN_BITS, MAX_BITS + 1), FLOAT_BITS]  # 32 = keep float
MAX_UPLOAD_MB = 150
_UPLOAD_DIR = Path(tempfile.gettempdir()) / "ptq-explorer-uploads"


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
    """The shared float model and data bundle of a selection (raise PTQError when unavailable)."""
    loaded = _model(*sel.key)
    folder = not sel.data.startswith("fmnist-")
    return loaded, _bundle(sel.data, "|".join(sel.key) if folder else "", loaded if folder else None)


def loaded_info(sel: Selection) -> dict[str, Any]:
    """Load the selection and describe it: model entry, card, data sizes."""
    loaded, bundle = _resources(sel)
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
              limit: int | None = None) -> list[RunRecord]:  # fmt: skip
    """Saved runs, newest first."""
    return store().list(status, model, method, limit)


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


def delete_runs(run_ids: list[str]) -> int:
    """Delete runs; returns how many were removed."""
    return store().delete(run_ids)


def export_runs(run_ids: list[str] | None, fmt: str) -> str:
    """CSV or JSON text of the runs (all when None)."""
    return store().export_csv(run_ids) if fmt == "csv" else store().export_json(run_ids)


def default_eval_limit() -> int | None:
    """Test images per run: env `PTQ_UI_EVAL_LIMIT` (tests), else None (the whole test split)."""
    value = os.environ.get("PTQ_UI_EVAL_LIMIT", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def start_quantization(sel: Selection, spec: RunSpec) -> Job:
    """Run `spec` on a worker thread over the already loaded model and data; the job is kept in the session."""
    run_store = store()
    resources = _resources(sel)

    def work(progress) -> dict[str, Any]:
        record, _qres = run_quantization(spec, run_store, progress, resources)
        return {"run_id": record.run_id, "top1": record.metrics["top1"]}  # no tensors kept

    job = start_job(work, spec.title())
    st.session_state["job"] = job
    return job


# -- uploads -------------------------------------------------------------------------------


def save_upload(data: bytes, filename: str) -> str:
    """Check an uploaded state_dict safely and keep it as a .safetensors file; returns its path.

    Raises:
        CheckpointError / UnsafeCheckpointError / NonFiniteError with the reason.
    """
    if len(data) > MAX_UPLOAD_MB * 2**20:
        raise CheckpointError(f"{filename} is {len(data) / 2**20:.0f} MB; the limit is {MAX_UPLOAD_MB} MB")
    state_dict = load_state_dict(data, name=filename)  # safetensors or weights_only torch.load; never code
    check_finite(state_dict)
    _UPLOAD_DIR.mkdir(parents=True, exist_ok=True)
    path = _UPLOAD_DIR / f"{hashlib.sha256(data).hexdigest()[:20]}.safetensors"
    if not path.is_file():
        save_state_dict(state_dict, path)
    return str(path)

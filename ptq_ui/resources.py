"""The app's shared, never-changed objects: the only `st.cache_resource` calls.

Loaded models and data bundles (keyed by name, weights file and device, shared between
sessions, only read: runs quantize their own copy), the round-to-nearest model the
Diagnose pages look at, the run store, and each session's upload folder (removed when
the session ends). Everything else is cached with `st.cache_data` in `services/`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import streamlit as st

from ptq_core.analysis.sensitivity import rtn_model
from ptq_core.data import DataBundle, load_data
from ptq_core.explain import calibration_images, default_threads, set_threads
from ptq_core.methods import QuantResult
from ptq_core.models import LoadedModel, load_model, resolve_device
from ptq_core.prepare import QuantSpec
from ptq_core.serving import check_factory_allowed
from ptq_core.store import RunStore, default_store_path

from .state import Selection, session_id

__all__ = ["Key", "model", "resources", "loaded", "rtn", "store", "uploads_root", "session_dir"]

Key = tuple[str, str, str]  # (model, weights file or "", device): `Selection.key`

set_threads(default_threads())  # keep torch modest on small hosts: `PTQ_UI_THREADS`, default half the cores


@st.cache_resource(max_entries=3, show_spinner="Loading the model…")
def model(name: str, weights: str, device: str) -> LoadedModel:
    """The float model `name` with `weights` (a file path, or "" for its own) on `device`."""
    return load_model(name, weights or None, resolve_device(device))


@st.cache_resource(max_entries=3, show_spinner="Loading the data…")
def _bundle(data: str, transform_key: str, _loaded: LoadedModel | None) -> DataBundle:
    return load_data(data, _loaded.transform if _loaded is not None else None)


def resources(sel: Selection) -> tuple[LoadedModel, DataBundle]:
    """The shared float model and data bundle of a selection (raise PTQError when unavailable).

    A `file.py:factory` model is refused unless the operator allowed it (`ptq_core.serving`).
    """
    check_factory_allowed(sel.model, [session_dir()])
    loaded_model = model(*sel.key)
    if not sel.data.startswith("fmnist-"):
        transform_key = "|".join(sel.key)  # an image folder goes through the model's own transform
    elif loaded_model.transform is not None:
        transform_key = repr(loaded_model.transform)  # Fashion-MNIST resized for the model (e.g. 3x64x64)
    else:
        transform_key = ""  # Fashion-MNIST as it is: one bundle for every 28x28 model
    return loaded_model, _bundle(sel.data, transform_key, loaded_model if transform_key else None)


def loaded(key: Key, data: str) -> tuple[Any, DataBundle]:
    """(float `nn.Module`, data bundle) for a cache key: what the `st.cache_data` doors start from."""
    loaded_model, bundle = resources(Selection(*key[:2], data, key[2]))
    return loaded_model.model, bundle


@st.cache_resource(max_entries=4, show_spinner="Quantizing a copy with round-to-nearest…")
def rtn(key: Key, data: str, spec: str, calib: int, seed: int) -> QuantResult:
    """Shared RTN model under `spec` (JSON) on `calib` seeded images; never changed (analyses copy it)."""
    net, bundle = loaded(key, data)
    return rtn_model(net, calibration_images(net, bundle, calib, seed), QuantSpec.from_dict(json.loads(spec)))


@st.cache_resource(show_spinner=False)
def _store(path: str) -> RunStore:
    return RunStore(path)


def store() -> RunStore:
    """The run store at `$PTQ_EXPLORER_HOME` (or the user data folder)."""
    return _store(str(default_store_path()))


def uploads_root() -> Path:
    """Where sessions keep their uploads: `uploads/` beside the run store."""
    return default_store_path().parent / "uploads"


def release_dir(path: Path) -> None:
    """Remove a session's folder (when its session ends)."""
    shutil.rmtree(path, ignore_errors=True)


@st.cache_resource(scope="session", on_release=release_dir, show_spinner=False)
def _session_dir(sid: str) -> Path:
    path = uploads_root() / sid
    path.mkdir(parents=True, exist_ok=True)
    return path


def session_dir() -> Path:
    """This session's upload folder; removed when the session ends."""
    return _session_dir(session_id())

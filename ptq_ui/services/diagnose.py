"""Cached doors from the Diagnose pages (outlier channels, clusters, sensitivity) into `ptq_core.analysis`.

The shared float model and data come from `ptq_ui.resources` and are only read. The
round-to-nearest model an analysis looks at is built once per (model, settings,
calibration) and shared through `resources.rtn`;
every analysis works on its own copy of it (the core functions copy before switching
quantizers), so sessions never see each other's state. Results are small plain data
(lists, numpy arrays) cached with `st.cache_data` under plain keys. The full accuracy
sweep runs as a background job (`jobs.start_job`).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import streamlit as st

from ptq_core import explain
from ptq_core.analysis import clusters, culprits, diagnosis, mixed_precision, outliers, ranges, sensitivity
from ptq_core.data import make_loader
from ptq_core.distributed import RayOptions
from ptq_core.errors import ConfigError
from ptq_core.methods import ProgressEvent, emit
from ptq_core.prepare import QuantSpec

from ..jobs import Job, start_job
from ..resources import Key, loaded, rtn
from ..state import Selection
from . import explore, runs

__all__ = [
    "LOGITS",
    "MAX_POINTS",
    "PROJECTIONS",
    "OUTCOMES",
    "FIXES",
    "spec_json",
    "layer_ranges",
    "error_split",
    "outlier_layers",
    "channel_sample_map",
    "cluster_view",
    "umap_key",
    "start_umap",
    "sensitivity_proxy",
    "start_sensitivity_sweep",
    "weight_act_split",
    "diagnose",
    "allocate",
    "overrides_text",
    "measure_allocation",
    "live_layer_errors",
    "STATS_IMAGES",
    "start_culprits",
    "evidence_page",
    "parse_settings",
    "policy_kept",
    "ray_address",
]

LOGITS = clusters.LOGITS
MAX_POINTS = clusters.MAX_POINTS
PROJECTIONS = clusters.PROJECTIONS
OUTCOMES = clusters.OUTCOMES
FIXES = diagnosis.FIXES
STATS_IMAGES = 128  # calibration images of the input-channel statistics: the Outlier channels page's default
# the page (and its session keys) that shows each cause's statistic for one layer
_EVIDENCE = {
    "outlier channels (activations)": ("pages/outlier_channels.py", "Outlier channels"),
    "outlier channels (weights)": ("pages/outlier_channels.py", "Outlier channels"),
    "dead or near-constant channels": ("pages/outlier_channels.py", "Outlier channels"),
}


def spec_json(spec: QuantSpec) -> str:
    """A plain, hashable cache key for a QuantSpec."""
    return json.dumps(spec.to_dict(), sort_keys=True)


def _calib(key: Key, data: str, n: int, seed: int) -> Any:
    return explain.calibration_images(*loaded(key, data), n, seed)


def _test_batch(key: Key, data: str, n: int) -> tuple[Any, np.ndarray]:
    return explain.test_batch(*loaded(key, data), n)


# -- outlier channels ----------------------------------------------------------------------


@st.cache_data(max_entries=32, show_spinner="Measuring channel ranges…")
def _ranges(key: Key, data: str, layer: str, n: int, seed: int) -> dict[str, Any]:
    model, _ = loaded(key, data)
    return ranges.layer_ranges(model, _calib(key, data, n, seed), layer)


def layer_ranges(sel: Selection, layer: str, n_images: int, seed: int = 0) -> dict[str, Any]:
    """Per-channel weight and input-activation statistics of `layer` on `n_images` calibration images."""
    return _ranges(sel.key, sel.data, layer, n_images, seed)


@st.cache_data(max_entries=64, show_spinner="Splitting the error…")
def _split(
    key: Key,
    data: str,
    layer: str,
    source: str,
    bits: int,
    per_channel: bool,
    ratio: float,
    symmetric: bool,
    n: int,
    seed: int,
) -> dict[str, Any]:
    model, _ = loaded(key, data)
    images = _calib(key, data, n, seed) if source == "activations" else None
    rows = ranges.layer_rows(model, images, layer, source)
    out = ranges.channel_error_split(rows, bits, per_channel, ratio, symmetric)
    return {k: np.asarray(v).tolist() for k, v in out.items()}


def error_split(
    sel: Selection,
    layer: str,
    source: str,
    bits: int,
    per_channel: bool,
    ratio: float,
    symmetric: bool,
    n_images: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Clipping vs rounding MSE per channel of `layer`'s weights or inputs under one grid."""
    return _split(sel.key, sel.data, layer, source, bits, per_channel, ratio, symmetric, n_images, seed)


@st.cache_data(max_entries=16, show_spinner=False)
def _outlier_layers(key: Key, data: str) -> list[str]:
    return outliers.default_outlier_layers(loaded(key, data)[0])


def outlier_layers(sel: Selection) -> list[str]:
    """Modules offered for the channel x sample map: re-parameterisable blocks, else every conv/linear."""
    return _outlier_layers(sel.key, sel.data)


@st.cache_data(max_entries=16, show_spinner="Collecting per-sample channel maxima…")
def _channel_sample(key: Key, data: str, layer: str, n: int, seed: int) -> dict[str, Any]:
    return explain.channel_sample_map(loaded(key, data)[0], _calib(key, data, n, seed), layer)


def channel_sample_map(sel: Selection, layer: str, n_images: int, seed: int = 0) -> dict[str, Any]:
    """RepAPQ's channel x sample map of max |output| of `layer` (merged model), with outlier scores."""
    return _channel_sample(sel.key, sel.data, layer, n_images, seed)


# -- activation clusters -------------------------------------------------------------------


@st.cache_data(max_entries=16, show_spinner="Embedding float and quantized activations…")
def _clusters(
    key: Key, data: str, spec: str, calib: int, seed: int, layer: str, method: str, k: int, n: int
) -> dict[str, Any]:
    q = rtn(key, data, spec, calib, seed)
    images, labels = _test_batch(key, data, n)
    return clusters.cluster_view(q.model, images, labels, layer, method, k, seed)


def cluster_view(
    sel: Selection, spec: QuantSpec, layer: str, method: str, k: int, n_images: int, calib: int = 256, seed: int = 0
) -> dict[str, Any]:
    """2-D float and quantized coordinates of `layer`'s outputs on the first `n_images` test images."""
    if not 3 <= n_images <= MAX_POINTS:
        raise ConfigError(f"choose between 3 and {MAX_POINTS} images")
    return _clusters(sel.key, sel.data, spec_json(spec), calib, seed, layer, method, k, n_images)


def umap_key(
    sel: Selection, spec: QuantSpec, layer: str, k: int, n_images: int, calib: int = 256, seed: int = 0
) -> str:
    """Identity of one UMAP view (to find a finished background result again)."""
    return json.dumps([*sel.key, sel.data, spec_json(spec), layer, k, n_images, calib, seed])


def start_umap(
    sel: Selection, spec: QuantSpec, layer: str, k: int, n_images: int, calib: int = 256, seed: int = 0
) -> Job:
    """Compute a UMAP view on a worker thread (numba compiles on first use); kept in the session as "umap_job".

    The job's result is ``{"key": umap_key(...), "view": cluster_view dict}``.
    """
    if not 3 <= n_images <= MAX_POINTS // 2:
        raise ConfigError(f"UMAP takes at most {MAX_POINTS} points: choose between 3 and {MAX_POINTS // 2} images")
    q = rtn(sel.key, sel.data, spec_json(spec), calib, seed)
    images, labels = _test_batch(sel.key, sel.data, n_images)
    key = umap_key(sel, spec, layer, k, n_images, calib, seed)

    def work(progress) -> dict[str, Any]:
        emit(progress, ProgressEvent("UMAP", 0, 1, message="embedding (the first UMAP in a process compiles)"))
        view = clusters.cluster_view(q.model, images, labels, layer, "umap", k, seed)
        emit(progress, ProgressEvent("UMAP", 1, 1, message="done"))
        return {"key": key, "view": view}

    job = start_job(work, f"UMAP of {layer} ({n_images} images)")
    st.session_state["umap_job"] = job
    return job


# -- sensitivity, split, diagnosis, mixed precision ----------------------------------------


@st.cache_data(max_entries=16, show_spinner="Sweeping one layer at a time (logit SQNR proxy)…")
def _proxy(
    key: Key, data: str, spec: str, settings: tuple[tuple[int, int], ...], view: str, calib: int, probe: int, seed: int
) -> list[dict[str, Any]]:
    model, _ = loaded(key, data)
    images = _calib(key, data, calib, seed)
    probe_x, _ = _test_batch(key, data, probe)
    return sensitivity.sensitivity_proxy(
        model, images, probe_x, QuantSpec.from_dict(json.loads(spec)), settings=list(settings), view=view
    )


def _pairs(bits: list[int], settings: list[tuple[int, int]] | None) -> tuple[tuple[int, int], ...]:
    pairs = [(b, b) for b in sorted(bits)] + list(settings or [])
    if not pairs:
        raise ConfigError("choose at least one bit-width")
    return tuple(dict.fromkeys(pairs))


def sensitivity_proxy(
    sel: Selection,
    spec: QuantSpec,
    bits: list[int],
    calib: int = 64,
    probe: int = 32,
    seed: int = 0,
    settings: list[tuple[int, int]] | None = None,
    view: str = "only",
) -> list[dict[str, Any]]:
    """Logit SQNR with one layer at a time quantized (or left out: view "all but") at each setting (cached).

    `bits` are uniform settings (W b / A b); `settings` add (weight bits, activation bits) pairs.
    """
    return _proxy(sel.key, sel.data, spec_json(spec), _pairs(bits, settings), view, calib, probe, seed)


def parse_settings(text: str) -> list[tuple[int, int]]:
    """``W4A8, W2A4, A4`` as (weight bits, activation bits) pairs."""
    return sensitivity.parse_settings(text)


def ray_address() -> str | None:
    """The Ray cluster the app sends its Ray work to (`$PTQ_RAY_ADDRESS`), or None: Ray on this machine."""
    return os.environ.get("PTQ_RAY_ADDRESS", "").strip() or None


def start_sensitivity_sweep(
    sel: Selection,
    spec: QuantSpec,
    bits: list[int],
    eval_limit: int | None,
    calib: int = 64,
    seed: int = 0,
    settings: list[tuple[int, int]] | None = None,
    view: str = "only",
    ray_workers: int | None = None,
) -> Job:
    """Start the full accuracy sweep on a worker thread; the job is kept in the session under "sens_job".

    With `ray_workers`, the evaluations run as that many Ray tasks at once, on this machine or on
    the cluster at `ray_address()` (uniform bit-widths and the one-layer view).
    """
    pairs = _pairs(bits, settings)
    model, bundle = loaded(sel.key, sel.data)
    images = _calib(sel.key, sel.data, calib, seed)
    loader = make_loader(bundle.test, limit=eval_limit)

    def work(progress) -> dict[str, Any]:
        ray = None if ray_workers is None else RayOptions(address=ray_address(), workers=ray_workers)
        rows = sensitivity.sensitivity_accuracy(
            model, images, loader, spec, settings=list(pairs), view=view, progress=progress, ray=ray
        )
        return {"rows": rows, "spec": spec_json(spec), "eval_limit": eval_limit, "model": sel.model, "view": view}

    label = ", ".join(sensitivity.setting_label(p) for p in pairs)
    job = start_job(work, f"accuracy sweep ({view}) {label} on {sel.model}")
    st.session_state["sens_job"] = job
    return job


@st.cache_data(max_entries=16, show_spinner="Evaluating weight-only and activation-only quantization…")
def _split_acc(key: Key, data: str, spec: str, calib: int, seed: int, limit: int | None) -> dict[str, Any]:
    model, bundle = loaded(key, data)
    return sensitivity.weight_act_split(
        model,
        _calib(key, data, calib, seed),
        make_loader(bundle.test, limit=limit),
        QuantSpec.from_dict(json.loads(spec)),
    )


def weight_act_split(
    sel: Selection, spec: QuantSpec, eval_limit: int | None, calib: int = 256, seed: int = 0
) -> dict[str, Any]:
    """Top-1/top-5 of float, weights only, activations only and both (RTN under `spec`)."""
    return _split_acc(sel.key, sel.data, spec_json(spec), calib, seed, eval_limit)


@st.cache_data(max_entries=32, show_spinner="Diagnosing every layer…")
def _diagnose(
    key: Key, data: str, spec: str, calib: int, seed: int, probe: int, thresholds: tuple, reconstruction: str
) -> dict:
    q = rtn(key, data, spec, calib, seed)
    model, _ = loaded(key, data)
    images, _ = _test_batch(key, data, probe)
    stats_images = _calib(key, data, STATS_IMAGES, seed)  # what the Outlier channels page measures by default
    return diagnosis.diagnose(
        q.model,
        q.report,
        model,
        images,
        diagnosis.DiagnosisConfig(*thresholds),
        stats_images,
        json.loads(reconstruction),
        key[0],
    )


def _reconstruction(sel: Selection, spec: QuantSpec) -> dict[str, Any] | None:
    records = runs.list_runs(status="done", model=sel.model)
    return diagnosis.reconstruction_measurement(records, sel.model, spec.wbits, spec.abits, sel.data)


def diagnose(
    sel: Selection,
    spec: QuantSpec,
    sqnr_db: float,
    z: float,
    residual_ratio: float,
    negative_share: float,
    calib: int = 256,
    probe: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    """Findings (layer, cause, evidence, fix action) of the RTN model under `spec`, and the floor verdict."""
    diagnosis.DiagnosisConfig(sqnr_db, z, residual_ratio, negative_share)  # validate before caching
    rec = json.dumps(_reconstruction(sel, spec))
    return _diagnose(
        sel.key, sel.data, spec_json(spec), calib, seed, probe, (sqnr_db, z, residual_ratio, negative_share), rec
    )


def policy_kept(sel: Selection, spec: QuantSpec) -> list[str]:
    """Layers the first/last policy keeps at 8 bits or more under `spec` (never culprits)."""
    rows = explore.architecture(sel, spec)["rows"]
    out = []
    for r in rows:
        if r.get("role") and r.get("bits"):
            w, a = (int(b[1:]) for b in r["bits"].split("/"))
            if min(w, a) >= culprits.REPAIR_BITS:
                out.append(r["layer"])
    return out


def evidence_page(cause: str, layer: str, source: str | None = None) -> tuple[str, str, dict[str, Any]]:
    """(page file, page title, session values that preselect `layer` there) of the page that shows `cause`."""
    if cause in _EVIDENCE:
        page, title = _EVIDENCE[cause]
        return page, title, {"oc_layer": layer, "oc_images": STATS_IMAGES}
    return (
        "pages/learn_quantizer.py",
        "Learn: the quantizer",
        {"learn_layer": layer, "learn_source": source or "activations"},
    )


def start_culprits(
    sel: Selection,
    spec: QuantSpec,
    eval_limit: int | None,
    target_share: float = 0.5,
    max_set: int = 5,
    calib: int = 256,
    seed: int = 0,
) -> Job:
    """Measure every repair to 8 bits and the greedy set on a worker thread; kept in the session as "culprit_job"."""
    config = culprits.CulpritConfig(target_share=target_share, max_set=max_set)
    model, bundle = loaded(sel.key, sel.data)
    images = _calib(sel.key, sel.data, calib, seed)
    loader = make_loader(bundle.test, limit=eval_limit)

    def work(progress) -> dict[str, Any]:
        res = culprits.measured_culprits(model, images, loader, spec, config, progress=progress)
        return {**res, "spec": spec_json(spec), "model": sel.model, "eval_limit": eval_limit}

    job = start_job(work, f"measured culprits of {sel.model} ({spec.wbits}/{spec.abits} bits)")
    st.session_state["culprit_job"] = job
    return job


def allocate(rows: list[dict[str, Any]], budget: float) -> dict[str, Any]:
    """Mixed-precision bits under an average-bits budget (see `mixed_precision.allocate`)."""
    return mixed_precision.allocate(rows, budget).to_dict()


def overrides_text(bits: dict[str, int]) -> str:
    """The allocation as override lines for the Quantize page (`layer=W/A`)."""
    return "\n".join(f"{name}={b}/{b}" for name, b in bits.items())


@st.cache_data(max_entries=16, show_spinner="Quantizing with the chosen bits and evaluating…")
def _measure(key: Key, data: str, spec: str, bits_json: str, calib: int, seed: int, limit: int | None) -> dict:
    model, bundle = loaded(key, data)
    images, base = _calib(key, data, calib, seed), QuantSpec.from_dict(json.loads(spec))
    return explain.measure_allocation(model, bundle, images, base, json.loads(bits_json), limit)


def measure_allocation(
    sel: Selection, spec: QuantSpec, bits: dict[str, int], eval_limit: int | None, calib: int = 256, seed: int = 0
) -> dict[str, Any]:
    """Measured top-1 of RTN with the allocation's bits (and of the float model) on the test images."""
    return _measure(sel.key, sel.data, spec_json(spec), json.dumps(bits, sort_keys=True), calib, seed, eval_limit)


@st.cache_data(max_entries=32, show_spinner="Measuring per-layer errors…")
def _live(key: Key, data: str, spec: str, calib: int, seed: int, n: int) -> dict[str, list[dict[str, Any]]]:
    return explain.live_layer_errors(rtn(key, data, spec, calib, seed).model, _test_batch(key, data, n)[0])


def live_layer_errors(
    sel: Selection, spec: QuantSpec, calib: int = 256, n_images: int = 64, seed: int = 0
) -> dict[str, list[dict[str, Any]]]:
    """Per-layer errors (alone and accumulated) of RTN under `spec`, not saved as a run."""
    return _live(sel.key, sel.data, spec_json(spec), calib, seed, n_images)

"""Doors into the run store and the model list: runs, sweeps, background quantization, export and report jobs.

Pages call these and never import torch; jobs keep only plain results (run ids, numbers,
file paths), never tensors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from ptq_core.data import DataBundle
from ptq_core.errors import CheckpointError, ConfigError, DataError, PTQError
from ptq_core.explain import cuda_available
from ptq_core.methods import METHODS, MethodConfig
from ptq_core.models import LoadedModel, check_model_data, list_models, resolve_device
from ptq_core.pipeline import run_quantization
from ptq_core.qscheme import FLOAT_BITS, MAX_BITS, MIN_BITS
from ptq_core.spec import RunSpec
from ptq_core.store import RunRecord
from ptq_core.sweep import sweep_records, sweep_summary

from ..jobs import Job, job_queue, start_job
from ..resources import resources, session_dir, store
from ..state import Selection

__all__ = [
    "PTQError",
    "BITS",
    "FLOAT_BITS",
    "cuda_available",
    "device_label",
    "model_entries",
    "loaded_info",
    "method_classes",
    "store",
    "list_runs",
    "get_run",
    "delete_runs",
    "export_runs",
    "start_quantization",
    "default_eval_limit",
    "delete_any",
    "queue_counts",
    "rerun",
    "start_export",
    "start_report",
    "read_file",
    "list_sweeps",
    "sweep_view",
    "describe_run",
]

BITS = [*range(MIN_BITS, MAX_BITS + 1), FLOAT_BITS]  # 32 = keep float


# -- devices and model list ----------------------------------------------------------------


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
    return [
        {"name": e.name, "source": e.source, "status": e.status, "detail": e.detail, "data": e.data, "card": e.card}
        for e in list_models()
    ]


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
    loaded, bundle = resources(sel)
    problem = _pair_problem(sel.key, sel.data, loaded, bundle)
    if problem:
        raise DataError(problem)
    e = loaded.entry
    return {
        "name": e.name,
        "source": e.source,
        "status": e.status,
        "detail": e.detail,
        "card": dict(e.card),
        "data": bundle.describe(),
        "classes": list(bundle.classes),
    }


# -- methods and runs ----------------------------------------------------------------------


def method_classes() -> dict[str, type[MethodConfig]]:
    """Registered methods: name -> config class (new methods appear here when they register)."""
    return {name: cls for name, (cls, _fn) in METHODS.items()}


def list_runs(
    status: str | None = None,
    model: str | None = None,
    method: str | None = None,
    limit: int | None = None,
    owner: str | None = None,
) -> list[RunRecord]:
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
    shared = resources(sel)

    def work(progress) -> dict[str, Any]:
        record, _qres = run_quantization(spec, run_store, progress, shared, owner=owner)
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
        return {
            "run_id": run_id,
            "files": {r.format: r.path for r in reports},
            "reports": [r.to_dict() for r in reports],
            "encodings": rows,
        }

    job = start_job(work, f"export of run {run_id}", queue=job_queue())
    st.session_state["export_job"] = job
    return job


def _encoding_row(e: dict[str, Any]) -> dict[str, Any]:
    """One table row of a layer's encoding: bits, grid bounds and the range of its scales."""
    w, a = e.get("weight") or {}, e.get("activation") or {}
    ws = np.asarray(w.get("scale", []), dtype=float).ravel()
    one = lambda v: v[0] if isinstance(v, list) and len(v) == 1 else v  # noqa: E731
    return {
        "layer": e["name"],
        "W bits": e.get("wbits"),
        "A bits": e.get("abits"),
        "W grid": f"[{w.get('quant_min')}, {w.get('quant_max')}]" if w else "float",
        "W scale min": float(ws.min()) if ws.size else None,
        "W scale max": float(ws.max()) if ws.size else None,
        "A grid": f"[{a.get('quant_min')}, {a.get('quant_max')}]" if a else "float",
        "A scale": one(a.get("scale")) if a else None,
        "A zero point": one(a.get("zero_point")) if a else None,
    }


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
        raise CheckpointError(
            "the weights this run used were an upload of a session that has ended; upload "
            "them again and start the run from the Quantize page"
        )
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
        return {
            "run_id": run_id,
            "html": render_html(data),
            "reproduced": data["reproduced"],
            "rebuilt_top1": data["rebuilt_top1"],
            "stored_top1": data["stored_top1"],
        }

    job = start_job(work, f"report of run {run_id}", queue=job_queue())
    st.session_state["report_job"] = job
    return job


def describe_run(rec: RunRecord) -> str:
    """One line that says what a run's numbers are: method, effective bits, model, data, subset, seed."""
    m, spec = rec.metrics, rec.spec or {}
    method = spec.get("method", rec.config)
    quant = method.get("quant", {})
    data = rec.extras.get("data", {}).get("name") or spec.get("data", "?")
    parts = [f"{rec.method} {rec.bits_label} on {rec.model}", f"data {data}"]
    if m.get("eval_samples"):
        parts.append(f"top-1 on the first {int(m['eval_samples']):,} test images")
    if m.get("calib_samples") or method.get("calib"):
        parts.append(f"{int(m.get('calib_samples') or method['calib']):,} calibration images")
    if quant:
        parts.append(f"observers {quant.get('w_observer')}/{quant.get('a_observer')}")
    if "preset" in method:
        parts.append(f"preset {method['preset']}, {method.get('iters')} steps per unit")
    parts.append(f"seed {method.get('seed', '?')}")
    return " · ".join(parts)

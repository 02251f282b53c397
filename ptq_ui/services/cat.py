"""Cached doors from the "CAT corrections" page into `ptq_core.explain.cat`.

The expensive part, quantizing once and collecting float / quantized logits on the
fitting and evaluation sets, is cached per (model, data, base config, sizes) with
`st.cache_data` as small numpy arrays. Everything the sliders change (K, PCA
dimensions, alpha, fitting-set size) refits CAT on those logits, which takes
milliseconds, and is cached too. Nothing here keeps a model or a tensor.
"""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from ptq_core.explain import cat as explain_cat
from ptq_core.methods import METHODS, config_from_dict

from ..resources import Key, loaded
from ..state import Selection
from . import runs

__all__ = [
    "K_CHOICES",
    "FIT_CHOICES",
    "ALPHA_GRID",
    "base_choices",
    "logits_info",
    "cat_view",
    "sample_logits",
    "sweep",
]

K_CHOICES = explain_cat.K_CHOICES
FIT_CHOICES = explain_cat.FIT_CHOICES
ALPHA_GRID = explain_cat.ALPHA_GRID


def base_choices(model: str, rtn_config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Label -> base method config (a dict): RTN with the Quantize page's settings, then saved runs of `model`.

    A saved run is re-quantized from its stored settings (same seed, same images); runs
    made with CAT offer their base method.
    """
    out = {"RTN with the Quantize page's settings": rtn_config}
    for rec in runs.list_runs(status="done", model=model, limit=30):
        cfg = dict(rec.config)
        if cfg.get("method") in METHODS:
            out[f"{rec.method} {rec.bits_label} · run {rec.run_id}"] = cfg
    return out


@st.cache_data(max_entries=8, show_spinner="Quantizing and collecting the float and quantized logits…")
def _logits(key: Key, data: str, config_json: str, eval_limit: int | None) -> dict[str, Any]:
    model, bundle = loaded(key, data)
    return explain_cat.correction_logits(
        model, bundle, config_from_dict(json.loads(config_json)), FIT_CHOICES[-1], eval_limit
    )


def _config(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True)


def logits_info(sel: Selection, config: dict[str, Any], eval_limit: int | None) -> dict[str, Any]:
    """Sets, sizes and class names behind the page (quantizes on first use)."""
    d = _logits(sel.key, sel.data, _config(config), eval_limit)
    return {k: d[k] for k in ("fit_set", "eval_set", "size_bits", "classes", "method")} | {
        "fit_available": len(d["fit_q"])
    }


@st.cache_data(max_entries=64, show_spinner=False)
def _view(
    key: Key, data: str, config_json: str, eval_limit: int | None, k: int, pca: int | None, alpha: float, fit_size: int
) -> dict[str, Any]:
    return explain_cat.correction_view(_logits(key, data, config_json, eval_limit), k, pca, alpha, fit_size)


def cat_view(
    sel: Selection, config: dict[str, Any], eval_limit: int | None, k: int, pca: int | None, alpha: float, fit_size: int
) -> dict[str, Any]:
    """CAT's result for these knobs, with an accuracy-vs-alpha curve and per-cluster mean logits
    (see `ptq_core.explain.cat.correction_view`)."""
    return _view(sel.key, sel.data, _config(config), eval_limit, k, pca, alpha, fit_size)


@st.cache_data(max_entries=256, show_spinner=False)
def _sample(
    key: Key,
    data: str,
    config_json: str,
    eval_limit: int | None,
    k: int,
    pca: int | None,
    alpha: float,
    fit_size: int,
    index: int,
) -> dict[str, Any]:
    logits = _logits(key, data, config_json, eval_limit)
    return explain_cat.sample_logits(logits, k, pca, alpha, fit_size, index)


def sample_logits(
    sel: Selection,
    config: dict[str, Any],
    eval_limit: int | None,
    k: int,
    pca: int | None,
    alpha: float,
    fit_size: int,
    index: int,
) -> dict[str, Any]:
    """Float, quantized and corrected logits of evaluation sample `index`, with its cluster and label."""
    return _sample(sel.key, sel.data, _config(config), eval_limit, k, pca, alpha, fit_size, index)


@st.cache_data(max_entries=64, show_spinner="Sweeping…")
def _sweep(
    key: Key,
    data: str,
    config_json: str,
    eval_limit: int | None,
    knob: str,
    k: int,
    pca: int | None,
    alpha: float,
    fit_size: int,
) -> dict[str, list[Any]]:
    return explain_cat.knob_sweep(_logits(key, data, config_json, eval_limit), knob, k, pca, alpha, fit_size)


def sweep(
    sel: Selection,
    config: dict[str, Any],
    eval_limit: int | None,
    knob: str,
    k: int,
    pca: int | None,
    alpha: float,
    fit_size: int,
) -> dict[str, list[Any]]:
    """Evaluation top-1 as one knob ("k", "pca" or "fit_size") runs over its choices, the others fixed."""
    return _sweep(sel.key, sel.data, _config(config), eval_limit, knob, k, pca, alpha, fit_size)

"""Cached doors from the Learn pages (AdaRound, QDrop, multipoint, CAT) into `ptq_core.explain`.

The shared float model and data come from `ptq_ui.resources` and are only read; every demo
works on its own prepared copy and returns small plain results, cached with
`st.cache_data` under plain keys.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from ptq_core import explain

from ..resources import Key, loaded
from ..state import Selection

__all__ = [
    "block_names",
    "rectified_sigmoid_curve",
    "adaround_demo",
    "qdrop_demo",
    "qdrop_mix_picture",
    "multipoint_demo",
    "multipoint_allocation",
    "multipoint_channel",
    "cat_demo",
    "cat_logits",
    "P_GRID",
    "H_BINS",
    "MAX_POINTS",
    "BUDGETS",
]

P_GRID = explain.P_GRID
H_BINS = explain.H_BINS
MAX_POINTS = explain.MAX_POINTS
BUDGETS = explain.BUDGETS


@st.cache_data(max_entries=16, show_spinner=False)
def _blocks(key: Key, data: str) -> list[str]:
    return explain.block_names(*loaded(key, data))


def block_names(sel: Selection) -> list[str]:
    """Reconstruction blocks of the selected model, in forward order."""
    return _blocks(sel.key, sel.data)


@st.cache_data(show_spinner=False)
def rectified_sigmoid_curve() -> dict[str, list[float]]:
    """h(V) against V (the core's rectified sigmoid) and the plain sigmoid."""
    return explain.rectified_sigmoid_curve()


@st.cache_data(max_entries=32, show_spinner="Running AdaRound on the layer…")
def _adaround(key: Key, data: str, layer: str, bits: int, iters: int, lam: float) -> dict:
    return explain.adaround_demo(*loaded(key, data), layer, bits, iters, lam)


def adaround_demo(sel: Selection, layer: str, bits: int, iters: int, round_weight: float) -> dict[str, Any]:
    """AdaRound on one layer against round-to-nearest (see `ptq_core.explain.adaround_demo`)."""
    return _adaround(sel.key, sel.data, layer, int(bits), int(iters), float(round_weight))


@st.cache_data(max_entries=16, show_spinner="Quantizing the model and mixing the block input…")
def _qdrop(key: Key, data: str, block: str, bits: int) -> dict:
    return explain.qdrop_demo(*loaded(key, data), block, bits)


def qdrop_demo(sel: Selection, block: str, bits: int) -> dict[str, Any]:
    """Block output error against the drop probability (see `ptq_core.explain.qdrop_demo`)."""
    return _qdrop(sel.key, sel.data, block, int(bits))


@st.cache_data(max_entries=64, show_spinner=False)
def qdrop_mix_picture(x_fp: np.ndarray, x_q: np.ndarray, p: float, seed: int = 0) -> dict[str, Any]:
    """One draw of the element-wise mix on a 2-D map."""
    return explain.qdrop_mix_picture(x_fp, x_q, float(p), int(seed))


@st.cache_data(max_entries=16, show_spinner="Finding the greedy points of every channel…")
def _multipoint(key: Key, data: str, layer: str, bits: int, grid: str) -> dict:
    return explain.multipoint_demo(*loaded(key, data), layer, bits, grid)


def multipoint_demo(sel: Selection, layer: str, bits: int, grid: str) -> dict[str, Any]:
    """Greedy points, residuals and output errors of every channel (see `ptq_core.explain.multipoint`)."""
    return _multipoint(sel.key, sel.data, layer, int(bits), grid)


@st.cache_data(max_entries=64, show_spinner=False)
def multipoint_allocation(key: Key, data: str, layer: str, bits: int, grid: str, budget: float) -> np.ndarray:
    """Points per channel at `budget` % extra points (error-driven)."""
    return explain.allocation(_multipoint(key, data, layer, bits, grid), budget)


@st.cache_data(max_entries=16, show_spinner="Quantizing with RTN and collecting float and quantized logits…")
def _cat_logits(key: Key, data: str, bits: int) -> dict:
    return explain.rtn_logits(*loaded(key, data), bits)


@st.cache_data(max_entries=64, show_spinner="Fitting the clusters…")
def _cat(key: Key, data: str, bits: int, k: int, alpha: float) -> dict:
    return explain.cat_demo(_cat_logits(key, data, bits), k, alpha)


def cat_demo(sel: Selection, bits: int, k: int, alpha: float) -> dict[str, Any]:
    """CAT fitted on RTN logits and measured on test images (see `ptq_core.explain.cat`)."""
    return _cat(sel.key, sel.data, int(bits), int(k), float(alpha))


def cat_logits(sel: Selection, bits: int) -> dict[str, np.ndarray]:
    """The float / quantized logits the CAT demo fits on and evaluates on."""
    return _cat_logits(sel.key, sel.data, int(bits))


def multipoint_channel(demo: dict[str, Any], channel: int) -> dict[str, Any]:
    """One channel of a multipoint demo: weights, partial sums, coefficients, residuals, errors."""
    return explain.channel_view(demo, int(channel))

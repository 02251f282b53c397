"""Cached doors from the Learn pages (AdaRound, QDrop, multipoint, CAT) into the core.

Same policy as `bridge`: the shared float model and data come from `bridge`'s
resource cache and are only read; every demo works on its own prepared copy and
returns small plain results, cached with `st.cache_data` under plain keys.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from . import analysis, bridge, learn_cat, learn_multipoint, learn_views
from .state import Selection

__all__ = ["block_names", "rectified_sigmoid_curve", "adaround_demo", "qdrop_demo", "qdrop_mix_picture",
           "grid_view", "multipoint_demo", "multipoint_allocation", "multipoint_channel", "cat_demo", "cat_logits",
           "P_GRID", "H_BINS", "MAX_POINTS", "BUDGETS"]  # fmt: skip

P_GRID = learn_views.P_GRID
H_BINS = learn_views.H_BINS
MAX_POINTS = learn_multipoint.MAX_POINTS
BUDGETS = learn_multipoint.BUDGETS


def _loaded(key: tuple[str, str, str], data: str) -> tuple[Any, Any]:
    loaded, bundle = bridge._resources(Selection(*key[:2], data, key[2]))
    return loaded.model, bundle


@st.cache_data(max_entries=16, show_spinner=False)
def _blocks(key: tuple[str, str, str], data: str) -> list[str]:
    return learn_views.block_names(*_loaded(key, data))


def block_names(sel: Selection) -> list[str]:
    """Reconstruction blocks of the selected model, in forward order."""
    return _blocks(sel.key, sel.data)


@st.cache_data(show_spinner=False)
def rectified_sigmoid_curve() -> dict[str, list[float]]:
    """h(V) against V (the core's rectified sigmoid) and the plain sigmoid."""
    return learn_views.rectified_sigmoid_curve()


@st.cache_data(max_entries=32, show_spinner="Running AdaRound on the layer…")
def _adaround(key: tuple[str, str, str], data: str, layer: str, bits: int, iters: int, lam: float) -> dict:
    return learn_views.adaround_demo(*_loaded(key, data), layer, bits, iters, lam)


def adaround_demo(sel: Selection, layer: str, bits: int, iters: int, round_weight: float) -> dict[str, Any]:
    """AdaRound on one layer against round-to-nearest (see `learn_views.adaround_demo`)."""
    return _adaround(sel.key, sel.data, layer, int(bits), int(iters), float(round_weight))


@st.cache_data(max_entries=16, show_spinner="Quantizing the model and mixing the block input…")
def _qdrop(key: tuple[str, str, str], data: str, block: str, bits: int) -> dict:
    return learn_views.qdrop_demo(*_loaded(key, data), block, bits)


def qdrop_demo(sel: Selection, block: str, bits: int) -> dict[str, Any]:
    """Block output error against the drop probability (see `learn_views.qdrop_demo`)."""
    return _qdrop(sel.key, sel.data, block, int(bits))


@st.cache_data(max_entries=64, show_spinner=False)
def qdrop_mix_picture(x_fp: np.ndarray, x_q: np.ndarray, p: float, seed: int = 0) -> dict[str, Any]:
    """One draw of the element-wise mix on a 2-D map."""
    return learn_views.qdrop_mix_picture(x_fp, x_q, float(p), int(seed))


@st.cache_data(max_entries=256, show_spinner=False)
def _grid(key: tuple[str, str, str], data: str, layer: str, source: str, bits: int, scale: float, zero_point: int,
          signed: bool) -> dict:  # fmt: skip
    values = bridge.layer_values(Selection(*key[:2], data, key[2]), layer, source)
    return analysis.grid_view(values, bits, scale, zero_point, signed)


def grid_view(sel: Selection, layer: str, source: str, bits: int, scale: float, zero_point: int,
              signed: bool) -> dict[str, Any]:  # fmt: skip
    """The Learn quantizer on a grid set by hand: scale and zero point (see `analysis.grid_view`)."""
    return _grid(sel.key, sel.data, layer, source, int(bits), float(scale), int(zero_point), bool(signed))


@st.cache_data(max_entries=16, show_spinner="Finding the greedy points of every channel…")
def _multipoint(key: tuple[str, str, str], data: str, layer: str, bits: int, grid: str) -> dict:
    return learn_multipoint.multipoint_demo(*_loaded(key, data), layer, bits, grid)


def multipoint_demo(sel: Selection, layer: str, bits: int, grid: str) -> dict[str, Any]:
    """Greedy points, residuals and output errors of every channel (see `learn_multipoint`)."""
    return _multipoint(sel.key, sel.data, layer, int(bits), grid)


@st.cache_data(max_entries=64, show_spinner=False)
def multipoint_allocation(key: tuple[str, str, str], data: str, layer: str, bits: int, grid: str,
                          budget: float) -> np.ndarray:  # fmt: skip
    """Points per channel at `budget` % extra points (error-driven)."""
    return learn_multipoint.allocation(_multipoint(key, data, layer, bits, grid), budget)


@st.cache_data(max_entries=16, show_spinner="Quantizing with RTN and collecting float and quantized logits…")
def _cat_logits(key: tuple[str, str, str], data: str, bits: int) -> dict:
    return learn_cat.cat_logits(*_loaded(key, data), bits)


@st.cache_data(max_entries=64, show_spinner="Fitting the clusters…")
def _cat(key: tuple[str, str, str], data: str, bits: int, k: int, alpha: float) -> dict:
    return learn_cat.cat_demo(_cat_logits(key, data, bits), k, alpha)


def cat_demo(sel: Selection, bits: int, k: int, alpha: float) -> dict[str, Any]:
    """CAT fitted on RTN logits and measured on test images (see `learn_cat`)."""
    return _cat(sel.key, sel.data, int(bits), int(k), float(alpha))


def cat_logits(sel: Selection, bits: int) -> dict[str, np.ndarray]:
    """The float / quantized logits the CAT demo fits on and evaluates on."""
    return _cat_logits(sel.key, sel.data, int(bits))


def multipoint_channel(demo: dict[str, Any], channel: int) -> dict[str, Any]:
    """One channel of a multipoint demo: weights, partial sums, coefficients, residuals, errors."""
    return learn_multipoint.channel_view(demo, int(channel))

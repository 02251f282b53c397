"""Doors of the Explore pages and the Learn page on the quantizer: architecture, float accuracy, a layer's
values and one uniform quantizer on them (`ptq_core.explain`), cached with `st.cache_data` under plain keys.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import streamlit as st

from ptq_core import explain
from ptq_core.prepare import QuantSpec

from ..resources import Key, loaded
from ..state import Selection

__all__ = [
    "architecture",
    "float_accuracy",
    "quantizable_layers",
    "layer_values",
    "quantizer_view",
    "grid_view",
    "clip_curve",
]


@st.cache_data(max_entries=16, show_spinner="Measuring the architecture…")
def _architecture(key: Key, data: str, spec_json: str) -> dict[str, Any]:
    model, bundle = loaded(key, data)
    return explain.architecture(model, explain.example_batch(model, bundle), QuantSpec.from_dict(json.loads(spec_json)))


def architecture(sel: Selection, spec: QuantSpec) -> dict[str, Any]:
    """Architecture table under `spec` (see `ptq_core.explain.architecture`)."""
    return _architecture(sel.key, sel.data, json.dumps(spec.to_dict(), sort_keys=True))


@st.cache_data(max_entries=16, show_spinner="Evaluating the float model…")
def _float_accuracy(key: Key, data: str, limit: int | None) -> dict[str, float]:
    return explain.float_accuracy(*loaded(key, data), limit)


def float_accuracy(sel: Selection, limit: int | None) -> dict[str, float]:
    """Float top-1/top-5 (%) on the first `limit` test images (all if None)."""
    return _float_accuracy(sel.key, sel.data, limit)


@st.cache_data(max_entries=16, show_spinner=False)
def _layers(key: Key, data: str) -> list[str]:
    return explain.quantizable_layers(loaded(key, data)[0])


def quantizable_layers(sel: Selection) -> list[str]:
    """Conv and linear layer names of the selected model."""
    return _layers(sel.key, sel.data)


@st.cache_data(max_entries=16, show_spinner="Collecting values…")
def _values(key: Key, data: str, layer: str, source: str) -> np.ndarray:
    return explain.layer_values(*loaded(key, data), layer, source)


def layer_values(sel: Selection, layer: str, source: str) -> np.ndarray:
    """A layer's weights or input activations (at most 200k values)."""
    return _values(sel.key, sel.data, layer, source)


@st.cache_data(max_entries=256, show_spinner=False)
def _quantizer(
    key: Key, data: str, layer: str, source: str, bits: int, ratio: float, symmetric: bool
) -> dict[str, Any]:
    return explain.quantizer_view(_values(key, data, layer, source), bits, ratio, symmetric)


def quantizer_view(sel: Selection, layer: str, source: str, bits: int, ratio: float, symmetric: bool) -> dict:
    """Grid, histogram and errors of the Learn page's quantizer."""
    return _quantizer(sel.key, sel.data, layer, source, bits, ratio, symmetric)


@st.cache_data(max_entries=64, show_spinner=False)
def _curve(key: Key, data: str, layer: str, source: str, bits: int, symmetric: bool) -> dict:
    return explain.clip_curve(_values(key, data, layer, source), bits, symmetric)


def clip_curve(sel: Selection, layer: str, source: str, bits: int, symmetric: bool) -> dict[str, Any]:
    """MSE against the clipping ratio, with the optimum."""
    return _curve(sel.key, sel.data, layer, source, bits, symmetric)


@st.cache_data(max_entries=256, show_spinner=False)
def _grid(key: Key, data: str, layer: str, source: str, bits: int, scale: float, zero_point: int, signed: bool) -> dict:
    return explain.grid_view(_values(key, data, layer, source), bits, scale, zero_point, signed)


def grid_view(
    sel: Selection, layer: str, source: str, bits: int, scale: float, zero_point: int, signed: bool
) -> dict[str, Any]:
    """The Learn quantizer on a grid set by hand: scale and zero point (see `ptq_core.explain.grid_view`)."""
    return _grid(sel.key, sel.data, layer, source, int(bits), float(scale), int(zero_point), bool(signed))

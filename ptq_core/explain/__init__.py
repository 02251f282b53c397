"""The torch side of the app's Learn and Diagnose views: small, real demonstrations on one model.

One module per concept, each a thin layer over the core's public API that returns plain
data (numbers, lists, dicts, numpy arrays) a chart can draw and a cache can keep:
`device` (where the work runs), `samples` (which images), `architecture` (layers, MACs,
float accuracy), `quantizer` (one uniform grid on a layer's values), `adaround`, `qdrop`,
`multipoint`, `cat` (the Learn pages), `diagnose` (copies of shared models for the
Diagnose pages). Nothing here imports Streamlit; `ptq_ui.services` caches these calls.
"""

from __future__ import annotations

from .adaround import H_BINS, adaround_demo, rectified_sigmoid_curve
from .architecture import architecture, count_macs, float_accuracy, quant_layer, quantizable_layers
from .cat import (
    ALPHA_GRID,
    FIT_CHOICES,
    K_CHOICES,
    cat_demo,
    correction_logits,
    correction_view,
    knob_sweep,
    rtn_logits,
    sample_logits,
)
from .device import cuda_available, default_threads, model_device, set_threads
from .diagnose import channel_sample_map, live_layer_errors, measure_allocation
from .multipoint import BUDGETS, MAX_POINTS, allocation, channel_view, multipoint_demo
from .qdrop import P_GRID, block_names, qdrop_demo, qdrop_mix_picture
from .quantizer import clip_curve, grid_view, layer_values, quantizer_view
from .samples import calibration_images, example_batch, model_fits, run_model, test_batch

__all__ = [
    "ALPHA_GRID",
    "BUDGETS",
    "FIT_CHOICES",
    "H_BINS",
    "K_CHOICES",
    "MAX_POINTS",
    "P_GRID",
    "adaround_demo",
    "allocation",
    "architecture",
    "block_names",
    "calibration_images",
    "cat_demo",
    "channel_sample_map",
    "channel_view",
    "clip_curve",
    "correction_logits",
    "correction_view",
    "count_macs",
    "cuda_available",
    "default_threads",
    "example_batch",
    "float_accuracy",
    "grid_view",
    "knob_sweep",
    "layer_values",
    "live_layer_errors",
    "measure_allocation",
    "model_device",
    "model_fits",
    "multipoint_demo",
    "qdrop_demo",
    "qdrop_mix_picture",
    "quant_layer",
    "quantizable_layers",
    "quantizer_view",
    "rectified_sigmoid_curve",
    "rtn_logits",
    "run_model",
    "sample_logits",
    "set_threads",
    "test_batch",
]

"""The Diagnose pages' measurements that wrap `ptq_core.analysis` calls on a shared model.

Each works on a copy of the model it is given (the app shares its float and RTN models
between sessions) and returns plain lists and dicts:

- `channel_sample_map`: RepAPQ's channel x sample map of one layer;
- `live_layer_errors`: per-layer errors, alone and accumulated, of a quantized model;
- `measure_allocation`: top-1 of RTN with a mixed-precision allocation, beside the float model.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..analysis import mixed_precision, outliers, sensitivity
from ..data import DataBundle, make_loader
from ..metrics import evaluate, layer_errors
from ..prepare import QuantSpec
from .device import model_device

__all__ = ["ERROR_VIEWS", "channel_sample_map", "live_layer_errors", "measure_allocation"]

ERROR_VIEWS = ("alone", "accumulated")


def channel_sample_map(model: nn.Module, images: torch.Tensor, layer: str) -> dict[str, Any]:
    """Max |output| of every channel of `layer` on every image (merged model), with outlier scores."""
    info = outliers.channel_sample_maxima(copy.deepcopy(model), images, [layer])[layer]  # hooks on a copy
    return {"map": info["maxima"], "channel_score": info["channel_score"], "median": info["median"], "top": info["top"]}


def live_layer_errors(qmodel: nn.Module, images: torch.Tensor) -> dict[str, list[dict[str, Any]]]:
    """Per-layer errors of a calibrated quantized model on `images`, for each view in `ERROR_VIEWS`."""
    model = copy.deepcopy(qmodel)  # layer_errors switches quantizers: never on the shared model
    return {view: [e.to_dict() for e in layer_errors(model, images, view)] for view in ERROR_VIEWS}


def measure_allocation(
    model: nn.Module,
    bundle: DataBundle,
    calib: torch.Tensor,
    spec: QuantSpec,
    bits: dict[str, int],
    eval_limit: int | None,
) -> dict[str, dict[str, float]]:
    """Top-1/top-5 of RTN with each layer at its allocated bits (first/last policy off), and of the float model."""
    mixed = QuantSpec.from_dict(
        {**spec.to_dict(), "first_last_bits": None, "overrides": mixed_precision.overrides_for(bits)}
    )
    q = sensitivity.rtn_model(model, calib, mixed)
    loader = make_loader(bundle.test, limit=eval_limit)
    device = model_device(model)
    return {"quantized": evaluate(q.model, loader, device), "float": evaluate(model, loader, device)}

"""One uniform quantizer on a real layer's values, as the Learn page on the quantizer shows it.

- `layer_values`: a layer's weights, or its input activations on calibration images
  (a seeded subsample of at most 200k values);
- `quantizer_view` / `grid_view`: the grid over a clipped range (the core's
  `ranges.clipped_grid`) or one given by hand, with the histogram and the
  clipping/rounding split of the core's `quantization_error`;
- `clip_curve`: MSE against the clipping ratio from the core's `lp_search`.

Every result is plain numbers, lists and numpy arrays.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ..analysis.ranges import capture_inputs, clipped_grid
from ..data import DataBundle
from ..errors import ConfigError, DataError
from ..primitives import histogram_points, lp_search, quant_range, quantization_error
from .samples import example_batch, model_fits

__all__ = ["MAX_VALUES", "HIST_BINS", "layer_values", "quantizer_view", "grid_view", "clip_curve"]

MAX_VALUES = 200_000  # values kept for the Learn page (seeded subsample)
HIST_BINS = 120


def _subsample(values: torch.Tensor, seed: int = 0) -> np.ndarray:
    flat = values.detach().float().flatten().cpu()
    if flat.numel() > MAX_VALUES:
        idx = torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(seed))[:MAX_VALUES]
        flat = flat[idx]
    return flat.numpy().astype(np.float32)


@torch.no_grad()
def layer_values(model: nn.Module, bundle: DataBundle, layer: str, source: str, n_images: int = 64) -> np.ndarray:
    """The layer's weights (`source="weights"`) or its inputs on `n_images` calibration images."""
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        raise ConfigError(f"the model has no layer {layer!r}") from None
    if source == "weights":
        return _subsample(module.weight)
    images = example_batch(model, bundle, n_images)
    with model_fits(images):
        return _subsample(capture_inputs(model, images, [layer])[layer])  # hooks on a copy of the shared model


def quantizer_view(values: np.ndarray, bits: int, ratio: float, symmetric: bool) -> dict[str, Any]:
    """Grid, histogram and rounding/clipping error of one uniform quantizer on `values`."""
    if not 0 < ratio <= 1:
        raise ConfigError(f"clipping ratio must be in (0, 1], got {ratio}")
    x = torch.from_numpy(np.ascontiguousarray(values))
    if x.numel() == 0:
        raise DataError("no values to quantize")
    grid = clipped_grid(x.reshape(1, -1), bits, per_channel=False, ratio=ratio, symmetric=symmetric)
    return grid_view(values, bits, float(grid.scale[0]), int(grid.zero_point[0]), grid.signed)


def grid_view(values: np.ndarray, bits: int, scale: float, zero_point: int, signed: bool) -> dict[str, Any]:
    """Like `quantizer_view`, for a grid given by its scale and zero point (the Learn page's manual mode)."""
    qmin, qmax = quant_range(bits, signed)
    if not (math.isfinite(scale) and scale > 0):
        raise ConfigError(f"scale must be a positive number, got {scale}")
    if not qmin <= zero_point <= qmax:
        raise ConfigError(f"zero point must be in {qmin}..{qmax} for a {bits}-bit grid, got {zero_point}")
    x = torch.from_numpy(np.ascontiguousarray(values))
    if x.numel() == 0:
        raise DataError("no values to quantize")
    scale, zp = torch.tensor(float(scale)), torch.tensor(float(zero_point))
    err = quantization_error(x, scale, zp, qmin, qmax)
    n = x.numel()
    levels = ((torch.arange(qmin, qmax + 1, dtype=torch.float32) - zp) * scale).tolist()
    counts, edges = np.histogram(values, bins=HIST_BINS)
    signal = float(x.double().pow(2).sum())
    total = err["total"]
    return {
        "bits": bits,
        "scale": float(scale),
        "zero_point": int(zp),
        "qmin": qmin,
        "qmax": qmax,
        "signed": signed,
        "levels": levels,
        "lo": levels[0],
        "hi": levels[-1],
        "min": float(x.min()),
        "max": float(x.max()),
        "hist_centers": ((edges[:-1] + edges[1:]) / 2).tolist(),
        "hist_counts": counts.tolist(),
        "rounding_mse": err["rounding"] / n,
        "clipping_mse": err["clipping"] / n,
        "total_mse": total / n,
        "clip_fraction": err["clip_fraction"],
        "sqnr_db": math.inf if total == 0 else 10 * math.log10(signal / total),
        "count": n,
    }


def clip_curve(values: np.ndarray, bits: int, symmetric: bool, num: int = 100) -> dict[str, Any]:
    """MSE against the clipping ratio (range width / full width) from `lp_search` with p = 2.

    Computed on a 2048-bin histogram of the values; for asymmetric grids each width
    uses its best zero point.
    """
    x = torch.from_numpy(np.ascontiguousarray(values))
    signed = symmetric and float(x.min()) < 0
    points, counts = histogram_points(x)
    lo, hi, curve = lp_search(
        points, bits, symmetric, signed, p=2.0, num_candidates=num, return_curve=True, weights=counts
    )
    best = int(curve["best_index"])
    return {
        "ratio": curve["ratio"].tolist(),
        "mse": curve["loss"].tolist(),
        "best_ratio": float(curve["ratio"][best]),
        "best_mse": float(curve["loss"][best]),
        "best_lo": float(lo),
        "best_hi": float(hi),
    }

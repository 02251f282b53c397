"""Multipoint quantization on one real layer, as the Learn page on multipoint shows it.

Uses the core's multipoint pieces (`ptq_core.layerwise.multipoint`: `greedy_points`,
`allocate_points`; `layerwise_base.layer_error`; `capture_grams`) on one real layer:
every output channel is approximated by greedy sums of b-bit vectors with float
coefficients, and the output error of each channel, ``e_c = r_cᵀ H r_c`` with H the
Gram matrix of the layer's calibration inputs, decides where extra points go.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import DataBundle
from ..errors import ConfigError
from ..layerwise import GRIDS, allocate_points, capture_grams, greedy_points, weight_groups
from ..methods.layerwise_base import layer_error
from ..modules import set_quant_state
from ..prepare import QuantSpec, prepare
from ..qscheme import check_bits
from .architecture import quant_layer
from .samples import calibration_images

__all__ = ["MAX_POINTS", "BUDGETS", "multipoint_demo", "allocation", "channel_view"]

MAX_POINTS = 6
BUDGETS = tuple(range(0, 101, 5))  # extra points, % of the layer's channels


@torch.no_grad()
def multipoint_demo(
    model: nn.Module,
    bundle: DataBundle,
    layer: str,
    bits: int,
    grid: str = "signed",
    n_points: int = MAX_POINTS,
    n_images: int = 128,
) -> dict[str, Any]:
    """Greedy points of every channel of `layer`, their residuals and output errors.

    Returns:
        ``weights`` [C, d], ``coeffs`` [n, C], ``codes`` [n, C, d] (int8), ``residual``
        [n + 1, C] (``|w - w̃_i|``, row 0 is ``|w|``), ``errors`` [n, C] and ``reference`` [C]
        (output error with 1..n points, and the output energy ``wᵀHw``), as numpy arrays;
        plus the total output error against the extra-point budget, error-driven and random.
    """
    bits = check_bits(bits, allow_float=False)
    if grid not in GRIDS:
        raise ConfigError(f"grid must be one of {', '.join(GRIDS)}, got {grid!r}")
    if not 1 <= n_points <= MAX_POINTS:
        raise ConfigError(f"points must be in 1..{MAX_POINTS}, got {n_points}")
    images = calibration_images(model, bundle, n_images)
    qmodel, _ = prepare(model, QuantSpec(wbits=bits, abits=32, first_last_bits=None), images[:8])
    qlayer = quant_layer(qmodel, layer)
    set_quant_state(qmodel, False, False)  # float inputs, as the method captures them
    h = capture_grams(qmodel, [layer], images, 64)[layer]
    w = qlayer.weight.detach().reshape(qlayer.weight.shape[0], -1).float()
    coeffs, codes = greedy_points(w, n_points, bits, grid)
    approx = (coeffs[:, :, None] * codes).cumsum(0)  # [n, C, d]
    w3 = weight_groups(qlayer, w)
    errors = torch.stack([layer_error(w3, weight_groups(qlayer, a), h).reshape(-1) for a in approx])
    reference = layer_error(w3, torch.zeros_like(w3), h).reshape(-1)
    residual = torch.cat([w.norm(dim=1)[None], (w[None] - approx).norm(dim=2)])
    out = {
        "layer": layer,
        "bits": bits,
        "grid": grid,
        "channels": int(w.shape[0]),
        "d": int(w.shape[1]),
        "weights": w.cpu().numpy(),
        "coeffs": coeffs.cpu().numpy(),
        "codes": codes.to(torch.int8).cpu().numpy(),
        "residual": residual.cpu().numpy(),
        "errors": errors.cpu().numpy(),
        "reference": reference.cpu().numpy(),
    }
    out["budget_curve"] = _budget_curve(out)
    return out


def allocation(demo: dict[str, Any], budget: float, selection: str = "error", seed: int = 0) -> np.ndarray:
    """Points per channel for `budget` % extra points (the core's `allocate_points`)."""
    if not 0 <= budget <= 100 * MAX_POINTS:
        raise ConfigError(f"budget must be a percentage in 0..{100 * MAX_POINTS}, got {budget}")
    extra = math.floor(budget * demo["channels"] / 100 + 1e-9)
    gen = torch.Generator().manual_seed(seed)
    errors, reference = torch.from_numpy(demo["errors"]), torch.from_numpy(demo["reference"])
    return allocate_points(errors, extra, None, reference, selection, gen).numpy()


def _total_error(demo: dict[str, Any], points: np.ndarray) -> float:
    return float(demo["errors"][points - 1, np.arange(demo["channels"])].sum())


def _budget_curve(demo: dict[str, Any]) -> dict[str, list[float]]:
    """Total output error of the layer against the budget, for error-driven and random channel choice."""
    curve: dict[str, list[float]] = {"budget": list(BUDGETS), "error": [], "random": []}
    for b in BUDGETS:
        curve["error"].append(_total_error(demo, allocation(demo, b, "error")))
        curve["random"].append(_total_error(demo, allocation(demo, b, "random")))
    return curve


def channel_view(demo: dict[str, Any], channel: int) -> dict[str, Any]:
    """One channel: its weights, the partial sums after each point, coefficients, residuals, output errors."""
    if not 0 <= channel < demo["channels"]:
        raise ConfigError(f"channel must be in 0..{demo['channels'] - 1}, got {channel}")
    a = demo["coeffs"][:, channel]  # [n]
    v = demo["codes"][:, channel].astype(np.float32)  # [n, d]
    partial = np.cumsum(a[:, None] * v, axis=0)
    return {
        "w": demo["weights"][channel],
        "partial": partial,
        "coeffs": a.tolist(),
        "residual": demo["residual"][:, channel].tolist(),
        "errors": demo["errors"][:, channel].tolist(),
        "reference": float(demo["reference"][channel]),
        "levels": [sorted(set(np.unique(row).astype(int).tolist())) for row in demo["codes"][:, channel]],
    }

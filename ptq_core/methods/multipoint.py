"""Multipoint quantization (Liu et al., AAAI 2021; docs/methods.md): more b-bit points where they pay.

Every output channel is a greedy sum of b-bit vectors with float coefficients
(`ptq_core.layerwise.multipoint`). All channels get one point; extra points go to
the channels with the largest output error on calibration inputs, ``e_c = r_cᵀ H r_c``,
under the user's budget: ``budget`` percent extra points (per layer, the remainder
carried to the next layer so the total is exact) and/or a relative error
``threshold`` (a channel stops once ``e_c <= threshold * w_cᵀ H w_c``), at most
``n_max`` points each. ``selection="random"`` spends the same budget on random
channels (the paper's ablation). The layer still runs as a fake-quant layer (its
weight is the sum of its points); `ptq_core.layerwise.deploy_multipoint` gives the
expanded b-bit layers plus channel merges. ``extras`` report the points per channel
and the overhead (extra b-bit channels and coefficients).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..layerwise.gram import weight_groups
from ..layerwise.multipoint import GRIDS, SELECTIONS, allocate_points, greedy_points
from ..layerwise.quantizers import MultipointQuantizer
from ..modules import QuantLayer
from ..primitives import channel_rows
from ..settings import setting
from .base import ProgressFn, QuantResult, register_method
from .layerwise_base import LayerwiseConfig, layer_error, run_layerwise

__all__ = ["MultipointConfig", "multipoint"]


@dataclass
class MultipointConfig(LayerwiseConfig):
    """Multipoint settings."""

    method = "multipoint"
    budget: float | None = setting(5.0, help="extra points as a percentage of output channels (unset: no limit)", min=0)
    threshold: float | None = setting(None, help="relative per-channel output error to stop at (unset: off)", min=0)
    n_max: int = setting(4, help="most points a channel may get", min=1)
    selection: str = setting(
        "error",
        help="where extra points go: by output error (paper) or at random (ablation)",
        choices=("error", "random"),
    )
    grid: str = setting("signed", help="all 2^b codes (signed) or 2^b - 1 (symmetric)", choices=("signed", "symmetric"))
    candidates: int = setting(128, help="coefficients tried per sign in each point's search", min=8)
    decay_channels: int = setting(4, help="channels per layer whose error-decay curve is kept", min=0)

    def validate(self) -> None:
        super().validate()
        if self.budget is None and self.threshold is None:
            raise ConfigError("multipoint needs a budget (percent extra points) or an error threshold")
        if self.budget is not None and not 0 <= self.budget <= 100 * 63:
            raise ConfigError(f"budget must be a percentage >= 0, got {self.budget!r}")
        if self.threshold is not None and not self.threshold >= 0:
            raise ConfigError(f"threshold must be >= 0, got {self.threshold!r}")
        if not isinstance(self.n_max, int) or isinstance(self.n_max, bool) or not 1 <= self.n_max <= 64:
            raise ConfigError(f"n_max must be an integer in 1-64, got {self.n_max!r}")
        for name, allowed in (("selection", SELECTIONS), ("grid", GRIDS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if not isinstance(self.candidates, int) or self.candidates < 8:
            raise ConfigError(f"candidates must be an integer >= 8, got {self.candidates!r}")


class _Budget:
    """Per-layer share of the extra points, with the rounding remainder carried forward."""

    def __init__(self, percent: float | None) -> None:
        self.percent, self.channels, self.given = percent, 0, 0

    def take(self, channels: int) -> int | None:
        if self.percent is None:
            return None
        self.channels += channels
        extra = math.floor(self.percent * self.channels / 100 + 1e-9) - self.given
        self.given += extra
        return extra


def _errors(layer: QuantLayer, w: Tensor, coeffs: Tensor, codes: Tensor, h: Tensor) -> Tensor:
    """``[n, C]`` output error of every channel with 1..n points."""
    approx = (coeffs[:, :, None] * codes).cumsum(0)  # [n, C, d]
    w3 = weight_groups(layer, w)
    return torch.stack([layer_error(w3, weight_groups(layer, a), h).reshape(-1) for a in approx])


def _points(
    layer: QuantLayer, w: Tensor, h: Tensor, extra: int | None, bits: int, config: MultipointConfig
) -> tuple[Tensor, Tensor]:
    """Greedy points ``[n, C]`` / ``[n, C, d]``: one for every channel, more only where they may be used.

    With an error-driven budget of E extra points only the E channels of largest one-point
    error can receive any (each pick takes the largest current error), so only they get
    their further points computed; the others repeat their one-point approximation.
    """
    coeffs, codes = greedy_points(w, 1, bits, config.grid, config.candidates)
    if extra == 0 or config.n_max == 1:
        return coeffs, codes
    rows = torch.arange(w.shape[0], device=w.device)
    if extra is not None and config.selection == "error" and extra < w.shape[0]:
        rows = _errors(layer, w, coeffs, codes, h)[0].topk(extra).indices
    more_a, more_v = greedy_points(
        w[rows] - coeffs[0, rows, None] * codes[0, rows], config.n_max - 1, bits, config.grid, config.candidates
    )
    coeffs = torch.cat([coeffs, coeffs.new_zeros(config.n_max - 1, w.shape[0])])
    codes = torch.cat([codes, codes.new_zeros(config.n_max - 1, *w.shape)])
    coeffs[1:, rows], codes[1:, rows] = more_a, more_v
    return coeffs, codes


def _solver(config: MultipointConfig, budget: _Budget):
    def solve(name: str, layer: QuantLayer, h: Tensor, index: int) -> dict[str, Any]:
        bits = layer.wbits
        w = channel_rows(layer.weight.detach(), 0).float()
        extra = budget.take(w.shape[0])
        coeffs, codes = _points(layer, w, h, extra, bits, config)
        errors = _errors(layer, w, coeffs, codes, h)  # [levels, C]
        reference = layer_error(weight_groups(layer, w), torch.zeros_like(weight_groups(layer, w)), h).reshape(-1)
        gen = torch.Generator().manual_seed(config.seed * 100003 + index)
        points = allocate_points(errors, extra, config.threshold, reference, config.selection, gen).to(w.device)
        top = int(points.max())
        layer.weight_quantizer = MultipointQuantizer(bits, codes[:top], coeffs[:top], points, layer.weight.shape)
        final = errors[points - 1, torch.arange(w.shape[0], device=w.device)]
        shown = torch.argsort(points, descending=True, stable=True)[: config.decay_channels].tolist()
        residual = (w[None] - (coeffs[:, :, None] * codes).cumsum(0)).norm(dim=2)  # [levels, C]
        return {
            "error": float(final.sum()),
            "one_point_error": float(errors[0].sum()),
            "bits": bits,
            "points": points.tolist(),
            "extra_points": int(points.sum()) - w.shape[0],
            "channels": w.shape[0],
            "decay": {
                "channels": shown,
                "weight_residual": residual[:, shown].t().tolist(),
                "output_error": errors[:, shown].t().tolist(),
                "weight_norm": w[shown].norm(dim=1).tolist(),
            },
        }

    return solve


def _overhead(records: list[dict[str, Any]]) -> dict[str, Any]:
    channels = sum(r["channels"] for r in records)
    extra = sum(r["extra_points"] for r in records)
    return {
        "channels": channels,
        "extra_points": extra,
        "extra_percent": 100.0 * extra / max(channels, 1),
        "coefficients": channels + extra,
        "extra_weight_bits": sum(r["extra_points"] * r["bits"] * r["d"] for r in records),
    }


@register_method(MultipointConfig)
def multipoint(
    model: nn.Module, calib: Tensor, config: MultipointConfig, progress: ProgressFn | None = None
) -> QuantResult:
    """Multipoint-quantize every quantized layer, then calibrate activations if any are quantized."""
    result = run_layerwise(model, calib, config, _solver(config, _Budget(config.budget)), progress)
    records = result.extras["layer_solutions"]
    for r in records:
        r["d"] = int(result.model.get_submodule(r["name"]).weight[0].numel())
    result.extras["points"] = {r["name"]: r["points"] for r in records}
    result.extras["overhead"] = _overhead(records)
    return result

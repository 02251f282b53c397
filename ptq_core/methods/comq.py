"""COMQ: coordinate-wise minimisation of the layer output error (Zhang et al., 2024; docs/methods.md).

Backprop-free and weight-only by default: every Conv2d (unfolded) and Linear layer
gets integer codes on its per-channel grid by exact coordinate descent on
``||X Wᵀ - X Qᵀ||²`` (solver in `ptq_core.layerwise.comq`), visiting coordinates in
the greedy ``|W| * ||x_j||`` order, K = 1 sweep, with the least-squares scale update
on by default. The grid is the layer's observer grid (``grid="observer"``) or the
reference code's min-max grid times ``scalar`` (``grid="minmax"``, 0.65 at 2 bits in
its README). Inputs come from the float model as in the paper (``inputs="float"``)
or from the partially quantized model. ``extras["trace"]`` holds, per layer, the
error curve over the sweep, the visiting order of a few rows and the code histogram.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..layerwise.comq import ORDERS, STARTS, ComqSolution, comq_solve
from ..layerwise.gram import weight_groups
from ..layerwise.quantizers import CodeQuantizer
from ..modules import QuantLayer
from ..primitives import channel_rows, compute_qparams
from ..settings import setting
from .base import ProgressFn, QuantResult, register_method
from .layerwise_base import LayerwiseConfig, grid_of, run_layerwise

__all__ = ["COMQConfig", "comq", "comq_trace"]

GRIDS = ("observer", "minmax")


@dataclass
class COMQConfig(LayerwiseConfig):
    """COMQ settings (paper defaults)."""

    method = "comq"
    sweeps: int = setting(1, help="passes over all coordinates (K)", min=1)
    order: str = setting(
        "greedy", help="coordinate order (greedy: the paper's)", choices=("greedy", "natural", "random")
    )
    start: str = setting(
        "float",
        help="start from the float weights (reference code) or from round-to-nearest",
        choices=("float", "nearest"),
    )
    update_scale: bool = setting(True, help="least-squares per-channel scale after each sweep")
    grid: str = setting(
        "observer", help="the layer's observer grid, or min-max (reference code)", choices=("observer", "minmax")
    )
    scalar: float = setting(1.0, help="factor on the min-max scale (grid minmax only)", min=0)
    trace_points: int = setting(256, help="points kept of each layer's error curve (at least 64)", min=64)
    trace_rows: int = setting(8, help="rows whose visiting order is kept in the trace", min=0)

    def validate(self) -> None:
        super().validate()
        for name, allowed in (("order", ORDERS), ("start", STARTS), ("grid", GRIDS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if not isinstance(self.sweeps, int) or isinstance(self.sweeps, bool) or self.sweeps < 1:
            raise ConfigError(f"sweeps must be a positive integer, got {self.sweeps!r}")
        if not 0 < self.scalar <= 1:
            raise ConfigError(f"scalar must be in (0, 1], got {self.scalar!r}")
        if self.trace_points < 64 or self.trace_rows < 0:
            raise ConfigError("trace_points must be at least 64 and trace_rows non-negative")


def _minmax_grid(layer: QuantLayer, scalar: float) -> tuple[Tensor, Tensor]:
    """Reference grid: min-max of each row (or the tensor), scale times `scalar`."""
    fq = layer.weight_quantizer
    w = channel_rows(layer.weight.detach(), 0)
    lo, hi = (w.amin(1), w.amax(1)) if fq.scheme.per_channel else (w.min(), w.max())
    scale, zp = compute_qparams(lo, hi, fq.bits, fq.scheme.symmetric, fq.scheme.signed)
    return scale * scalar, zp


def comq_trace(sol: ComqSolution, qmin: int, qmax: int, points: int, rows: int) -> dict[str, Any]:
    """JSON-ready trace of one layer: error curve, visiting order, code histogram."""
    n = len(sol.curve)
    idx = torch.linspace(0, n - 1, min(n, points)).round().long().unique() if n else torch.zeros(0, dtype=torch.long)
    codes = sol.codes.long()
    hist = torch.bincount((codes - qmin).reshape(-1), minlength=qmax - qmin + 1)
    used = torch.zeros(codes.shape[0], qmax - qmin + 1, dtype=torch.bool).scatter_(1, (codes - qmin).cpu(), True)
    used = used.sum(1)
    shown = list(range(min(rows, codes.shape[0])))
    return {
        "step": (idx + 1).tolist(),
        "error": sol.curve[idx].tolist(),
        "steps_total": n,
        "start_error": sol.start_error,
        "rtn_error": sol.rtn_error,
        "scale_steps": sol.scale_steps,
        "order_rows": shown,
        "order": sol.order[shown].tolist(),
        "code_min": qmin,
        "code_hist": hist.tolist(),
        "levels_used": used.tolist(),
    }


def _solver(config: COMQConfig, traces: dict[str, Any]):
    def solve(name: str, layer: QuantLayer, h: Tensor, index: int) -> dict[str, Any]:
        scale, zp, qmin, qmax, per_channel = grid_of(layer)
        if config.grid == "minmax":
            scale, zp = _minmax_grid(layer, config.scalar)
        w = weight_groups(layer).detach()
        sol = comq_solve(
            w,
            h,
            scale,
            zp,
            qmin,
            qmax,
            sweeps=config.sweeps,
            order=config.order,
            start=config.start,
            update_scale=config.update_scale,
            per_channel=per_channel,
            seed=config.seed + index,
        )
        new_scale = sol.scale if per_channel else sol.scale[:1].reshape(())
        fq = CodeQuantizer(layer.weight_quantizer, sol.codes.reshape(layer.weight.shape), new_scale, zp)
        layer.weight_quantizer = fq
        traces[name] = comq_trace(sol, qmin, qmax, config.trace_points, config.trace_rows)
        werr = float((fq(layer.weight.detach()) - layer.weight.detach()).norm())
        return {"error": sol.error, "rtn_error": sol.rtn_error, "weight_error": werr}

    return solve


@register_method(COMQConfig)
def comq(model: nn.Module, calib: Tensor, config: COMQConfig, progress: ProgressFn | None = None) -> QuantResult:
    """Solve every quantized layer's codes by COMQ, then calibrate activations if any are quantized."""
    traces: dict[str, Any] = {}
    result = run_layerwise(model, calib, config, _solver(config, traces), progress)
    result.extras["trace"] = traces
    return result

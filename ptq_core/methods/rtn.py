"""Round-to-nearest (RTN): ranges from an observer, every value to its nearest grid point.

The baseline of every PTQ paper (methods.md §1.1). The observer (min-max, MSE/Lp
search with p = 2.4, MAE (p = 1), or percentile) is chosen in `QuantSpec.w_observer` and
`QuantSpec.a_observer`; weights are per output channel by default.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from ..calibrate import calibrate_activations, calibrate_weights
from ..modules import set_quant_state
from ..prepare import prepare
from .base import MethodConfig, ProgressEvent, ProgressFn, QuantResult, emit, register_method

__all__ = ["RTNConfig", "rtn"]


@dataclass
class RTNConfig(MethodConfig):
    """Round-to-nearest; only the shared settings (observer lives in `quant`)."""

    method = "rtn"


@register_method(RTNConfig)
def rtn(model: nn.Module, calib: torch.Tensor, config: RTNConfig, progress: ProgressFn | None = None) -> QuantResult:
    """Prepare, calibrate weight and activation ranges, switch quantization on."""
    t0 = time.perf_counter()
    qmodel, report = prepare(model, config.quant, calib[:8])
    t1 = time.perf_counter()
    emit(progress, ProgressEvent("weights", 0, 1, message="weight ranges"))
    calibrate_weights(qmodel)
    t2 = time.perf_counter()

    def on_batch(i: int, n: int) -> None:
        emit(progress, ProgressEvent("calibrate", i + 1, n, message="activation ranges"))

    calibrate_activations(qmodel, calib, config.batch_size, on_batch)
    set_quant_state(qmodel, True, True)
    timings = {"prepare": t1 - t0, "weights": t2 - t1, "activations": time.perf_counter() - t2}
    return QuantResult(qmodel, config, report, timings=timings)

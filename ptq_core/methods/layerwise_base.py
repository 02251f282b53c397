"""The layer loop shared by COMQ, GPTQ and multipoint quantization.

1. `prepare` the model (BN folded, first/last layers at 8 bits by the spec's policy)
   and set every weight grid from its observer (per-channel scale and zero point);
2. for each quantized layer in execution order: get ``H = XᵀX`` of its inputs (from
   the float model, or from the model with the layers solved so far quantized),
   let the solver install its answer, and switch that layer's weights on;
3. if activations are quantized (``abits < 32``), calibrate their ranges afterwards,
   as RTN does; weight-only (the default of these methods) leaves them in float.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..calibrate import calibrate_activations, calibrate_weights
from ..errors import ConfigError
from ..layerwise.capture import cached_grams, capture_grams
from ..modules import QuantLayer, quant_layers, set_quant_state
from ..prepare import QuantSpec, prepare
from ..settings import setting
from .base import MethodConfig, ProgressEvent, ProgressFn, QuantResult, emit

__all__ = ["INPUTS", "LayerwiseConfig", "LayerSolver", "run_layerwise", "layer_error", "grid_of"]

INPUTS = ("float", "quantized")

# solver(name, layer, H [G, d, d], index) -> per-layer record (JSON-ready); it installs its own quantizer
LayerSolver = Callable[[str, QuantLayer, Tensor, int], dict[str, Any]]


def _weight_only() -> QuantSpec:
    return QuantSpec(abits=32)


@dataclass
class LayerwiseConfig(MethodConfig):
    """Settings shared by the layer-wise solvers.

    `quant` is weight-only (``abits=32``) by default.
    """

    quant: QuantSpec = setting(default_factory=_weight_only, help="bit-widths, observers and policies", nested=True)
    inputs: str = setting(
        "float",
        help="each layer's inputs from the float model (one pass for all layers) "
        "or from the partly quantized one (one pass per layer)",
        choices=("float", "quantized"),
    )

    def validate(self) -> None:
        if self.inputs not in INPUTS:
            raise ConfigError(f"inputs must be one of {', '.join(INPUTS)}, got {self.inputs!r}")


def layer_error(w: Tensor, q: Tensor, h: Tensor) -> Tensor:
    """Per-row output error ``(w - q)ᵀ H (w - q)`` for ``[G, m, d]`` weights: ``[G, m]``."""
    diff = (w - q).double()
    return (torch.bmm(diff, h.double()) * diff).sum(-1)


def grid_of(layer: QuantLayer) -> tuple[Tensor, Tensor, int, int, bool]:
    """The layer's calibrated weight grid: ``(scale, zero_point, qmin, qmax, per_channel)``."""
    fq = layer.weight_quantizer
    return fq.scale.detach(), fq.zero_point.detach(), fq.scheme.qmin, fq.scheme.qmax, fq.scheme.per_channel


def _targets(report) -> list[str]:
    return [info.name for info in report.layers if info.wbits != 32]


def run_layerwise(
    model: nn.Module, calib: Tensor, config: LayerwiseConfig, solve: LayerSolver, progress: ProgressFn | None = None
) -> QuantResult:
    """Prepare, solve every quantized layer's weights with `solve`, then calibrate activations.

    Returns:
        A `QuantResult` whose ``extras["layer_solutions"]`` holds the solver's per-layer records.
    """
    t0 = time.perf_counter()
    qmodel, report = prepare(model, config.quant, calib[:8])
    calibrate_weights(qmodel)
    set_quant_state(qmodel, False, False)
    names = _targets(report)
    t1 = time.perf_counter()
    grams: dict[str, Tensor] = {}
    if config.inputs == "float" and names:
        emit(progress, ProgressEvent("inputs", 0, 1, message="layer input statistics"))
        grams = cached_grams(model, calib, names, lambda todo: capture_grams(qmodel, todo, calib, config.batch_size))
    t2 = time.perf_counter()
    records, capture_s = [], t2 - t1
    for i, name in enumerate(names):
        layer = qmodel.get_submodule(name)
        tc = time.perf_counter()
        h = grams.pop(name) if name in grams else capture_grams(qmodel, [name], calib, config.batch_size, name)[name]
        capture_s += time.perf_counter() - tc
        ts = time.perf_counter()
        rec = solve(name, layer, h, i)
        rec = {"name": name, "seconds": time.perf_counter() - ts, **rec}
        records.append(rec)
        layer.set_quant_state(True, False)
        emit(
            progress,
            ProgressEvent(
                "solve",
                i + 1,
                len(names),
                unit=name,
                unit_index=i,
                num_units=len(names),
                losses={k: rec[k] for k in ("error", "rtn_error") if k in rec},
            ),
        )
    t3 = time.perf_counter()

    def on_batch(i: int, n: int) -> None:
        emit(progress, ProgressEvent("calibrate", i + 1, n, message="activation ranges"))

    if any(not layer.act_quantizer.scheme.is_float for _, layer in quant_layers(qmodel)):
        calibrate_activations(qmodel, calib, config.batch_size, on_batch)
    set_quant_state(qmodel, True, True)
    timings = {
        "prepare": t1 - t0,
        "inputs": capture_s,
        "solve": t3 - t2 - (capture_s - (t2 - t1)),
        "activations": time.perf_counter() - t3,
    }
    return QuantResult(qmodel, config, report, timings=timings, extras={"layer_solutions": records})

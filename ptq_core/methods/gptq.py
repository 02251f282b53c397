"""GPTQ (Frantar et al., 2022): the standard layer-wise second-order solver, COMQ's yardstick.

Each quantized layer's weights are rounded column by column on its per-channel grid,
the rounding error fed back into the columns still to come through the inverse
Hessian ``H⁻¹`` (``H = XᵀX``, 1 % damping, lazy updates in blocks of 128 columns,
optional act-order). Inputs come by default from the partially quantized model
(each layer sees the layers before it already solved), as GPTQ's sequential
driver does; ``inputs="float"`` takes them from the float model instead.
Weight-only by default; activations, if quantized, are calibrated afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ..errors import ConfigError
from ..layerwise.gptq import gptq_solve
from ..layerwise.gram import weight_groups
from ..layerwise.quantizers import CodeQuantizer
from ..modules import QuantLayer
from ..settings import setting
from .base import ProgressFn, QuantResult, register_method
from .layerwise_base import LayerwiseConfig, grid_of, layer_error, run_layerwise

__all__ = ["GPTQConfig", "gptq"]


@dataclass
class GPTQConfig(LayerwiseConfig):
    """GPTQ settings (the paper's defaults)."""

    method = "gptq"
    inputs: str = setting(
        "quantized",
        help="each layer's inputs from the float model or from the partly quantized one",
        choices=("float", "quantized"),
    )
    percdamp: float = setting(0.01, help="damping added to H's diagonal, as a fraction of its mean", min=0)
    block: int = setting(128, help="columns per lazy-update block", min=1)
    act_order: bool = setting(False, help="quantize columns by decreasing H_jj")

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.percdamp < 1:
            raise ConfigError(f"percdamp must be in [0, 1), got {self.percdamp!r}")
        if not isinstance(self.block, int) or isinstance(self.block, bool) or self.block < 1:
            raise ConfigError(f"block must be a positive integer, got {self.block!r}")


def _solver(config: GPTQConfig):
    def solve(name: str, layer: QuantLayer, h: Tensor, index: int) -> dict[str, Any]:
        scale, zp, qmin, qmax, _ = grid_of(layer)
        w = weight_groups(layer).detach()
        codes = gptq_solve(
            w, h, scale, zp, qmin, qmax, percdamp=config.percdamp, block=config.block, act_order=config.act_order
        )
        rtn = layer.weight_quantizer(layer.weight.detach())
        layer.weight_quantizer = CodeQuantizer(layer.weight_quantizer, codes.reshape(layer.weight.shape), scale, zp)
        q = layer.weight_quantizer(layer.weight.detach())
        err = float(layer_error(w, weight_groups(layer, q), h).sum())
        rtn_err = float(layer_error(w, weight_groups(layer, rtn), h).sum())
        return {"error": err, "rtn_error": rtn_err, "weight_error": float((q - layer.weight.detach()).norm())}

    return solve


@register_method(GPTQConfig)
def gptq(model: nn.Module, calib: Tensor, config: GPTQConfig, progress: ProgressFn | None = None) -> QuantResult:
    """Solve every quantized layer's codes by GPTQ, then calibrate activations if any are quantized."""
    return run_layerwise(model, calib, config, _solver(config), progress)

"""AdaRound (Nagel et al., ICML 2020; docs/methods.md): learned rounding, layer by layer.

Every quantized layer is a unit of its own. Its weights' rounding directions are
learned so that the layer, fed the partly quantized model's input (quantized by
its own input quantizer, whose range comes from the spec's activation observer as in RTN),
reproduces the float layer's output. Activation ranges are not learned.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..recon import ReconOptions
from .base import ProgressFn, QuantResult, register_method
from .recon_base import ReconMethodConfig, run_reconstruction

__all__ = ["AdaRoundConfig", "adaround"]


@dataclass
class AdaRoundConfig(ReconMethodConfig):
    """Layer-wise AdaRound (paper preset: 20 000 steps, batch 32, lr 1e-3, lambda 0.01 / 0.1 MobileNetV2)."""

    method = "adaround"

    def passes(self, model: nn.Module) -> list[ReconOptions]:
        return [
            self.base_options(
                model, stage="weights", granularity="layer", learn_rounding=True, quant_act=True, act_init="keep"
            )
        ]


@register_method(AdaRoundConfig)
def adaround(
    model: nn.Module, calib: torch.Tensor, config: AdaRoundConfig, progress: ProgressFn | None = None
) -> QuantResult:
    """Layer-wise adaptive rounding over a prepared copy of `model`."""
    return run_reconstruction(model, calib, config, progress)

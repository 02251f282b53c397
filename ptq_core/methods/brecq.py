"""BRECQ (Li et al., ICLR 2021; docs/methods.md): block reconstruction, then step sizes.

Pass 1 learns the rounding of every block's weights jointly with activations in
float (stem and head layer by layer), minimising the block-output MSE or, with
``loss="fisher"``, the Fisher-diagonal-weighted error ``sum (dz)^2 g^2`` where
``g = |dKL/dz| + 1`` comes from the real rest of the network. Pass 2 switches
activations on and learns their step sizes (LSQ, Adam 4e-4 with cosine decay,
5 000 steps, p = 2.4) by the same reconstruction.

``act_aware_rounding`` learns the rounding with the activations already quantized
(MSE-search ranges), as AdaRound and QDrop do, instead of in float as BRECQ's
released code does. At W2A2 this matters more than anything else in BRECQ's recipe, more
than the Fisher loss or more step-size steps (`benchmarks/recon_order.py`; the figures are in
benchmarks/RESULTS.md).

At 2-bit activations on MobileNetV2 the decoupled recipe breaks down, as QDrop's paper
reports for BRECQ at W2A2: stage 2 re-observes each unit's ranges on the quantized model,
whose activations shrink block after block, and the step sizes cannot climb back
(`benchmarks/brecq_a2.py` compares keeping RTN's ranges, re-observing them, a larger
step-size lr and QDrop; see benchmarks/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from ..recon import ReconOptions
from ..settings import setting
from .base import ProgressFn, QuantResult, register_method
from .recon_base import ReconMethodConfig, run_reconstruction

__all__ = ["BRECQConfig", "brecq"]


@dataclass
class BRECQConfig(ReconMethodConfig):
    """BRECQ settings."""

    method = "brecq"
    FAST_EXTRA: ClassVar[dict[str, Any]] = {"act_iters": 200}

    loss: str = setting(
        "mse",
        help="reconstruction loss: mse (the released script's default) or the Fisher-diagonal weighted one",
        choices=("mse", "fisher"),
    )
    act_iters: int = setting(5000, help="steps per unit of the step-size pass (0 skips it)", min=0)
    act_lr: float = setting(4e-4, help="Adam learning rate of the activation step sizes", min=0)
    act_p: float = setting(2.4, help="exponent of the step-size pass's reconstruction loss", min=0)
    act_aware_rounding: bool = setting(
        False, help="learn the rounding with activations quantized (the released code learns it in float)"
    )

    def validate(self) -> None:
        if self.loss not in ("mse", "fisher"):
            raise ConfigError(f"BRECQ loss must be 'mse' or 'fisher', got {self.loss!r}")
        if not isinstance(self.act_iters, int) or self.act_iters < 0:
            raise ConfigError(f"act_iters must be a non-negative integer, got {self.act_iters!r}")
        super().validate()

    def needs_logits(self) -> bool:
        return self.loss == "fisher"

    def passes(self, model: nn.Module) -> list[ReconOptions]:
        out = [
            self.base_options(
                model, stage="weights", learn_rounding=True, quant_act=self.act_aware_rounding, rec_loss=self.loss
            )
        ]
        if self.act_iters:
            out.append(
                self.base_options(
                    model,
                    stage="activations",
                    iters=self.act_iters,
                    learn_rounding=False,
                    learn_act_scale=True,
                    quant_act=True,
                    act_init="unit",
                    act_lr=self.act_lr,
                    rec_loss=self.loss,
                    p=self.act_p,
                )
            )
        return out


@register_method(BRECQConfig)
def brecq(
    model: nn.Module, calib: torch.Tensor, config: BRECQConfig, progress: ProgressFn | None = None
) -> QuantResult:
    """Block reconstruction of the rounding, then of the activation step sizes."""
    return run_reconstruction(model, calib, config, progress)

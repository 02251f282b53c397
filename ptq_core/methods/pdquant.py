"""PD-Quant (Liu et al., CVPR 2023; docs/methods.md): prediction difference plus distribution correction.

QDrop's block reconstruction (mixing with probability 0.5, in-block dropping)
plus the KL divergence between the float model's softened prediction and the
one obtained when the quantized block's output runs through the real rest of the
network (later units in float), weighted 1 / lambda_r. With ``dc`` on, the float
inputs are first corrected toward the block's BatchNorm running statistics and
the targets recomputed on them (`ptq_core.recon.correction`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from ..recon import ReconOptions, arch_value
from ..settings import setting
from .base import ProgressFn, QuantResult, register_method
from .recon_base import ReconMethodConfig, run_reconstruction

__all__ = ["PDQuantConfig", "pdquant"]


@dataclass
class PDQuantConfig(ReconMethodConfig):
    """PD-Quant settings (paper: V lr 3e-3, step-size lr 4e-5, lambda_r 0.1, DC 500 steps at lr 1e-3)."""

    method = "pdquant"
    FAST_EXTRA: ClassVar[dict[str, Any]] = {"round_lr": 3e-2, "act_lr": 4e-4, "dc_steps": 25, "dc_lr": 2e-2}

    round_lr: float = setting(3e-3, help="Adam learning rate of the AdaRound variables", min=0)
    drop_prob: float = setting(0.5, help="probability that an activation takes its float value", min=0, max=1)
    act_lr: float = setting(4e-5, help="Adam learning rate of the activation step sizes", min=0)
    lambda_r: float = setting(0.1, help="the prediction-difference KL term is weighted 1 / lambda_r", min=0)
    temperature: float | None = setting(
        None, help="softmax temperature T of the KL term (unset: the architecture table)", min=0
    )
    dc: bool = setting(True, help="distribution correction of the float targets")
    dc_lambda: float | None = setting(
        None, help="distribution correction lambda_c (unset: the architecture table)", min=0
    )
    dc_steps: int = setting(500, help="Adam steps of the distribution correction", min=0)
    dc_lr: float = setting(1e-3, help="initial learning rate of the distribution correction", min=0)
    dc_chunk: int = setting(1024, help="samples corrected at once (memory only; results do not depend on it)", min=1)

    def validate(self) -> None:
        if not self.lambda_r > 0:
            raise ConfigError(f"lambda_r must be positive, got {self.lambda_r}")
        super().validate()

    def needs_logits(self) -> bool:
        return True

    def passes(self, model: nn.Module) -> list[ReconOptions]:
        t = self.temperature if self.temperature is not None else arch_value(model, "temperature")
        lam_c = self.dc_lambda if self.dc_lambda is not None else arch_value(model, "dc_lambda")
        return [
            self.joint_block_options(
                model,
                self.act_lr,
                drop_prob=self.drop_prob,
                kl_weight=1.0 / self.lambda_r,
                temperature=t,
                dc=self.dc,
                dc_lambda=lam_c,
                dc_steps=self.dc_steps,
                dc_lr=self.dc_lr,
                dc_chunk=self.dc_chunk,
            )
        ]


@register_method(PDQuantConfig)
def pdquant(
    model: nn.Module, calib: torch.Tensor, config: PDQuantConfig, progress: ProgressFn | None = None
) -> QuantResult:
    """Block reconstruction with the prediction-difference KL and (optionally) DC."""
    return run_reconstruction(model, calib, config, progress)

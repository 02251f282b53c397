"""QDrop (Wei et al., ICLR 2022; docs/methods.md): block reconstruction with random dropping.

Rounding and activation step sizes are learned together, block by block. Each
element of the block input is the quantized-model value or, with probability
``drop_prob``, the float one; inside the block every activation quantizer keeps
the float value with the same probability. After the block, dropping stops.
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

__all__ = ["QDropConfig", "qdrop"]


@dataclass
class QDropConfig(ReconMethodConfig):
    """QDrop settings (paper: p 0.5, step-size lr 4e-5 with cosine decay, V lr 1e-3)."""

    method = "qdrop"
    FAST_EXTRA: ClassVar[dict[str, Any]] = {"act_lr": 4e-4}

    drop_prob: float = setting(0.5, help="probability that an activation takes its float value", min=0, max=1)
    act_lr: float = setting(4e-5, help="Adam learning rate of the activation step sizes", min=0)

    def validate(self) -> None:
        if not 0.0 <= self.drop_prob <= 1.0:
            raise ConfigError(f"drop_prob must be in [0, 1], got {self.drop_prob}")
        super().validate()

    def passes(self, model: nn.Module) -> list[ReconOptions]:
        return [self.joint_block_options(model, self.act_lr, drop_prob=self.drop_prob)]


@register_method(QDropConfig)
def qdrop(
    model: nn.Module, calib: torch.Tensor, config: QDropConfig, progress: ProgressFn | None = None
) -> QuantResult:
    """Block reconstruction of rounding and step sizes with QDrop's dropping."""
    return run_reconstruction(model, calib, config, progress)

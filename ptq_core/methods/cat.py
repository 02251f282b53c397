"""CAT stage 1 as a method (docs/methods.md): any base method, then step-size / zero-point refinement.

``cat_refine`` runs its base method (``base``, e.g. "pdquant" as in the paper's
pipeline, or rtn, brecq, qdrop, ...) with the same quantization settings,
calibration images and seed, then tunes every step size and zero point to
minimise the temperature-softened KL to the float model's predictions plus the
drift regulariser (`ptq_core.cat.refine`). CAT's stage 2, the cluster-wise logit
correction, is added after any method by the pipeline (``cat=CATOptions()``, CLI ``--cat``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from ..cat.refine import RefineOptions, refine_qparams
from ..errors import ConfigError
from ..settings import setting
from .base import METHODS, MethodConfig, ProgressFn, QuantResult, quantize, register_method
from .recon_base import PRESETS, ReconMethodConfig

__all__ = ["CATRefineConfig", "cat_refine"]


@dataclass
class CATRefineConfig(MethodConfig):
    """CAT stage 1: a base method, then KL-driven refinement of step sizes and zero points."""

    method = "cat_refine"

    base: str = setting("pdquant", help="the method that quantizes first (rtn, brecq, qdrop, pdquant, ...)")
    base_preset: str = setting("fast", help="preset of a reconstruction base method", choices=PRESETS)
    iters: int = setting(500, help="refinement steps (Adam) in all", min=1)
    refine_batch: int = setting(32, help="images per refinement step", min=1)
    lambda_p: float = setting(0.01, help="weight of the drift regulariser on step sizes and zero points", min=0)
    temperature: float | None = setting(
        None, help="softmax temperature T (unset: 4 for ResNets, 1 for MobileNetV2)", min=0
    )
    scale_lr: float = setting(1e-3, help="learning rate of the log step sizes", min=0)
    zp_lr: float = setting(1e-2, help="learning rate of the zero points", min=0)
    refine_weights: bool = setting(True, help="refine the weight quantizers")
    refine_acts: bool = setting(True, help="refine the activation quantizers")

    def validate(self) -> None:
        if self.base == self.method or self.base not in METHODS:
            others = ", ".join(m for m in METHODS if m != self.method)
            raise ConfigError(f"cat_refine base must be one of {others}, got {self.base!r}")
        if self.base_preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.base_preset!r}: choose one of {', '.join(PRESETS)}")
        self.refine_options()  # validates the stage-1 settings

    def base_config(self) -> MethodConfig:
        """The base method's config with this run's quantization settings, calibration size and seed."""
        cls = METHODS[self.base][0]
        shared = dict(quant=self.quant, calib=self.calib, batch_size=self.batch_size, seed=self.seed)
        if issubclass(cls, ReconMethodConfig):
            return cls.from_preset(self.base_preset, **shared)
        return cls(**shared)

    def refine_options(self) -> RefineOptions:
        """The `RefineOptions` of stage 1."""
        return RefineOptions(
            iters=self.iters,
            batch_size=self.refine_batch,
            lambda_p=self.lambda_p,
            temperature=self.temperature,
            scale_lr=self.scale_lr,
            zp_lr=self.zp_lr,
            weights=self.refine_weights,
            acts=self.refine_acts,
            seed=self.seed,
        )


@register_method(CATRefineConfig)
def cat_refine(
    model: nn.Module, calib: torch.Tensor, config: CATRefineConfig, progress: ProgressFn | None = None
) -> QuantResult:
    """Run the base method, then refine its quantization parameters (the caller's model is only read)."""
    base = quantize(model, calib, config.base_config(), progress)
    t0 = time.perf_counter()
    report = refine_qparams(base.model, model, calib, config.refine_options(), progress)
    timings = {**base.timings, "base": base.seconds, "refine": time.perf_counter() - t0}
    extras = {**base.extras, "base_method": config.base, "refine": report.to_dict()}
    return QuantResult(base.model, config, base.report, timings=timings, extras=extras)

"""Settings of one reconstruction pass over a model's units.

A method is a short recipe of one or two passes: AdaRound is one layer-wise pass
learning rounding; BRECQ a block pass learning rounding with activations off,
then a block pass learning activation step sizes; QDrop one block pass with
dropping; PD-Quant the same plus the prediction-difference KL and distribution
correction; RepAPQ one block pass with the MAE loss, the protecting affine and the
stage-output term. Everything a pass needs is in `ReconOptions`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError

__all__ = ["ReconOptions", "REC_LOSSES"]

REC_LOSSES = ("mse", "mae", "fisher", "none")


@dataclass
class ReconOptions:
    """One pass of unit-by-unit reconstruction (docs/methods.md).

    Attributes:
        stage: Label of the pass in progress events and history ("weights", "acts", ...).
        granularity: "block" (units from `reconstruction_units`) or "layer" (every layer).
        iters: Optimisation steps per unit.
        batch_size: Samples per step.
        learn_rounding: Learn AdaRound rounding variables of the unit's weights.
        learn_act_scale: Learn the unit's activation step sizes (LSQ).
        quant_act: Activations quantized during (and after) this pass.
        act_init: "unit" re-observes the unit's activation ranges on its cached quantized
            input (weights quantized) before training; "keep" leaves them as they are.
        round_lr: Adam learning rate of the rounding variables.
        act_lr: Adam learning rate of the step sizes (cosine decay to 0).
        round_weight: AdaRound regulariser weight lambda.
        warmup: Fraction of steps with the regulariser off (beta held at its start).
        beta_start, beta_end: Regulariser exponent, annealed linearly after the warm-up.
        rec_loss: "mse" (|.|^p summed over channels), "mae" (|.| summed over channels),
            "fisher" (BRECQ) or "none".
        p: Exponent of the "mse" loss (2 = MSE; BRECQ's activation pass uses 2.4).
        drop_prob: QDrop: probability that an element of the unit input takes its float
            value instead of the quantized one, and that an in-block activation quantizer
            keeps the float value (0 = off).
        kl_weight: PD-Quant prediction-difference weight (1 / lambda_r; 0 = off).
        temperature: Softmax temperature T of the KL term.
        dc: PD-Quant distribution correction of the float targets.
        dc_lambda: lambda_c, weight of ``||x' - x||^2`` is ``1 / lambda_c``.
        dc_steps: Adam steps of the correction.
        dc_lr: Adam learning rate of the correction (ReduceLROnPlateau, patience 100).
        dc_group: Samples per correction group; the loss and the learning-rate schedule
            are those of the authors' batch of this size.
        dc_chunk: Samples corrected at once (any multiple of `dc_group`; memory only).
        affine: RepAPQ: train a per-output-channel affine ``g * out + h`` on every quantized
            layer of the unit, folded into its weight scales and bias afterwards (`affine`).
        affine_lr: Adam learning rate of g and h (cosine decay to 0).
        stage_weight: RepAPQ's lambda_s: weight of the loss on the enclosing stage's output
            (the unit's output run through the stage's later blocks; 0 = off; `stage`).
        progress_every: Steps between progress events and loss-history points (0 = auto).
        cache: "auto" (device when it fits, else host memory), "device" or "host".
        cache_budget_mb: Memory one unit's cache may take in each memory tier (device, then host
            memory); beyond it, tensors go to memory-mapped temporary files (0 = no limit; `spill`).
    """

    stage: str = "reconstruct"
    granularity: str = "block"
    iters: int = 20000
    batch_size: int = 32
    learn_rounding: bool = True
    learn_act_scale: bool = False
    quant_act: bool = True
    act_init: str = "keep"
    round_lr: float = 1e-3
    act_lr: float = 4e-5
    round_weight: float = 0.01
    warmup: float = 0.2
    beta_start: float = 20.0
    beta_end: float = 2.0
    rec_loss: str = "mse"
    p: float = 2.0
    drop_prob: float = 0.0
    kl_weight: float = 0.0
    temperature: float = 1.0
    dc: bool = False
    dc_lambda: float = 0.02
    dc_steps: int = 500
    dc_lr: float = 1e-3
    dc_group: int = 32
    dc_chunk: int = 1024
    affine: bool = False
    affine_lr: float = 1e-3
    stage_weight: float = 0.0
    progress_every: int = 0
    cache: str = "auto"
    cache_budget_mb: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `ConfigError` on an out-of-range setting."""
        _choice("granularity", self.granularity, ("block", "layer"))
        _choice("act_init", self.act_init, ("keep", "unit"))
        _choice("rec_loss", self.rec_loss, REC_LOSSES)
        _choice("cache", self.cache, ("auto", "device", "host"))
        for name in ("iters", "batch_size", "dc_group", "dc_chunk"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not isinstance(self.dc_steps, int) or self.dc_steps < 0:
            raise ConfigError(f"dc_steps must be a non-negative integer, got {self.dc_steps!r}")
        if not 0.0 <= self.drop_prob <= 1.0:
            raise ConfigError(f"drop_prob must be in [0, 1], got {self.drop_prob}")
        if not 0.0 <= self.warmup < 1.0:
            raise ConfigError(f"warmup must be in [0, 1), got {self.warmup}")
        for name in ("round_lr", "act_lr", "temperature", "dc_lambda", "dc_lr", "p", "affine_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("round_weight", "kl_weight", "stage_weight", "cache_budget_mb"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be non-negative, got {getattr(self, name)}")
        if self.rec_loss == "none" and self.kl_weight == 0:
            raise ConfigError("with rec_loss 'none' the KL term must be on (kl_weight > 0)")

    @property
    def uses_remainder(self) -> bool:
        """Whether the pass runs the rest of the network (KL term or Fisher weights)."""
        return self.kl_weight > 0 or self.rec_loss == "fisher"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")

"""One optimisation step's loss terms for one unit.

- QDrop mixing: ``x_in = x_float`` with probability p, else ``x_q`` (``x_float`` is ``x_dc`` with DC);
- one pass ``out = unit([x_in; x_q])`` (the second half only with the KL term);
- ``rec = loss(out[:B], y)`` with ``y = y_dc`` with DC, else ``y_fp``;
- ``stage = lambda_s * loss(rest_of_stage(out[:B]), y_stage)`` (RepAPQ's across-block term);
- ``kl = w_kl * KL(softmax(z_fp / T) || softmax(remainder(out[B:]) / T))``;
- ``round = lambda * sum(1 - |2h - 1|^beta)`` after the warm-up.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..primitives import bernoulli_mask, qdrop_mix
from .cache import UnitCache
from .losses import prediction_kl, reconstruction_loss
from .options import ReconOptions
from .remainder import LogitsFn, logits_with_unit_output
from .rounding import AdaRoundQuantizer, RoundingSchedule, rounding_regularizer

__all__ = ["StepInputs", "step_losses"]


@dataclass
class StepInputs:
    """What a step reads: the model, the unit, its cache and the KL targets."""

    qmodel: nn.Module
    name: str
    unit: nn.Module
    cache: UnitCache
    images: Tensor
    fp_logits: Tensor | None
    rounders: list[AdaRoundQuantizer]
    logits: LogitsFn | None = None  # (name, images, unit output, skips) -> logits; default: full forward
    stage_rest: nn.Module | None = None  # the enclosing stage's later blocks (stage term on)


def _sources(cache: UnitCache) -> tuple[str, str]:
    """(float input to mix with, reconstruction target)."""
    return ("x_dc", "y_dc") if "y_dc" in cache else ("x_fp", "y_fp")


def step_losses(
    inp: StepInputs, idx: Tensor, opts: ReconOptions, schedule: RoundingSchedule, step: int
) -> dict[str, Tensor]:
    """Loss terms of one step on samples `idx`; "total" is what is minimised.

    Args:
        inp: The unit and its data.
        idx: Sample indices [B] (on the cache's device).
        opts: The pass's settings.
        schedule: Regulariser warm-up and beta.
        step: 1-based step number.

    Returns:
        {"rec", "stage", "kl", "round", "total"} (only the terms that are on), 0-d tensors.
    """
    x_src, y_src = _sources(inp.cache)
    x_q, y = inp.cache.take(idx, "x_q", y_src)  # [B, ...]
    x_in = x_q
    if opts.drop_prob > 0:
        (x_f,) = inp.cache.take(idx, x_src)
        x_in = qdrop_mix(x_q, x_f, bernoulli_mask(x_q, opts.drop_prob))
    use_kl = opts.kl_weight > 0
    out = inp.unit(torch.cat([x_in, x_q]) if use_kl else x_in)
    b = len(idx)
    losses: dict[str, Tensor] = {}
    if opts.rec_loss != "none":
        grad = inp.cache.take(idx, "grad")[0] if opts.rec_loss == "fisher" else None
        losses["rec"] = reconstruction_loss(out[:b], y, opts.rec_loss, opts.p, grad)
    if inp.stage_rest is not None:
        (y_stage,) = inp.cache.take(idx, "y_stage")
        kind = "mae" if opts.rec_loss == "mae" else "mse"
        losses["stage"] = opts.stage_weight * reconstruction_loss(inp.stage_rest(out[:b]), y_stage, kind, opts.p)
    if use_kl:
        dev_idx = idx if idx.device == inp.images.device else idx.to(inp.images.device)
        images = inp.images[dev_idx]
        if inp.logits is not None:
            skips = inp.cache.take(idx, *inp.cache.skips) if inp.cache.skips is not None else None
            logits = inp.logits(inp.name, images, out[b:], skips)
        else:
            logits = logits_with_unit_output(inp.qmodel, inp.name, images, out[b:])
        losses["kl"] = opts.kl_weight * prediction_kl(logits, inp.fp_logits[dev_idx], opts.temperature)
    if inp.rounders and schedule.active(step) and opts.round_weight > 0:
        losses["round"] = opts.round_weight * rounding_regularizer(inp.rounders, schedule.beta(step))
    losses["total"] = sum(losses.values())  # type: ignore[assignment]
    return losses

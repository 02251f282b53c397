"""Reconstruction losses, each switchable (docs/methods.md).

- "mse": ``|pred - target|^p`` summed over channels, averaged over the batch and
  positions (p = 2 in AdaRound/BRECQ/QDrop/PD-Quant; 2.4 in BRECQ's activation pass).
- "mae": ``|pred - target|`` summed over channels, averaged over the rest (RepAPQ): the
  mean absolute error times the channel count, on the same scale convention as "mse",
  so the AdaRound regulariser weight keeps its meaning.
- "fisher": BRECQ's Fisher-diagonal weighting ``(pred - target)^2 * g^2`` summed over
  channels, averaged over the rest; g = |dKL/dz| + 1 from `remainder.fisher_weights`.
- prediction difference: ``KL(softmax(z_fp / T) || softmax(z_q / T))``, batch mean,
  no T^2 factor (PD-Quant).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["channel_dim", "reconstruction_loss", "prediction_kl"]


def channel_dim(t: Tensor) -> int:
    """Channel axis: 1 for [B, C] and [B, C, H, W]; last for token tensors [B, N, D]."""
    return -1 if t.dim() == 3 else 1


def reconstruction_loss(
    pred: Tensor, target: Tensor, kind: str = "mse", p: float = 2.0, grad: Tensor | None = None
) -> Tensor:
    """Distance between a unit's quantized and float outputs.

    Args:
        pred: Quantized unit output [B, ...].
        target: Float target, same shape.
        kind: "mse", "mae" or "fisher".
        p: Exponent of "mse".
        grad: Fisher weights g, same shape (only for "fisher").

    Returns:
        0-d loss tensor.
    """
    diff = pred - target
    if kind == "mae":
        err = diff.abs()
    elif kind == "fisher":
        if grad is None:
            raise ValueError("the Fisher loss needs the cached gradient weights")
        err = diff.square() * grad.square()
    else:
        err = diff.square() if p == 2.0 else diff.abs().pow(p)
    if err.dim() < 2:
        return err.mean()
    return err.sum(channel_dim(err)).mean()


def prediction_kl(logits_q: Tensor, logits_fp: Tensor, temperature: float = 1.0) -> Tensor:
    """``KL(softmax(logits_fp / T) || softmax(logits_q / T))`` averaged over the batch."""
    log_q = F.log_softmax(logits_q / temperature, dim=1)
    p_fp = F.softmax(logits_fp / temperature, dim=1)
    return F.kl_div(log_q, p_fp, reduction="batchmean")

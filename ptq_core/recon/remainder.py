"""The rest of the network after a unit, run for real.

PD-Quant's KL term and BRECQ's Fisher weights need the logits that follow from a
given unit output. Chaining the later modules in a straight line breaks on
residual networks (skips are dropped or the chain crashes), so instead the whole
model runs forward with the unit swapped for a stub that returns the given
output: every later add, concatenation, pooling and flatten happens exactly as in
the model's own `forward`. Tensors computed before the unit carry no gradient, so
the backward pass only touches the remainder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from .losses import prediction_kl

__all__ = ["LogitsFn", "unit_output_replaced", "logits_with_unit_output", "fisher_weights", "float_logits"]

# (unit name, images, unit output, cached values crossing the unit's cut or None) -> logits
LogitsFn = Callable[[str, Tensor, Tensor, "list[Tensor] | None"], Tensor]


class _Given(nn.Module):
    """Stands in for a unit and returns a fixed tensor, whatever it is called with."""

    def __init__(self, value: Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, *_args: Any, **_kwargs: Any) -> Tensor:
        return self.value.clone()  # later in-place ops (ReLU(inplace=True)) must not touch the given tensor


@contextmanager
def unit_output_replaced(model: nn.Module, name: str, value: Tensor) -> Iterator[None]:
    """Within the block, submodule `name` of `model` returns `value` (restored on exit)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    original = parent._modules[child]
    parent._modules[child] = _Given(value)
    try:
        yield
    finally:
        parent._modules[child] = original


def logits_with_unit_output(model: nn.Module, name: str, images: Tensor, unit_out: Tensor) -> Tensor:
    """Logits of `model` on `images` when unit `name` outputs `unit_out` (same batch).

    Everything before the unit runs in the model's current state; everything after
    it runs as the model's forward does, in each module's current quantization
    state (float for units not reconstructed yet).

    Args:
        model: The (prepared) network.
        name: Dotted name of the unit.
        images: Network inputs [B, ...].
        unit_out: The unit's output for those inputs [B, ...].

    Returns:
        Logits [B, classes]; differentiable with respect to `unit_out`.
    """
    with unit_output_replaced(model, name, unit_out):
        return model(images)


@torch.no_grad()
def float_logits(model: nn.Module, images: Tensor, batch_size: int = 256) -> Tensor:
    """Logits of a float model on every image [N, classes]."""
    return torch.cat([model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def fisher_weights(
    model: nn.Module,
    name: str,
    unit_in: Tensor,
    images: Tensor,
    fp_logits: Tensor,
    batch_size: int = 32,
    logits_fn: LogitsFn | None = None,
    skips: list[Tensor] | None = None,
) -> Tensor:
    """BRECQ's Fisher-diagonal weights ``g = |dKL(p_fp || p_q) / dz| + 1`` per output element.

    The unit runs in its current (quantized) state on its float input; the KL's
    gradient with respect to its output z comes back through the real remainder.

    Args:
        model: The prepared network (the unit quantized, later units float).
        name: Dotted name of the unit.
        unit_in: The unit's float inputs [N, ...] (any device).
        images: Network inputs [N, ...] on the model's device.
        fp_logits: Float logits [N, classes] on the model's device.
        batch_size: Batch of the KL's batch mean (32 in BRECQ).
        logits_fn: ``(name, images, unit_out, skips) -> logits`` (default: `logits_with_unit_output`).
        skips: Cached values crossing the unit's cut [N, ...] each, for `logits_fn` (`TailRunner`).

    Returns:
        Weights [N, *unit output shape] on `unit_in`'s device.
    """
    unit = model.get_submodule(name)
    logits_fn = logits_fn or (lambda n, x, z, _s: logits_with_unit_output(model, n, x, z))
    out: list[Tensor] = []
    for i in range(0, len(images), batch_size):
        with torch.no_grad():
            z = unit(unit_in[i : i + batch_size].to(images.device))
        z.requires_grad_(True)
        part = None if skips is None else [s[i : i + batch_size].to(images.device) for s in skips]
        kl = prediction_kl(logits_fn(name, images[i : i + batch_size], z, part), fp_logits[i : i + batch_size])
        (g,) = torch.autograd.grad(kl, z)
        out.append((g.abs() + 1.0).to(unit_in.device))
    return torch.cat(out)

"""Range calibration: feed observers, then fix every quantizer's scale and zero point."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .modules import quant_layers, set_quant_state

__all__ = ["calibrate_weights", "calibrate_activations", "iterate_batches"]


def iterate_batches(x: torch.Tensor, batch_size: int):
    """Consecutive slices of a stacked tensor."""
    for i in range(0, len(x), batch_size):
        yield x[i : i + batch_size]


@torch.no_grad()
def calibrate_weights(qmodel: nn.Module) -> None:
    """Observe each layer's weight once and set its weight quantizer's qparams."""
    for _, layer in quant_layers(qmodel):
        fq = layer.weight_quantizer
        if fq.scheme.is_float:
            continue
        fq.observer.reset()
        fq.observer(layer.weight.detach())
        fq.calibrate()


@torch.no_grad()
def calibrate_activations(
    qmodel: nn.Module,
    calib: torch.Tensor,
    batch_size: int = 128,
    on_batch: Callable[[int, int], None] | None = None,
) -> None:
    """Observe each layer's input on float activations, then set the act quantizers' qparams.

    Args:
        qmodel: A prepared model.
        calib: Calibration images, stacked, on the model's device.
        batch_size: Forward batch size.
        on_batch: Called with (batch index, number of batches) after each batch.
    """
    layers = [layer for _, layer in quant_layers(qmodel) if not layer.act_quantizer.scheme.is_float]
    set_quant_state(qmodel, False, False)
    for layer in layers:
        layer.act_quantizer.observer.reset()
        layer.act_quantizer.enable_observer(True)
    n = (len(calib) + batch_size - 1) // batch_size
    try:
        for i, xb in enumerate(iterate_batches(calib, batch_size)):
            qmodel(xb)
            if on_batch:
                on_batch(i, n)
    finally:
        for layer in layers:
            layer.act_quantizer.enable_observer(False)
    for layer in layers:
        layer.act_quantizer.calibrate()

"""Gram matrices of layer inputs, captured with scoped hooks over the calibration set.

`capture_grams` runs the model in whatever quantization state it is in: all layers
off gives the float model's inputs (as COMQ's paper does, one pass for every
layer); solved layers switched on gives the partially quantized model's inputs
(GPTQ's sequential reading, one pass per layer that stops right after it).

`gram_cache()` is an opt-in scope in which float-input Gram matrices are kept and
reused by later runs on the same model and calibration tensor (the benchmark uses
it so that every bit-width and method of one model shares one capture).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from ..calibrate import iterate_batches
from ..hooks import StopForward, input_hooks
from .gram import GramAccumulator

__all__ = ["capture_grams", "gram_cache", "cached_grams"]

_CACHE: dict[tuple, Tensor] | None = None


@contextmanager
def gram_cache() -> Iterator[dict[tuple, Tensor]]:
    """Keep float-input Gram matrices for reuse inside the block (off outside it)."""
    global _CACHE
    outer, _CACHE = _CACHE, {} if _CACHE is None else _CACHE
    try:
        yield _CACHE
    finally:
        _CACHE = outer


def _key(owner: nn.Module, calib: Tensor, name: str) -> tuple:
    return (id(owner), calib.data_ptr(), tuple(calib.shape), str(calib.device), name)


def cached_grams(owner: nn.Module, calib: Tensor, names: list[str], compute: Any) -> dict[str, Tensor]:
    """Float-input Gram matrices of `names`, from the cache when a `gram_cache` scope holds them.

    Args:
        owner: The float model the run started from (identifies the cache entry).
        calib: The calibration tensor.
        names: Layers wanted.
        compute: ``compute(names) -> dict`` for the ones not cached.
    """
    if _CACHE is None:
        return compute(names)
    missing = [n for n in names if _key(owner, calib, n) not in _CACHE]
    if missing:
        for n, h in compute(missing).items():
            _CACHE[_key(owner, calib, n)] = h
    return {n: _CACHE[_key(owner, calib, n)] for n in names}


@torch.no_grad()
def capture_grams(
    model: nn.Module, names: list[str], calib: Tensor, batch_size: int, stop_after: str | None = None
) -> dict[str, Tensor]:
    """``H = XᵀX / N`` of the inputs of the named layers, as the model runs now.

    Args:
        model: The network, in the quantization state wanted.
        names: Dotted names of Conv2d / Linear layers.
        calib: Calibration images on the model's device.
        batch_size: Forward batch size.
        stop_after: End each forward pass once this layer has received its input.

    Returns:
        Layer name -> ``[G, d, d]`` float32 Gram matrix on the model's device.
    """
    accs = {n: GramAccumulator(model.get_submodule(n)) for n in names}

    def pre(name: str, args: tuple[Any, ...]) -> None:
        accs[name].add(args[0])
        if name == stop_after:
            raise StopForward

    with input_hooks(model, names, pre):
        for xb in iterate_batches(calib, batch_size):
            try:
                model(xb)
            except StopForward:
                pass
    return {n: a.result() for n, a in accs.items()}

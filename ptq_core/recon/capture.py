"""Scoped capture of one module's input (and output) over the calibration set.

A hook records what the module receives and raises `StopForward`, so the rest
of the network is never run; the hook is always removed again. Captured
tensors go straight into preallocated storage on the chosen device, batch by
batch, so peak memory is the cache itself plus one batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UnsupportedModelError
from ..hooks import StopForward, input_hooks, scoped

# StopForward lives in ptq_core.hooks; re-exported here, where capture code used to find it
__all__ = ["Alloc", "StopForward", "allocator", "capture_io", "probe_io", "module_input_output"]


def _single_tensor(args: tuple[Any, ...], name: str) -> Tensor:
    if len(args) != 1 or not torch.is_tensor(args[0]):
        raise UnsupportedModelError(f"reconstruction unit {name!r} must take exactly one tensor input")
    return args[0]


def module_input_output(model: nn.Module, name: str, x: Tensor, output: bool) -> tuple[Tensor, Tensor | None]:
    """Input (and output) of submodule `name` when `model` runs on `x`; stops right after.

    Args:
        model: The network.
        name: Dotted name of the submodule.
        x: One input batch.
        output: Also run the submodule and return its output.

    Returns:
        ``(input, output or None)``, detached.
    """
    module = model.get_submodule(name)
    seen: dict[str, Tensor] = {}

    def pre(_name: str, args: tuple[Any, ...]) -> None:
        inp = _single_tensor(args, name).detach()
        seen["in"] = inp.clone() if output else inp  # the unit may change its input in place
        if not output:
            raise StopForward

    def post(_m: nn.Module, _args: tuple[Any, ...], out: Tensor) -> None:
        if not torch.is_tensor(out):
            raise UnsupportedModelError(f"reconstruction unit {name!r} must return one tensor")
        seen["out"] = out.detach()
        raise StopForward

    with input_hooks(model, [name], pre), scoped([module.register_forward_hook(post)] if output else []):
        try:
            model(x)
        except StopForward:
            pass
    if "in" not in seen:
        raise UnsupportedModelError(f"reconstruction unit {name!r} is never called by the model's forward")
    return seen["in"], seen.get("out")


@torch.no_grad()
def probe_io(model: nn.Module, name: str, x: Tensor) -> tuple[torch.Size, torch.Size]:
    """Per-sample shapes of the unit's input and output, from one sample."""
    inp, out = module_input_output(model, name, x[:1], output=True)
    return inp.shape[1:], out.shape[1:]


Alloc = Callable[[tuple[int, ...], torch.dtype], Tensor]  # (shape, dtype) -> uninitialised tensor


def allocator(store: torch.device | Alloc, pin: bool = False) -> Alloc:
    """`store` itself when it is an allocator (e.g. `TieredStore.empty`), else one placing tensors on that device."""
    if callable(store):
        return store
    return lambda shape, dtype: torch.empty(shape, dtype=dtype, device=store, pin_memory=pin)


@torch.no_grad()
def capture_io(
    model: nn.Module, name: str, images: Tensor, batch_size: int, output: bool, store: torch.device | Alloc
) -> tuple[Tensor, Tensor | None]:
    """Inputs (and outputs) of submodule `name` for every image, stacked where `store` puts them.

    Args:
        model: The network, in the quantization state wanted.
        name: Dotted name of the submodule.
        images: Network inputs [N, ...] on the model's device.
        batch_size: Forward batch size.
        output: Also capture the submodule's output.
        store: Device the stacked tensors live on (the model's device or host memory), or an
            allocator ``(shape, dtype) -> Tensor`` (a `TieredStore`'s, which may spill to disk).

    Returns:
        ``(inputs [N, ...], outputs [N, ...] or None)``.
    """
    n = len(images)
    ins: Tensor | None = None
    outs: Tensor | None = None
    alloc = allocator(store, pin=not callable(store) and store.type == "cpu" and images.is_cuda)
    for i in range(0, n, batch_size):
        inp, out = module_input_output(model, name, images[i : i + batch_size], output)
        if ins is None:
            ins = alloc((n, *inp.shape[1:]), inp.dtype)
            if out is not None:
                outs = alloc((n, *out.shape[1:]), out.dtype)
        ins[i : i + len(inp)].copy_(inp, non_blocking=ins.is_pinned())
        if outs is not None and out is not None:
            outs[i : i + len(out)].copy_(out, non_blocking=outs.is_pinned())
    if images.is_cuda and any(t is not None and t.is_pinned() for t in (ins, outs)):
        torch.cuda.synchronize()
    assert ins is not None
    return ins, outs

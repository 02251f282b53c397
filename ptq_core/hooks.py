"""Scoped forward hooks: every handle registered for a pass is removed after it.

`StopForward` is what a capture hook raises to end a pass once it has seen what it
wants; the reconstruction engine and the layer-wise solvers both use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["StopForward", "scoped", "traced_forward", "input_hooks"]


class StopForward(Exception):
    """Raised by a capture hook to end a forward pass once the wanted tensors are seen."""


@contextmanager
def scoped(handles: list[RemovableHandle]) -> Iterator[list[RemovableHandle]]:
    """Remove every handle in `handles` (which may grow inside the block) on exit."""
    try:
        yield handles
    finally:
        for h in handles:
            h.remove()


@contextmanager
def input_hooks(
    model: nn.Module, names: Iterable[str], record: Callable[[str, tuple[Any, ...]], None]
) -> Iterator[None]:
    """Within the block, ``record(name, args)`` runs each time submodule `name` is called, before it runs.

    The one way the core captures a layer's input: `args` are the positional inputs of the
    call (``args[0]`` is the layer input). `record` may raise to end the forward pass early.
    Every hook is removed on exit, also on an exception.

    Args:
        model: The network.
        names: Dotted names of the submodules to watch.
        record: Called with the submodule's name and its positional inputs.
    """

    def hook(name: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        return lambda _m, args: record(name, args)

    with scoped([]) as handles:
        for n in names:  # one at a time, so a bad name leaves no hook behind
            handles.append(model.get_submodule(n).register_forward_pre_hook(hook(n)))
        yield


def traced_forward(model: nn.Module, example: torch.Tensor, handles: list[RemovableHandle]) -> torch.Tensor:
    """One no-grad forward pass with the given hooks installed, then the hooks removed."""
    with scoped(handles), torch.no_grad():
        return model(example)

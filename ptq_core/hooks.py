"""Scoped forward hooks: every handle registered for a pass is removed after it.

`StopForward` is what a capture hook raises to end a pass once it has seen what it
wants; the reconstruction engine and the layer-wise solvers both use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["StopForward", "scoped", "traced_forward"]


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


def traced_forward(model: nn.Module, example: torch.Tensor, handles: list[RemovableHandle]) -> torch.Tensor:
    """One no-grad forward pass with the given hooks installed, then the hooks removed."""
    with scoped(handles), torch.no_grad():
        return model(example)

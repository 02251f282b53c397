"""Re-parameterised networks: find the multi-branch blocks and merge each into one conv.

A re-parameterisable block is any module with ``reparameterize()`` (fuse its branches
into one conv, in place) and ``branch_kernels()`` (the zoo's `RepVGGBlock`, or a
MobileOne-style block with the same interface). RepAPQ quantizes the merged network,
the outlier analysis looks at the merged blocks' outputs, and the integer checkpoint
rebuilds the merged form; all three use these two functions.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .errors import ConfigError, UnsupportedModelError

__all__ = ["rep_blocks", "merge_branches"]


def _is_rep_block(m: nn.Module) -> bool:
    return callable(getattr(m, "reparameterize", None)) and callable(getattr(m, "branch_kernels", None))


def rep_blocks(model: nn.Module) -> list[str]:
    """Names of the re-parameterisable blocks (modules with ``reparameterize`` and ``branch_kernels``)."""
    return [n for n, m in model.named_modules() if _is_rep_block(m)]


@torch.no_grad()
def merge_branches(model: nn.Module, example: torch.Tensor | None = None, atol: float = 1e-4) -> nn.Module:
    """A copy of `model` with every re-parameterisable block merged into one conv (the model is not modified).

    Args:
        model: A float model in eval mode, train form or already merged.
        example: Inputs to check that the merged copy computes the same function (optional).
        atol: Tolerance of that check, relative to the largest output magnitude.

    Raises:
        ConfigError: If the model has no re-parameterisable block.
        UnsupportedModelError: If merging changed the outputs.
    """
    names = rep_blocks(model)
    if not names:
        raise ConfigError(
            f"RepAPQ needs a re-parameterisable network (RepVGG / MobileOne-style blocks with "
            f"reparameterize()); {type(model).__name__} has none"
        )
    merged = copy.deepcopy(model).eval()
    for name in names:
        merged.get_submodule(name).reparameterize()
    if example is not None:
        before, after = model(example), merged(example)
        err = float((after - before).abs().max())
        if err > atol * max(1.0, float(before.abs().max())):
            raise UnsupportedModelError(f"merging the branches changed the outputs by {err:.2e}")
    return merged

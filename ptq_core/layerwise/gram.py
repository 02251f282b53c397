"""Layer inputs as rows, and their Gram matrix H = XᵀX.

A layer-wise solver minimises ``||X Wᵀ - X Qᵀ||²`` one layer at a time. Expanding
the square shows that only ``H = XᵀX`` is needed, so memory does not grow with the
number of calibration samples. For a `Conv2d` the rows of X are the im2col
patches (`F.unfold`), ordered like ``weight.reshape(C_out, -1)``; for a `Linear`
every leading dimension (batch, tokens) gives a row. A grouped conv has one H per
group (a depthwise conv has ``C`` of size ``k*k``), so weights are viewed as
``[G, m, d]``: G groups, m output channels per group, d inputs per channel.

Example: a 3x3 conv with 16 input channels and 32 outputs has G=1, m=32, d=144,
and H is 144x144 whatever the number of images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UnsupportedModelError
from ..primitives import channel_rows

__all__ = ["num_groups", "weight_groups", "input_rows", "GramAccumulator"]


def num_groups(layer: nn.Module) -> int:
    """Number of weight groups: ``groups`` of a conv, 1 for a linear layer."""
    return int(getattr(layer, "groups", 1)) if isinstance(layer, nn.Conv2d) else 1


def weight_groups(layer: nn.Module, weight: Tensor | None = None) -> Tensor:
    """The weight (or `weight`) viewed as ``[G, m, d]`` (a view, not a copy)."""
    w = layer.weight if weight is None else weight
    g = num_groups(layer)
    return channel_rows(w, 0).reshape(g, w.shape[0] // g, -1)


def _patches(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """im2col patches ``[B, C_in*k*k, L]`` exactly as the conv sees its input."""
    padding = conv.padding
    if isinstance(padding, str) or conv.padding_mode != "zeros":
        mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        x = F.pad(x, conv._reversed_padding_repeated_twice, mode=mode)
        padding = 0
    return F.unfold(x, conv.kernel_size, conv.dilation, padding, conv.stride)


def input_rows(layer: nn.Module, x: Tensor) -> Tensor:
    """The layer's input as rows per group: ``[G, N, d]``.

    Args:
        layer: A `Conv2d` or `Linear` (or their quantized twins).
        x: What the layer receives in its forward pass.
    """
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, x.shape[-1])[None]
    if isinstance(layer, nn.Conv2d):
        g = num_groups(layer)
        cols = _patches(layer, x)  # [B, C_in*k*k, L]
        rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])  # [B*L, C_in*k*k]
        return rows.reshape(rows.shape[0], g, -1).transpose(0, 1)  # [G, B*L, d]
    raise UnsupportedModelError(f"layer-wise solvers handle Conv2d and Linear, not {type(layer).__name__}")


class GramAccumulator:
    """Running ``H = XᵀX / N`` of one layer's inputs over calibration batches.

    Each batch is multiplied in float32 and summed in float64, so long
    calibration sets lose no precision. ``H`` is returned as float32 ``[G, d, d]``.
    """

    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer
        self.sum: Tensor | None = None
        self.rows = 0

    def add(self, x: Tensor) -> None:
        """Add one batch of the layer's inputs."""
        x = x.detach().float()
        if isinstance(self.layer, nn.Conv2d):  # per image and group: cols cols^T, no transposed copy
            cols = _patches(self.layer, x)  # [B, G*d, L]
            b, g, n = cols.shape[0], num_groups(self.layer), cols.shape[2]
            cols = cols.reshape(b * g, -1, n)
            part = torch.bmm(cols, cols.mT).reshape(b, g, cols.shape[1], cols.shape[1]).sum(0)
            count = b * n
        else:
            rows = input_rows(self.layer, x)  # [1, N, d]
            part, count = torch.bmm(rows.mT, rows), rows.shape[1]
        part = part.double()
        self.sum = part if self.sum is None else self.sum.add_(part)
        self.rows += count

    def result(self) -> Tensor:
        """``H`` averaged over all rows seen."""
        if self.sum is None:
            raise UnsupportedModelError("the layer never received an input during calibration")
        return (self.sum / self.rows).float()

"""The deployable form of a multipoint layer: an expanded conv/linear plus a channel merge.

A channel with n points becomes n output channels of an ordinary layer whose
weights are the points' b-bit integer vectors (so only b-bit weight arithmetic
runs); `ChannelMerge` multiplies each expanded channel by its coefficient, sums
the channels of each original output and adds the bias. For a grouped conv each
group is repeated as often as its points need (its input channels gathered again),
padding with zero points when a group's count is not a multiple of its width; a
depthwise conv therefore needs no padding.

Example: 4 output channels with points (1, 2, 1, 1) give an expanded layer with 5
output channels and a merge that adds channels 1 and 2 into output 1.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ..modules import QuantLayer, quant_layers
from .quantizers import MultipointQuantizer

__all__ = ["ChannelMerge", "MultipointDeploy", "deploy_layer", "deploy_multipoint"]


class ChannelMerge(nn.Module):
    """``y[:, c] = sum_{p: index[p] = c} coeff[p] * z[:, p] + bias[c]`` along dim 1 (or the last dim)."""

    def __init__(self, index: Tensor, coeff: Tensor, channels: int, bias: Tensor | None, dim: int) -> None:
        super().__init__()
        self.register_buffer("index", index.long())
        self.register_buffer("coeff", coeff.float())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.channels, self.dim = channels, dim

    def forward(self, z: Tensor) -> Tensor:
        shape = [1] * z.dim()
        shape[self.dim] = -1
        out_shape = list(z.shape)
        out_shape[self.dim] = self.channels
        out = z.new_zeros(out_shape).index_add_(self.dim, self.index, z * self.coeff.to(z.dtype).reshape(shape))
        return out if self.bias is None else out + self.bias.to(z.dtype).reshape(shape)


class MultipointDeploy(nn.Module):
    """Input quantizer (as in the fake-quant layer), expanded b-bit layer, channel merge."""

    def __init__(
        self, act_quantizer: nn.Module, quant_act: bool, gather: Tensor | None, expanded: nn.Module, merge: ChannelMerge
    ) -> None:
        super().__init__()
        self.act_quantizer, self.quant_act = act_quantizer, quant_act
        self.register_buffer("gather", gather)
        self.expanded, self.merge = expanded, merge

    def forward(self, x: Tensor) -> Tensor:
        if self.quant_act:
            x = self.act_quantizer(x)
        if self.gather is not None:
            x = x.index_select(1, self.gather)
        return self.merge(self.expanded(x))


def _slots(q: MultipointQuantizer, groups: int) -> tuple[list[tuple[int, int]], list[int]]:
    """(channel, point) per expanded channel (-1 for padding), group-major, and replicas per group."""
    out = q.points.numel()
    m = out // groups
    slots, replicas = [], []
    for g in range(groups):
        mine = [(c, p) for c in range(g * m, (g + 1) * m) for p in range(int(q.points[c]))]
        k = -(-len(mine) // m)  # ceil
        slots += mine + [(-1, 0)] * (k * m - len(mine))
        replicas.append(k)
    return slots, replicas


def deploy_layer(layer: QuantLayer) -> MultipointDeploy:
    """The deployable twin of a multipoint layer (same outputs as its fake-quant forward)."""
    q = layer.weight_quantizer
    if not isinstance(q, MultipointQuantizer):
        raise TypeError("deploy_layer needs a layer whose weight quantizer is a MultipointQuantizer")
    groups = getattr(layer, "groups", 1) if isinstance(layer, nn.Conv2d) else 1
    slots, replicas = _slots(q, groups)
    chan = torch.tensor([c for c, _ in slots])
    pt = torch.tensor([p for _, p in slots])
    real = chan >= 0
    codes = q.codes[pt, chan.clamp(min=0)].to(layer.weight.dtype) * real[:, None].to(layer.weight.dtype)
    coeff = q.coeffs[pt, chan.clamp(min=0)] * real.to(q.coeffs.dtype)
    dev = layer.weight.device
    gather = None
    if isinstance(layer, nn.Conv2d):
        in_g = layer.in_channels // groups
        if groups > 1:
            gather = torch.cat([torch.arange(g * in_g, (g + 1) * in_g).repeat(k) for g, k in enumerate(replicas)])
        new_groups = sum(replicas) if groups > 1 else 1
        expanded: nn.Module = nn.Conv2d(
            in_g * new_groups,
            len(slots),
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.dilation,
            new_groups,
            False,
            layer.padding_mode,
        )
        expanded.weight.data = codes.reshape(len(slots), in_g, *layer.kernel_size).to(dev)
    else:
        expanded = nn.Linear(layer.in_features, len(slots), bias=False)
        expanded.weight.data = codes.to(dev)
    merge = ChannelMerge(
        chan.clamp(min=0), coeff, q.points.numel(), layer.bias, 1 if isinstance(layer, nn.Conv2d) else -1
    )
    return MultipointDeploy(
        copy.deepcopy(layer.act_quantizer),
        layer.quant_act,
        None if gather is None else gather.to(dev),
        expanded.to(dev),
        merge.to(dev),
    )


def deploy_multipoint(qmodel: nn.Module) -> nn.Module:
    """A copy of `qmodel` with every multipoint layer replaced by its deployable form."""
    model = copy.deepcopy(qmodel)
    for name, layer in list(quant_layers(model)):
        if isinstance(layer.weight_quantizer, MultipointQuantizer) and layer.quant_weight:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, deploy_layer(layer))
    return model

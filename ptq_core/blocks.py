"""Reconstruction units: the ordered blocks and layers that block-wise PTQ works through.

For each supported architecture, a unit is a residual basic/bottleneck block
(ResNet), an inverted residual (MobileNetV2, MnasNet), a RegNet X/Y block, a
RepVGG block or a transformer encoder block; the quantized layers outside any
block (stem, head, patch embedding, ...) are units of their own, layer by layer.
A model with no known block falls back to one unit per quantized layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .modules import QuantLayer
from .prepare import execution_order

__all__ = ["Unit", "BLOCK_TYPES", "block_types", "reconstruction_units"]


@dataclass
class Unit:
    """One reconstruction unit: a module and the quantized layers inside it."""

    name: str
    kind: str  # "stem", "block", "layer" or "head"
    block_type: str
    layers: list[str] = field(default_factory=list)


def block_types() -> dict[type[nn.Module], str]:
    """Known block classes (ours and torchvision's) -> a readable kind."""
    from .zoo import BasicBlock, EncoderBlock, InvertedResidual, RepVGGBlock

    types: dict[type[nn.Module], str] = {
        BasicBlock: "residual block",
        InvertedResidual: "inverted residual",
        RepVGGBlock: "RepVGG block",
        EncoderBlock: "transformer encoder block",
    }
    try:
        from torchvision.models import mnasnet, mobilenetv2, regnet, resnet, vision_transformer

        types.update({
            resnet.BasicBlock: "residual block",
            resnet.Bottleneck: "bottleneck block",
            mobilenetv2.InvertedResidual: "inverted residual",
            mnasnet._InvertedResidual: "MnasNet block",
            regnet.ResBottleneckBlock: "RegNet block",
            vision_transformer.EncoderBlock: "transformer encoder block",
        })  # fmt: skip
    except ImportError:  # torchvision is optional for the core
        pass
    return types


BLOCK_TYPES = block_types


def reconstruction_units(qmodel: nn.Module, example: torch.Tensor) -> list[Unit]:
    """The ordered reconstruction units of a prepared model.

    Args:
        qmodel: A prepared model (its quantized layers are `QuantLayer`s).
        example: A small input batch, used to find the execution order.

    Returns:
        Units in forward order; every quantized layer belongs to exactly one unit.
    """
    known = block_types()
    blocks = {n: m for n, m in qmodel.named_modules() if type(m) in known}
    order = execution_order(qmodel, example, (QuantLayer,))
    units: list[Unit] = []
    for layer in order:
        owner = _owner(layer, blocks)
        if owner is None:
            units.append(Unit(layer, "layer", type(qmodel.get_submodule(layer)).__name__, [layer]))
        elif units and units[-1].name == owner:
            units[-1].layers.append(layer)
        else:
            units.append(Unit(owner, "block", known[type(blocks[owner])], [layer]))
    if units and units[0].kind == "layer":
        units[0].kind = "stem"
    if len(units) > 1 and units[-1].kind == "layer":
        units[-1].kind = "head"
    return units


def _owner(layer: str, blocks: dict[str, nn.Module]) -> str | None:
    """The outermost known block that contains `layer`, if any."""
    owners = [b for b in blocks if layer.startswith(b + ".")]
    return min(owners, key=len) if owners else None

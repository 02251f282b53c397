"""Reconstruction units: the ordered blocks and layers that block-wise PTQ works through.

Three sources, tried in this order by `find_units` (source "graph"):

- "graph": units from the model's dataflow graph (`graph_units`): any residual,
  concatenation, squeeze-excitation or transformer block is one unit, whatever its
  class; a plain chain is one unit per layer.
- "blocks": the known block classes below (ResNet basic/bottleneck blocks, inverted
  residuals of MobileNetV2 and MnasNet, RegNet blocks, RepVGG blocks, transformer
  encoder blocks); layers outside them are units of their own. Used when the model
  cannot be traced, and as the check the graph units are tested against.
- "layers": one unit per quantized layer (a model with no known block, untraced).

`UnitPlan` says which source gave the units and why a fallback was taken. Name
patterns (`patterns=`) override the units: every module matching one becomes a unit.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import ConfigError
from .graph_units import graph_unit_spans, trace_units
from .modules import QuantLayer
from .prepare import execution_order
from .zoo import BasicBlock, EncoderBlock, InvertedResidual, RepVGGBlock

__all__ = [
    "Unit",
    "UnitPlan",
    "UNIT_SOURCES",
    "BLOCK_TYPES",
    "block_types",
    "find_units",
    "known_block_units",
    "layer_units",
    "reconstruction_units",
]

UNIT_SOURCES = ("graph", "blocks", "layers")


@dataclass
class Unit:
    """One reconstruction unit: a module and the quantized layers inside it."""

    name: str
    kind: str  # "stem", "block", "layer" or "head"
    block_type: str
    layers: list[str] = field(default_factory=list)


def block_types() -> dict[type[nn.Module], str]:
    """Known block classes (ours and torchvision's) -> a readable kind."""
    types: dict[type[nn.Module], str] = {
        BasicBlock: "residual block",
        InvertedResidual: "inverted residual",
        RepVGGBlock: "RepVGG block",
        EncoderBlock: "transformer encoder block",
    }
    try:
        from torchvision.models import mnasnet, mobilenetv2, regnet, resnet, vision_transformer

        types.update(
            {
                resnet.BasicBlock: "residual block",
                resnet.Bottleneck: "bottleneck block",
                mobilenetv2.InvertedResidual: "inverted residual",
                mnasnet._InvertedResidual: "MnasNet block",
                regnet.ResBottleneckBlock: "RegNet block",
                vision_transformer.EncoderBlock: "transformer encoder block",
            }
        )
    except ImportError:  # torchvision is optional for the core
        pass
    return types


BLOCK_TYPES = block_types


def reconstruction_units(
    qmodel: nn.Module, example: torch.Tensor, source: str = "graph", patterns: list[str] | None = None
) -> list[Unit]:
    """The ordered reconstruction units of a prepared model (`find_units(...).units`).

    Args:
        qmodel: A prepared model (its quantized layers are `QuantLayer`s).
        example: A small input batch, used to find the execution order.
        source: "graph" (with its fallbacks), "blocks" or "layers".
        patterns: Module-name patterns whose matches become units (override).

    Returns:
        Units in forward order; every quantized layer belongs to exactly one unit.
    """
    return find_units(qmodel, example, source, patterns).units


@dataclass
class UnitPlan:
    """The units of a run and where they came from.

    Attributes:
        units: Units in forward order.
        requested: The source asked for ("graph", "blocks" or "layers").
        source: The source that gave the units (differs from `requested` after a fallback).
        fallback: Why the requested source was not used ("" when it was).
        patterns: Override patterns applied.
        notes: Anything else worth knowing (a span split into layers, a pattern's effect).
    """

    units: list[Unit]
    requested: str
    source: str
    fallback: str = ""
    patterns: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def find_units(
    qmodel: nn.Module, example: torch.Tensor, source: str = "graph", patterns: list[str] | None = None
) -> UnitPlan:
    """The reconstruction units of a prepared model, with the record of how they were found.

    Args:
        qmodel: A prepared model.
        example: A small input batch (execution order, and the trace check).
        source: "graph" (fall back to "blocks", then "layers"), "blocks" or "layers".
        patterns: fnmatch patterns over module names; each matching module (the outermost
            when nested matches) becomes one unit, and what is left of a unit it cuts
            becomes layer units.

    Returns:
        A `UnitPlan`.
    """
    if source not in UNIT_SOURCES:
        raise ConfigError(f"unit source must be one of {', '.join(UNIT_SOURCES)}, got {source!r}")
    plan, why = _graph_plan(qmodel, example) if source == "graph" else (None, "")
    if plan is None:
        units = known_block_units(qmodel, example) if source != "layers" else layer_units(qmodel, example)
        used = "layers" if source == "layers" or all(u.kind != "block" for u in units) else "blocks"
        if why and used == "layers":
            why += "; no known block class in the model either: one unit per layer"
        elif why:
            why += ": known block classes used"
        elif source == "blocks" and used == "layers":
            why = "no known block class in the model: one unit per layer"
        plan = UnitPlan(units, source, used, fallback=why)
    if patterns:
        _apply_patterns(qmodel, plan, list(patterns))
    _label_ends(plan.units)
    return plan


def _unit(qmodel: nn.Module, name: str, layers: list[str]) -> Unit:
    m = qmodel.get_submodule(name)
    if isinstance(m, QuantLayer):
        return Unit(name, "layer", type(m).__name__, layers)
    return Unit(name, "block", block_types().get(type(m), type(m).__name__), layers)


def _graph_plan(qmodel: nn.Module, example: torch.Tensor) -> tuple[UnitPlan | None, str]:
    graph, error = trace_units(qmodel, [], with_error=True)
    if graph is None:
        return None, f"torch.fx could not trace the model ({error})"
    spans, notes = graph_unit_spans(qmodel, graph, tuple(block_types()))
    order = execution_order(qmodel, example[:1], (QuantLayer,))
    if sorted(ly for _, layers in spans for ly in layers) != sorted(order):
        return None, "the trace does not call every quantized layer exactly once"
    return UnitPlan([_unit(qmodel, name, layers) for name, layers in spans], "graph", "graph", notes=notes), ""


def layer_units(qmodel: nn.Module, example: torch.Tensor) -> list[Unit]:
    """One unit per quantized layer, in execution order."""
    order = execution_order(qmodel, example, (QuantLayer,))
    units = [Unit(n, "layer", type(qmodel.get_submodule(n)).__name__, [n]) for n in order]
    _label_ends(units)
    return units


def _apply_patterns(qmodel: nn.Module, plan: UnitPlan, patterns: list[str]) -> None:
    matched = [n for n, _ in qmodel.named_modules() if n and any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    matched = [n for n in matched if not any(n.startswith(o + ".") for o in matched)]  # outermost match wins
    picked = {n: _layer_names(qmodel, n) for n in matched}
    picked = {n: layers for n, layers in picked.items() if layers}
    if not picked:
        raise ConfigError(f"unit pattern(s) {', '.join(patterns)} match no module with quantized layers")
    owner = {ly: n for n, layers in picked.items() for ly in layers}
    units: list[Unit] = []
    for u in plan.units:
        cut = bool(set(u.layers) & set(owner))  # an overridden unit's other layers become layer units
        for ly in u.layers:
            name = owner.get(ly) or (ly if cut else u.name)
            if units and units[-1].name == name:
                units[-1].layers.append(ly)
            elif name == u.name and not cut:
                units.append(Unit(u.name, u.kind, u.block_type, [ly]))
            else:
                units.append(_unit(qmodel, name, [ly]))
    plan.units, plan.patterns = units, patterns
    plan.notes.append(f"units set by pattern(s) {', '.join(patterns)}: {', '.join(picked)}")


def _layer_names(qmodel: nn.Module, name: str) -> list[str]:
    m = qmodel.get_submodule(name)
    if isinstance(m, QuantLayer):
        return [name]
    return [f"{name}.{n}" for n, sub in m.named_modules() if isinstance(sub, QuantLayer)]


def _label_ends(units: list[Unit]) -> None:
    for u in units:
        if u.kind in ("stem", "head"):
            u.kind = "layer"
    if units and units[0].kind == "layer":
        units[0].kind = "stem"
    if len(units) > 1 and units[-1].kind == "layer":
        units[-1].kind = "head"


def known_block_units(qmodel: nn.Module, example: torch.Tensor) -> list[Unit]:
    """Units from the known block classes; layers outside them are units of their own."""
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

"""Per-architecture hyper-parameters of the seed papers (docs/methods.md).

AdaRound regulariser weight lambda, PD-Quant temperature T and distribution-
correction weight lambda_c, as set in the authors' run scripts, keyed by
architecture family. Zoo and torchvision models are recognised by class name;
anything else gets the ResNet row.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["ArchParams", "ARCH_PARAMS", "arch_family", "arch_params", "arch_value"]


@dataclass(frozen=True)
class ArchParams:
    """lambda (AdaRound weight), T (KL temperature), lambda_c (DC weight)."""

    round_weight: float
    temperature: float
    dc_lambda: float


ARCH_PARAMS: dict[str, ArchParams] = {
    "resnet": ArchParams(0.01, 4.0, 0.02),
    "regnet": ArchParams(0.01, 4.0, 0.01),
    "mobilenetv2": ArchParams(0.1, 1.0, 0.005),
    "mnasnet": ArchParams(0.2, 1.0, 0.001),
}

# class name (zoo or torchvision) -> family
_FAMILIES = {
    "ResNetCifar": "resnet",
    "ResNet": "resnet",
    "RegNet": "regnet",
    "MobileNetV2Small": "mobilenetv2",
    "MobileNetV2": "mobilenetv2",
    "MNASNet": "mnasnet",
}


def arch_family(model: nn.Module) -> str:
    """Family of `model` in `ARCH_PARAMS` ("resnet" when unknown)."""
    return _FAMILIES.get(type(model).__name__, "resnet")


def arch_params(model: nn.Module) -> ArchParams:
    """The papers' lambda / T / lambda_c for `model`'s architecture."""
    return ARCH_PARAMS[arch_family(model)]


def arch_value(model: nn.Module | None, name: str) -> float:
    """One of `ArchParams`' fields (``"round_weight"``, ``"temperature"``, ``"dc_lambda"``) for
    `model`'s architecture; the ResNet row when no model is given."""
    params = arch_params(model) if model is not None else ARCH_PARAMS["resnet"]
    return getattr(params, name)

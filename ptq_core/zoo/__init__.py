"""Architectures of the project's Fashion-MNIST model zoo."""

from __future__ import annotations

from .mobilenetv2 import InvertedResidual, MobileNetV2Small, mobilenetv2_small
from .repvgg import RepVGG, RepVGGBlock, repvgg_small
from .resnet import BasicBlock, ResNetCifar, resnet20
from .resnet18 import RESNET18_INPUT, resnet18_fmnist
from .vit import EncoderBlock, ViT, vit_tiny

__all__ = [
    "ZOO_ARCHS",
    "BasicBlock",
    "ResNetCifar",
    "resnet20",
    "resnet18_fmnist",
    "ZOO_INPUTS",
    "zoo_input",
    "InvertedResidual",
    "MobileNetV2Small",
    "mobilenetv2_small",
    "RepVGG",
    "RepVGGBlock",
    "repvgg_small",
    "EncoderBlock",
    "ViT",
    "vit_tiny",
]

# zoo name -> architecture builder (no arguments, 10 classes)
ZOO_ARCHS = {
    "fmnist-resnet20": resnet20,
    "fmnist-mobilenetv2": mobilenetv2_small,
    "fmnist-repvgg": repvgg_small,
    "fmnist-vit": vit_tiny,
    "fmnist-resnet18": resnet18_fmnist,
}

# zoo name -> input (channels, height, width) when it is not Fashion-MNIST's own 1x28x28
ZOO_INPUTS: dict[str, tuple[int, int, int]] = {"fmnist-resnet18": RESNET18_INPUT}


def zoo_input(name: str) -> tuple[int, int, int]:
    """The (channels, height, width) a zoo model takes: 1x28x28 unless `ZOO_INPUTS` says otherwise.

    >>> zoo_input("fmnist-resnet20"), zoo_input("fmnist-resnet18")
    ((1, 28, 28), (3, 64, 64))
    """
    return ZOO_INPUTS.get(name.removesuffix("-deploy"), (1, 28, 28))

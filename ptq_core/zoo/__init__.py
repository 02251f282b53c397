"""Architectures of the project's Fashion-MNIST model zoo."""

from __future__ import annotations

from .mobilenetv2 import InvertedResidual, MobileNetV2Small, mobilenetv2_small
from .repvgg import RepVGG, RepVGGBlock, repvgg_small
from .resnet import BasicBlock, ResNetCifar, resnet20
from .vit import EncoderBlock, ViT, vit_tiny

__all__ = [
    "ZOO_ARCHS",
    "BasicBlock",
    "ResNetCifar",
    "resnet20",
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

# zoo name -> architecture builder (no arguments: 10 classes, 1 input channel)
ZOO_ARCHS = {
    "fmnist-resnet20": resnet20,
    "fmnist-mobilenetv2": mobilenetv2_small,
    "fmnist-repvgg": repvgg_small,
    "fmnist-vit": vit_tiny,
}

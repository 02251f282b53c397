"""torchvision's ResNet-18, unchanged, with a 10-class head, for Fashion-MNIST at 3x64x64.

The zoo's one real-size network: exactly the architecture the PTQ papers report
on ImageNet (7x7 stem, max-pool, four stages of two basic blocks, 11.2 M
parameters). It takes Fashion-MNIST resized to 64x64 (bilinear) with the gray
channel repeated three times: `ptq_core.data.Resize(64, 3)` does that.
"""

from __future__ import annotations

from torch import nn

__all__ = ["resnet18_fmnist", "RESNET18_INPUT"]

RESNET18_INPUT = (3, 64, 64)  # channels, height, width


def resnet18_fmnist() -> nn.Module:
    """`torchvision.models.resnet18(num_classes=10)`, randomly initialised."""
    from torchvision.models import resnet18

    return resnet18(num_classes=10)

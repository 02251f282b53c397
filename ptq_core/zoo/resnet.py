"""CIFAR-style ResNet-20 (He et al., 2016, §4.2) for 1-channel 28x28 inputs.

Three stages of three basic blocks with 16, 32 and 64 channels; the first block
of stages 2 and 3 halves the resolution and uses a 1x1 conv + BN projection
shortcut, so every residual add sees two tensors of the same shape.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BasicBlock", "ResNetCifar", "resnet20"]


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.downsample(x))


class ResNetCifar(nn.Module):
    """ResNet-(6n+2) for small images: stem, three stages, global pool, linear head."""

    def __init__(self, depth: int = 20, num_classes: int = 10, in_ch: int = 1) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError("depth must be 6n+2")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_ch, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(16, 16, n, 1)
        self.layer2 = self._stage(16, 32, n, 2)
        self.layer3 = self._stage(32, 64, n, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _stage(in_ch: int, out_ch: int, n: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_ch, out_ch, stride)]
        blocks += [BasicBlock(out_ch, out_ch) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (B, 16, 28, 28)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, 64, 7, 7)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet20(num_classes: int = 10, in_ch: int = 1) -> ResNetCifar:
    """The zoo's `fmnist-resnet20` architecture (0.27 M parameters)."""
    return ResNetCifar(20, num_classes, in_ch)

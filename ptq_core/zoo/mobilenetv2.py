"""A MobileNetV2 (Sandler et al., 2018) sized for 1-channel 28x28 inputs.

Inverted residual blocks: 1x1 expansion, 3x3 depthwise, 1x1 linear projection,
ReLU6 activations, identity skip when stride is 1 and widths match. The expansion
factor is 4 rather than 6 to keep CPU training and calibration quick.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["InvertedResidual", "MobileNetV2Small", "mobilenetv2_small"]

# (expansion t, output channels c, repeats n, first stride s) for 28x28 inputs
_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (4, 24, 2, 2),  # 14x14
    (4, 32, 3, 1),
    (4, 64, 3, 2),  # 7x7
    (4, 96, 2, 1),
)


def _conv_bn(in_ch: int, out_ch: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """expand (1x1) -> depthwise (3x3) -> project (1x1, linear); skip when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_ch * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(in_ch, hidden, 1))
        layers.append(_conv_bn(hidden, hidden, 3, stride, groups=hidden))
        layers.append(_conv_bn(hidden, out_ch, 1, act=False))
        self.conv = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2Small(nn.Module):
    """Stem conv, inverted residual stages, 1x1 conv to 320 channels, pool, linear head."""

    def __init__(self, num_classes: int = 10, in_ch: int = 1, last_ch: int = 320) -> None:
        super().__init__()
        blocks: list[nn.Module] = [_conv_bn(in_ch, 16, 3)]
        ch = 16
        for t, c, n, s in _SETTINGS:
            for i in range(n):
                blocks.append(InvertedResidual(ch, c, s if i == 0 else 1, t))
                ch = c
        blocks.append(_conv_bn(ch, last_ch, 1))
        self.features = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.1), nn.Linear(last_ch, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, 320, 7, 7)
        return self.classifier(torch.flatten(self.avgpool(x), 1))


def mobilenetv2_small(num_classes: int = 10, in_ch: int = 1) -> MobileNetV2Small:
    """The zoo's `fmnist-mobilenetv2` architecture."""
    return MobileNetV2Small(num_classes, in_ch)

"""Networks whose block classes the project does not know, for the graph-unit tests and benchmark.

Each takes 1-channel images of any size (28x28 for Fashion-MNIST) and has 10 classes.
`BLOCKS` names, per network, the block classes a reader would call one unit; the tests
derive the expected units from it (every quantized layer outside those blocks is a
unit of its own). The factories (`dw_bottleneck_net`, ...) also serve as
``tests/support/graph_nets.py:<factory>`` for the CLI.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return layers + [nn.ReLU(inplace=True)] if act else layers


class DWBottleneck(nn.Module):
    """Expand 1x1, depthwise 3x3, project 1x1, each with BN; a skip when the shapes allow, else a 1x1 projection."""

    def __init__(self, cin: int, cout: int, stride: int = 1, expand: int = 3) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = nn.Sequential(*conv_bn(cin, mid, 1))
        self.dw = nn.Sequential(*conv_bn(mid, mid, 3, stride, groups=mid))
        self.project = nn.Sequential(*conv_bn(mid, cout, 1, act=False))
        self.shortcut = (
            nn.Identity() if stride == 1 and cin == cout else nn.Sequential(*conv_bn(cin, cout, 1, stride, act=False))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.project(self.dw(self.expand(x))) + self.shortcut(x))


class DWNet(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(1, width, 3, 2))
        self.blocks = nn.Sequential(
            DWBottleneck(width, width),
            DWBottleneck(width, 2 * width, 2),
            DWBottleneck(2 * width, 2 * width),
            DWBottleneck(2 * width, 4 * width, 2),
        )
        self.head = nn.Linear(4 * width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))


class DenseLayer(nn.Module):
    """One layer of a dense block: 1x1 then 3x3 conv, each with BN and ReLU."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*conv_bn(cin, 2 * growth, 1), *conv_bn(2 * growth, growth, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class DenseBlock(nn.Module):
    """DenseNet's block: every layer sees the concatenation of the block input and all earlier outputs."""

    def __init__(self, cin: int, growth: int, n: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(cin + i * growth, growth) for i in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, 1)))
        return torch.cat(feats, 1)


class DenseNetLike(nn.Module):
    def __init__(self, width: int = 8, growth: int = 6) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(1, width, 3, 2))
        self.dense1 = DenseBlock(width, growth, 2)
        c = width + 2 * growth
        self.transition = nn.Sequential(*conv_bn(c, width, 1), nn.AvgPool2d(2))
        self.dense2 = DenseBlock(width, growth, 2)
        self.fc = nn.Linear(width + 2 * growth, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dense2(self.transition(self.dense1(self.stem(x))))
        return self.fc(x.mean((2, 3)))


class SEResBlock(nn.Module):
    """Two 3x3 convs with BN, a squeeze-excitation gate (pooled 1x1 convs), then the residual add."""

    def __init__(self, c: int, reduction: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(*conv_bn(c, c), *conv_bn(c, c, act=False))
        self.squeeze = nn.Conv2d(c, c // reduction, 1)
        self.excite = nn.Conv2d(c // reduction, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(out.mean((2, 3), keepdim=True)))))
        return torch.relu(out * gate + x)


class SENet(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(1, width, 3, 2))
        self.block1 = SEResBlock(width)
        self.block2 = SEResBlock(width)
        self.fc = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block2(self.block1(self.stem(x))).mean((2, 3)))


class Inception(nn.Module):
    """Two branches (1x1; 1x1 then 3x3), concatenated along channels."""

    def __init__(self, cin: int, c1: int, c3: int) -> None:
        super().__init__()
        self.branch1 = nn.Sequential(*conv_bn(cin, c1, 1))
        self.branch3 = nn.Sequential(*conv_bn(cin, c3, 1), *conv_bn(c3, c3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x)], 1)


class InceptionNet(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(1, width, 3, 2))
        self.mix1 = Inception(width, width, width)
        self.pool = nn.MaxPool2d(2)
        self.mix2 = Inception(2 * width, width, 2 * width)
        self.fc = nn.Linear(3 * width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(
            torch.flatten(nn.functional.adaptive_avg_pool2d(self.mix2(self.pool(self.mix1(self.stem(x)))), 1), 1)
        )


def vgg_chain(width: int = 8) -> nn.Sequential:
    """A plain chain: every layer is its own unit."""
    return nn.Sequential(
        *conv_bn(1, width, 3, 2),
        *conv_bn(width, width),
        nn.MaxPool2d(2),
        *conv_bn(width, 2 * width),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, 10),
    )


def dw_bottleneck_net() -> DWNet:
    return DWNet()


def densenet_like() -> DenseNetLike:
    return DenseNetLike()


def se_net() -> SENet:
    return SENet()


def inception_net() -> InceptionNet:
    return InceptionNet()


NETS = {
    "dw-bottleneck": dw_bottleneck_net,
    "densenet-like": densenet_like,
    "se-resnet": se_net,
    "inception": inception_net,
    "vgg-chain": vgg_chain,
}
BLOCKS: dict[str, tuple[type[nn.Module], ...]] = {
    "dw-bottleneck": (DWBottleneck,),
    "densenet-like": (DenseBlock,),
    "se-resnet": (SEResBlock,),
    "inception": (Inception,),
    "vgg-chain": (),
}

"""Tiny models for fast tests (each can make its own inputs), and waiting on a condition."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn


class TinyResNet(nn.Module):
    """conv-bn-relu stem, one residual block, pooled linear head (about 5k parameters)."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(x + self.bn2(self.conv2(x)))
        x = self.relu(self.bn3(self.conv3(x)))
        return self.fc(torch.flatten(self.pool(x), 1))

    @staticmethod
    def example_inputs(n: int = 8) -> torch.Tensor:
        return torch.randn(n, 1, 12, 12)


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters (eval mode)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                c = m.num_features
                m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.rand(c, generator=g) - 0.5)
    return model.eval()


class TinyChain(nn.Module):
    """conv-bn-relu, conv-bn (no ReLU: conv3 sees signed inputs), conv-relu, pooled linear head; no residual.

    Faults injected into one layer stay in that layer: nothing skips around it.
    """

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        x = torch.relu(self.conv3(x))
        return self.fc(torch.flatten(self.pool(x), 1))

    @staticmethod
    def example_inputs(n: int = 8) -> torch.Tensor:
        return torch.randn(n, 1, 8, 8)


@torch.no_grad()
def self_labelled(model: nn.Module, x: torch.Tensor, batch_size: int = 128):
    """Centre the head's bias on `x` (balanced, fragile predictions) and label `x` with the float model's argmax.

    The float model is then 100 % right, and a quantization error changes the predictions
    as much as it changes the logits' differences. Returns a DataLoader.
    """
    from torch.utils.data import DataLoader, TensorDataset

    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    head.bias -= model(x).mean(0)
    labels = model(x).argmax(1)
    return DataLoader(TensorDataset(x, labels), batch_size=batch_size)


def wait_until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "the condition") -> None:
    """Poll `condition` every 10 ms until it holds; fail after `timeout` seconds (never sleep-and-hope)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.01)

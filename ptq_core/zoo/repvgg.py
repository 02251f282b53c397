"""A small RepVGG (Ding et al., 2021) for 1-channel 28x28 inputs.

Each block trains with three parallel branches (3x3 conv+BN, 1x1 conv+BN and,
when shapes allow, an identity BN) summed before the ReLU. `reparameterize()`
fuses the branches into one 3x3 conv with bias; both forms run the same function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RepVGGBlock", "RepVGG", "repvgg_small", "fuse_conv_bn"]

# (blocks, width) per stage; the first block of every stage but the first has stride 2
_STAGES: tuple[tuple[int, int], ...] = ((1, 32), (2, 48), (4, 96), (1, 192))


def fuse_conv_bn(weight: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm into the conv weight before it; returns (weight, bias)."""
    std = torch.sqrt(bn.running_var + bn.eps)
    scale = bn.weight / std  # (C_out,)
    return weight * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


class RepVGGBlock(nn.Module):
    """Train-time 3x3 + 1x1 + identity branches; deploy-time single 3x3 conv."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride
        self.conv3 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 1, stride, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.bn_id = nn.BatchNorm2d(in_ch) if in_ch == out_ch and stride == 1 else None
        self.fused: nn.Conv2d | None = None
        self.relu = nn.ReLU(inplace=True)

    @property
    def deployed(self) -> bool:
        """True once the branches have been fused into one conv."""
        return self.fused is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.relu(self.fused(x))
        out = self.bn3(self.conv3(x)) + self.bn1(self.conv1(x))
        if self.bn_id is not None:
            out = out + self.bn_id(x)
        return self.relu(out)

    def branch_kernels(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Each branch as an equivalent 3x3 (weight, bias), for fusion and for the UI."""
        kernels = {"3x3": fuse_conv_bn(self.conv3.weight, self.bn3)}
        w1, b1 = fuse_conv_bn(self.conv1.weight, self.bn1)
        kernels["1x1"] = (F.pad(w1, [1, 1, 1, 1]), b1)
        if self.bn_id is not None:
            eye = torch.zeros(self.out_ch, self.in_ch, 3, 3, device=w1.device, dtype=w1.dtype)
            eye[torch.arange(self.out_ch), torch.arange(self.in_ch), 1, 1] = 1.0
            kernels["identity"] = fuse_conv_bn(eye, self.bn_id)
        return kernels

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fuse the branches into `self.fused` and drop them (outputs unchanged)."""
        if self.fused is not None:
            return
        kernels = self.branch_kernels()
        weight = sum(w for w, _ in kernels.values())
        bias = sum(b for _, b in kernels.values())
        fused = nn.Conv2d(self.in_ch, self.out_ch, 3, self.stride, 1, bias=True)
        fused = fused.to(device=weight.device, dtype=weight.dtype)
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
        self.fused = fused
        del self.conv3, self.bn3, self.conv1, self.bn1, self.bn_id


class RepVGG(nn.Module):
    """Stages of RepVGG blocks, global pool, linear head."""

    def __init__(self, num_classes: int = 10, in_ch: int = 1) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        ch = in_ch
        for i, (n, width) in enumerate(_STAGES):
            stage = [RepVGGBlock(ch if j == 0 else width, width, 2 if (i > 0 and j == 0) else 1) for j in range(n)]
            blocks.append(nn.Sequential(*stage))
            ch = width
        self.stage0, self.stage1, self.stage2, self.stage3 = blocks
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(self.stage0(x))))  # (B, 192, 4, 4)
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def reparameterize(self) -> RepVGG:
        """Fuse every block in place (call in eval mode); returns self."""
        for m in self.modules():
            if isinstance(m, RepVGGBlock):
                m.reparameterize()
        return self


def repvgg_small(num_classes: int = 10, in_ch: int = 1, deploy: bool = False) -> RepVGG:
    """The zoo's `fmnist-repvgg` architecture; `deploy=True` gives the fused form."""
    model = RepVGG(num_classes, in_ch)
    return model.eval().reparameterize() if deploy else model

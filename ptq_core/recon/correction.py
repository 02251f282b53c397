"""PD-Quant's distribution correction (DC) of the float reconstruction targets (docs/methods.md).

For a float block with BatchNorm layers, each sample's block input x is replaced
by x' minimising

    L_n(x') = sum over BN layers l of ||mu_l - m_l(x')||^2 + ||sigma_l - v_l(x')||^2
              + ||x' - x||^2 / lambda_c

where m_l, v_l are the sample's per-channel spatial mean and std at the input of
BN layer l, mu_l, sigma_l = sqrt(running_var + 1e-6) its running statistics, and
the last term is summed over channels and averaged over positions. The authors
run 500 Adam steps (lr 1e-3, ReduceLROnPlateau with patience 100, min lr 1e-5)
per batch of 32, minimising the batch mean of L_n.

Each sample is its own parameter and Adam scales every element on its own, so
the same path is followed when many batches are corrected at once: here the
loss of each group of 32 is its own mean (same gradient per sample), and every
group keeps its own Adam step size and plateau schedule. Only the hardware
efficiency changes. The block is a frozen copy; the caller's model is never
touched.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..hooks import input_hooks

__all__ = ["bn_layers", "bn_statistics_loss", "constraint_loss", "correct_distribution", "BN_EPS"]

BN_EPS = 1e-6
_BETAS, _ADAM_EPS = (0.9, 0.999), 1e-8
_FACTOR, _THRESHOLD, _MIN_LR, _LR_EPS = 0.1, 1e-4, 1e-5, 1e-8  # ReduceLROnPlateau as the authors use it


def bn_layers(block: nn.Module) -> list[nn.BatchNorm2d]:
    """The BatchNorm2d layers inside `block`, in registration order."""
    return [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)]


def bn_statistics_loss(block: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample BN-statistics gap of `block` on `x`, and the block output.

    Returns:
        (gap [B], output): gap is the sum over the block's BN layers of the squared
        distances between running mean / std and the sample's channel statistics.
    """
    names = [n for n, m in block.named_modules() if isinstance(m, nn.BatchNorm2d)]  # as `bn_layers`
    seen: dict[str, Tensor] = {}
    with input_hooks(block, names, lambda name, args: seen.__setitem__(name, args[0])):
        out = block(x)
    gap = torch.zeros(len(x), device=x.device, dtype=x.dtype)
    for name, t in seen.items():
        bn = block.get_submodule(name)
        flat = t.flatten(2)  # [B, C, HW]
        mean = flat.mean(2)  # [B, C]
        std = torch.sqrt(flat.var(2, unbiased=flat.shape[2] > 1) + BN_EPS)  # [B, C]
        run_std = torch.sqrt(bn.running_var + BN_EPS)  # [C]
        gap = gap + (bn.running_mean - mean).square().sum(1) + (run_std - std).square().sum(1)
    return gap, out


def constraint_loss(x_new: Tensor, x: Tensor) -> Tensor:
    """Per-sample ``(x' - x)^2`` summed over channels, averaged over positions -> [B]."""
    err = (x_new - x).square()
    err = err.sum(1) if err.dim() > 1 else err
    return err.flatten(1).mean(1) if err.dim() > 1 else err


class _GroupAdam:
    """Adam on one tensor whose samples form groups, each with its own lr and plateau schedule."""

    def __init__(self, x: Tensor, group: Tensor, lr: float, patience: int) -> None:
        self.x, self.group, self.patience = x, group, patience  # group: [B] group index per sample
        g = int(group.max()) + 1
        self.lr = torch.full((g,), lr, dtype=torch.float64, device=x.device)
        self.best = torch.full((g,), math.inf, dtype=torch.float64, device=x.device)
        self.bad = torch.zeros(g, dtype=torch.long, device=x.device)
        self.m, self.v, self.t = torch.zeros_like(x), torch.zeros_like(x), 0

    def step(self, grad: Tensor) -> None:
        b1, b2 = _BETAS
        self.t += 1
        self.m.mul_(b1).add_(grad, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (self.v.sqrt() / math.sqrt(1 - b2**self.t)).add_(_ADAM_EPS)
        step = (self.lr / (1 - b1**self.t)).to(self.x.dtype)[self.group]  # [B]
        step = step.reshape(-1, *([1] * (self.x.dim() - 1)))
        self.x.sub_(self.m / denom * step)

    def schedule(self, metric: Tensor) -> None:
        """ReduceLROnPlateau(mode min, factor 0.1, threshold 1e-4 rel, min lr 1e-5) per group."""
        metric = metric.double()
        better = metric < self.best * (1 - _THRESHOLD)
        self.best = torch.where(better, metric, self.best)
        self.bad = torch.where(better, torch.zeros_like(self.bad), self.bad + 1)
        reduce = self.bad > self.patience
        new_lr = (self.lr * _FACTOR).clamp(min=_MIN_LR)
        self.lr = torch.where(reduce & (self.lr - new_lr > _LR_EPS), new_lr, self.lr)
        self.bad = torch.where(reduce, torch.zeros_like(self.bad), self.bad)


def _correct_chunk(
    block: nn.Module,
    x: Tensor,
    group: Tensor,
    lambda_c: float,
    steps: int,
    lr: float,
    patience: int,
    on_step: Callable[[int], None] | None,
) -> Tensor:
    counts = torch.bincount(group).to(x.dtype)  # [G]
    x_new = x.clone().requires_grad_(True)
    opt = _GroupAdam(x_new.data, group, lr, patience)
    for step in range(steps):
        gap, _ = bn_statistics_loss(block, x_new)
        per_sample = gap + constraint_loss(x_new, x) / lambda_c  # [B]
        group_loss = torch.zeros_like(counts).index_add_(0, group, per_sample) / counts  # [G]
        (grad,) = torch.autograd.grad(group_loss.sum(), x_new)
        opt.step(grad)
        opt.schedule(group_loss.detach())
        if on_step is not None:
            on_step(step + 1)
    return x_new.detach()


def correct_distribution(
    block: nn.Module,
    x: Tensor,
    lambda_c: float,
    steps: int = 500,
    lr: float = 1e-3,
    group: int = 32,
    chunk: int = 1024,
    patience: int = 100,
    device: torch.device | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> tuple[Tensor, Tensor]:
    """Correct the float inputs of `block` toward its BN running statistics.

    Args:
        block: Float block with its BatchNorm layers (not modified).
        x: Its float inputs [N, ...] (any device).
        lambda_c: Weight of the distance-to-original term is ``1 / lambda_c``.
        steps: Adam steps.
        lr: Initial Adam learning rate.
        group: Samples per group (the authors' batch); loss and schedule are per group.
        chunk: Samples corrected at once (rounded to a multiple of `group`).
        patience: Plateau patience of the learning-rate schedule.
        device: Compute device (default: `x`'s).
        on_step: Called with (steps done, total steps) over all chunks.

    Returns:
        (corrected inputs [N, ...], block outputs on them [N, ...]), on `x`'s device.
    """
    device = device or x.device
    frozen = copy.deepcopy(block).eval().requires_grad_(False).to(device)
    chunk = max(group, chunk // group * group)
    n_chunks = -(-len(x) // chunk)
    xs, ys = [], []
    for c, start in enumerate(range(0, len(x), chunk)):
        xc = x[start : start + chunk].to(device)
        gid = torch.arange(len(xc), device=device) // group  # [B]
        cb = None if on_step is None else (lambda s, c=c: on_step(c * steps + s, n_chunks * steps))
        xn = _correct_chunk(frozen, xc, gid, lambda_c, steps, lr, patience, cb)
        with torch.no_grad():
            ys.append(frozen(xn).to(x.device))
        xs.append(xn.to(x.device))
    return torch.cat(xs), torch.cat(ys)

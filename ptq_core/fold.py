"""BatchNorm folding: merge an eval-mode BatchNorm into the conv that feeds it.

Pairs are found by running one forward pass with hooks: a BatchNorm whose input
tensor *is* the output tensor of a conv (the same object) directly follows that
conv. The folded model is then checked against the original on the same batch,
so a wrong pairing can never pass silently.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import UnsupportedModelError
from .hooks import traced_forward

__all__ = ["find_conv_bn_pairs", "fold_bn_", "fold_conv_bn"]


def find_conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """(conv name, bn name) for every BatchNorm2d fed directly by a Conv2d."""
    conv_out: dict[int, tuple[str, torch.Tensor]] = {}  # tensors kept alive so ids stay unique
    bn_in: dict[str, int] = {}
    uses: dict[int, int] = {}
    handles = []

    alive: list[torch.Tensor] = []  # every counted tensor stays alive, so no id is reused mid-pass

    def count_uses(_m: nn.Module, inputs: tuple) -> None:
        for t in inputs:
            if torch.is_tensor(t):
                uses[id(t)] = uses.get(id(t), 0) + 1
                alive.append(t)

    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(lambda _m, _i, o, n=name: conv_out.__setitem__(id(o), (n, o))))
        if len(list(m.children())) == 0:
            handles.append(m.register_forward_pre_hook(count_uses))
        if isinstance(m, nn.BatchNorm2d):
            handles.append(m.register_forward_pre_hook(lambda _m, i, n=name: bn_in.__setitem__(n, id(i[0]))))
    traced_forward(model, example, handles)
    # a conv output read by more than one module (e.g. the BN and a skip) cannot be folded
    return [(conv_out[t][0], bn) for bn, t in bn_in.items() if t in conv_out and uses.get(t, 0) == 1]


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold `bn`'s running statistics and affine into `conv` (which gains a bias)."""
    std = torch.sqrt(bn.running_var + bn.eps)
    gamma = bn.weight if bn.affine else torch.ones_like(std)
    beta = bn.bias if bn.affine else torch.zeros_like(std)
    scale = gamma / std  # (C_out,)
    conv.weight.mul_(scale.reshape(-1, *([1] * (conv.weight.ndim - 1))))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = (bias - bn.running_mean) * scale + beta
    conv.bias = nn.Parameter(new_bias)


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def fold_bn_(model: nn.Module, example: torch.Tensor, atol: float = 1e-4) -> list[tuple[str, str]]:
    """Fold every conv->BN pair of an eval-mode model in place; returns the pairs.

    Raises:
        UnsupportedModelError: if the folded model's output differs from the original.
    """
    model.eval()
    pairs = find_conv_bn_pairs(model, example)
    if not pairs:
        return []
    with torch.no_grad():
        before = model(example)
    for conv_name, bn_name in pairs:
        fold_conv_bn(model.get_submodule(conv_name), model.get_submodule(bn_name))
        _set_module(model, bn_name, nn.Identity())
    with torch.no_grad():
        after = model(example)
    err = (after - before).abs().max().item()
    if err > atol * max(1.0, before.abs().max().item()):
        raise UnsupportedModelError(
            f"BatchNorm folding changed the outputs by {err:.2e}; the model's data flow "
            "is not the conv->BN pattern it looked like"
        )
    return pairs

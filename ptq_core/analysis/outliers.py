"""Channel- and sample-specific activation outliers of a re-parameterised (merged) model.

RepAPQ's motivation (docs/methods.md): after a RepVGG/MobileOne block's branches are
merged, a few channels on a few samples carry very large activations. This analysis
records, for every chosen layer, the per-sample per-channel maximum |activation| and two
scores that tell the two kinds of outlier apart:

- ``channel_score[c] = max_n M[c, n] / median(M)``: how far channel c's largest value
  stands above the layer's typical per-sample channel maximum (channel-specific outliers);
- ``sample_score[c, n] = M[c, n] / median_n M[c, :]``: how far sample n stands above
  channel c's usual maximum (sample-specific outliers).

The model is not modified: a train-form network is merged on a copy first.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..hooks import scoped
from ..reparam import merge_branches, rep_blocks

__all__ = ["channel_sample_maxima", "default_outlier_layers", "TOP_K"]

TOP_K = 10  # strongest (channel, sample) outliers listed per layer
_EPS = 1e-12


def default_outlier_layers(model: nn.Module) -> list[str]:
    """The re-parameterisable blocks' names (their outputs feed the next quantized conv), else every conv/linear."""
    names = rep_blocks(model)
    if names:
        return names
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _channel_max(out: Tensor) -> Tensor:
    """[B, C] max |value| per sample and channel (channels on dim 1; last dim for [B, N, D] tokens)."""
    a = out.detach().abs().float()
    if a.dim() == 2:
        return a
    if a.dim() == 3:
        return a.amax(1)
    return a.flatten(2).amax(2)


def _scores(m: np.ndarray, top_k: int) -> dict[str, Any]:
    level = float(np.median(m)) + _EPS
    channel_score = m.max(1) / level  # [C]
    sample_score = m / (np.median(m, axis=1, keepdims=True) + _EPS)  # [C, N]
    order = np.argsort(sample_score, axis=None)[::-1][:top_k]
    top = [
        {
            "channel": int(c),
            "sample": int(n),
            "value": float(m[c, n]),
            "sample_score": float(sample_score[c, n]),
            "channel_score": float(channel_score[c]),
        }
        for c, n in zip(*np.unravel_index(order, m.shape), strict=True)
    ]
    return {
        "channel_score": channel_score.astype(np.float32),
        "sample_score": sample_score.astype(np.float32),
        "median": level,
        "top": top,
    }


@torch.no_grad()
def channel_sample_maxima(
    model: nn.Module, images: Tensor, layers: list[str] | None = None, batch_size: int = 256, top_k: int = TOP_K
) -> dict[str, dict[str, Any]]:
    """Per-channel, per-sample max |activation| of the merged model, with outlier scores.

    Args:
        model: A float model (train form or merged; not modified). Re-parameterisable
            blocks are merged on a copy first.
        images: Input batch [N, ...] (on the model's device).
        layers: Module names whose *outputs* are recorded; default: the re-parameterisable
            blocks (outputs after the ReLU, i.e. what the next quantized conv receives),
            or every conv/linear of a model without such blocks.
        batch_size: Forward batch size.
        top_k: Number of strongest (channel, sample) pairs listed per layer.

    Returns:
        ``{layer name: info}`` in the order of ``layers``, where info holds (numpy arrays):

        - ``"maxima"``: float32 ``[C, N]``, max |activation| of channel c on sample n
          (over spatial positions or tokens);
        - ``"channel_score"``: float32 ``[C]``, ``max_n maxima[c] / median(maxima)``;
        - ``"sample_score"``: float32 ``[C, N]``, ``maxima[c, n] / median_n maxima[c]``;
        - ``"median"``: float, the layer's median per-sample channel maximum;
        - ``"top"``: up to ``top_k`` dicts ``{"channel", "sample", "value", "sample_score",
          "channel_score"}``, strongest sample score first.

    Raises:
        ConfigError: For an empty batch, an unknown layer name, or a layer that never runs.
    """
    if not torch.is_tensor(images) or images.dim() < 2 or len(images) == 0:
        raise ConfigError("channel_sample_maxima needs a non-empty batch of images [N, ...]")
    was_training = model.training
    net = merge_branches(model) if rep_blocks(model) else model
    net.eval()
    names = list(layers) if layers is not None else default_outlier_layers(net)
    if not names:
        raise ConfigError("no layers to analyse: pass layer names")
    modules = dict(net.named_modules())
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise ConfigError(f"unknown layer(s) {', '.join(map(repr, unknown))}")
    seen: dict[str, list[Tensor]] = {n: [] for n in names}
    handles = [
        modules[n].register_forward_hook(lambda _m, _i, out, n=n: seen[n].append(_channel_max(out).cpu()))
        for n in names
    ]
    try:
        with scoped(handles):
            for i in range(0, len(images), batch_size):
                net(images[i : i + batch_size])
    finally:
        model.train(was_training)
    result: dict[str, dict[str, Any]] = {}
    for n in names:
        if not seen[n]:
            raise ConfigError(f"layer {n!r} is never called by the model's forward")
        m = torch.cat(seen[n]).T.contiguous().numpy().astype(np.float32)  # [C, N]
        result[n] = {"maxima": m, **_scores(m, top_k)}
    return result

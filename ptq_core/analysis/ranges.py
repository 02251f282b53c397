"""Per-channel ranges of a layer's weights and input activations, outlier scores, and error split.

- `weight_channel_stats` / `activation_channel_stats`: min, max, |max|, quartiles and
  spread of every channel (weights: output channels; activations: the layer's input
  channels over all calibration samples and positions);
- `zscores`: outlier score of each channel, the robust z-score of its largest
  magnitude against the other channels of the same tensor;
- `channel_error_split`: what one uniform grid at a chosen bit-width does to each
  channel, split into clipping error (values beyond the grid) and rounding error
  (values inside it), for a per-tensor or per-channel grid and a clipping ratio;
- `capture_inputs` / `layer_ranges`: the same statistics for a named layer of a model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..calibrate import iterate_batches
from ..errors import ConfigError, DataError
from ..hooks import input_hooks
from ..primitives import channel_rows, compute_qparams, error_parts, quant_range

__all__ = [
    "ChannelStats",
    "ClippedGrid",
    "clipped_grid",
    "zscores",
    "channel_rows",
    "weight_channel_stats",
    "activation_channel_stats",
    "channel_error_split",
    "capture_inputs",
    "input_channel_axis",
    "input_channel_stats",
    "layer_rows",
    "layer_ranges",
    "DEAD_EPS",
    "CONSTANT_RATIO",
]

DEAD_EPS = 1e-8  # a channel whose largest magnitude is below this is dead (e.g. always zero after ReLU)
CONSTANT_RATIO = 1e-3  # a channel whose spread is below this share of the median spread is near-constant
_MAX_QUANTILE_VALUES = 100_000  # values per channel used for the quartiles (seeded subsample)
_MAX_QUANTILE_ELEMENTS = 2**24 - 1  # torch.quantile refuses larger inputs


@dataclass
class ChannelStats:
    """Per-channel statistics of one tensor (arrays of length C)."""

    minimum: np.ndarray
    maximum: np.ndarray
    absmax: np.ndarray
    q25: np.ndarray
    median: np.ndarray
    q75: np.ndarray
    std: np.ndarray
    z: np.ndarray  # outlier score of absmax
    dead: list[int]
    constant: list[int]  # near-constant but not dead
    count: int  # values per channel
    negative_share: float = 0.0  # share of all values below zero

    def to_dict(self) -> dict[str, Any]:
        """Plain lists, for caching and drawing."""
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}


def zscores(values: torch.Tensor | np.ndarray) -> np.ndarray:
    """Robust (modified) z-score of each entry: 0.6745 (v - median) / MAD (Iglewicz & Hoaglin).

    Median and median absolute deviation (MAD) are not pulled up by the outliers
    themselves, so one channel far above the rest scores high even among few channels
    (a plain z-score can never exceed (n-1)/sqrt(n), e.g. 2.5 for 8 channels). When
    more than half the entries are equal (MAD = 0) the mean absolute deviation
    stands in (scaled by 1.2533 to match a normal spread); all zeros if that is 0 too.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return np.zeros(0)
    dev = v - np.median(v)
    mad = float(np.median(np.abs(dev)))
    if mad > 0:
        return 0.6745 * dev / mad
    meanad = float(np.mean(np.abs(dev)))
    return dev / (1.2533 * meanad) if meanad > 0 else np.zeros(v.size)


def _float_rows(x: torch.Tensor, axis: int) -> torch.Tensor:
    """(C, M) float rows of `x` (see `ptq_core.primitives.channel_rows`), detached."""
    return channel_rows(x.detach().float(), axis)


def _stats(rows: torch.Tensor) -> ChannelStats:
    if rows.numel() == 0 or rows.shape[1] == 0:
        raise DataError("no values to measure")
    if not torch.isfinite(rows).all():
        bad = sorted({int(i) for i in (~torch.isfinite(rows)).any(1).nonzero().flatten()})[:8]
        raise DataError(f"non-finite values (NaN/inf) in channel(s) {bad}")
    sample = rows
    keep = max(1, min(_MAX_QUANTILE_VALUES, _MAX_QUANTILE_ELEMENTS // rows.shape[0]))
    if rows.shape[1] > keep:
        idx = torch.randperm(rows.shape[1], generator=torch.Generator().manual_seed(0))[:keep]
        sample = rows[:, idx.to(rows.device)]
    q = torch.quantile(sample, torch.tensor([0.25, 0.5, 0.75], device=rows.device), dim=1).cpu().numpy()
    lo, hi = rows.min(1).values.cpu().numpy(), rows.max(1).values.cpu().numpy()
    absmax = np.maximum(np.abs(lo), np.abs(hi))
    std = rows.std(1, unbiased=False).cpu().numpy()
    dead = [int(i) for i in np.nonzero(absmax <= DEAD_EPS)[0]]
    live_std = std[absmax > DEAD_EPS]
    ref = float(np.median(live_std)) if live_std.size else 0.0
    constant = [int(i) for i in np.nonzero((std <= CONSTANT_RATIO * ref) & (absmax > DEAD_EPS))[0]] if ref > 0 else []
    return ChannelStats(
        lo,
        hi,
        absmax,
        q[0],
        q[1],
        q[2],
        std,
        zscores(absmax),
        dead,
        constant,
        int(rows.shape[1]),
        float((rows < 0).float().mean()),
    )


def weight_channel_stats(weight: torch.Tensor) -> ChannelStats:
    """Statistics of every output channel (axis 0) of a weight tensor."""
    return _stats(_float_rows(weight, 0))


def activation_channel_stats(x: torch.Tensor, axis: int = 1) -> ChannelStats:
    """Statistics of every channel of an activation batch over samples and positions.

    Args:
        x: Activations, e.g. (N, C, H, W) for a conv input (axis 1) or (N, ..., C) for a
            linear input (axis -1).
        axis: The channel axis.
    """
    return _stats(_float_rows(x, axis))


@dataclass(frozen=True)
class ClippedGrid:
    """A uniform grid over a clipped range: scale and zero point (length C, or 1 per-tensor), bounds, signedness."""

    scale: torch.Tensor
    zero_point: torch.Tensor
    qmin: int
    qmax: int
    signed: bool


def clipped_grid(
    rows: torch.Tensor, bits: int, per_channel: bool = False, ratio: float = 1.0, symmetric: bool = False
) -> ClippedGrid:
    """The grid over `ratio` times the observed range of `rows` (C, M): per channel, or one for all rows.

    Symmetric grids cover ``ratio * max(|min|, max)`` and are signed when any value is
    negative; asymmetric ones cover ``ratio * [min, max]``. Scale and zero point come from
    `compute_qparams` (so 0 is always on the grid).
    """
    if not 0 < ratio <= 1:
        raise ConfigError(f"clipping ratio must be in (0, 1], got {ratio}")
    lo = rows.min(1).values if per_channel else rows.min().reshape(1)
    hi = rows.max(1).values if per_channel else rows.max().reshape(1)
    signed = symmetric and bool((lo < 0).any())
    if symmetric:
        top = ratio * torch.maximum(-lo, hi)
        lo, hi = (-top if signed else torch.zeros_like(top)), top
    else:
        lo, hi = ratio * lo, ratio * hi
    scale, zp = compute_qparams(lo, hi, bits, symmetric, signed)
    qmin, qmax = quant_range(bits, signed)
    return ClippedGrid(scale, zp, qmin, qmax, signed)


def channel_error_split(
    rows: torch.Tensor, bits: int, per_channel: bool = False, ratio: float = 1.0, symmetric: bool = False
) -> dict[str, Any]:
    """Clipping and rounding mean squared error of each channel under one uniform grid.

    The grid covers `ratio` times the observed range: the whole tensor's range
    (per-tensor), or each channel's own range (per-channel). A value is *clipped* when
    its grid index falls outside [qmin, qmax]; the rest only suffers rounding. Widening
    the range (ratio -> 1) lowers the clipping error and raises the rounding error.

    Args:
        rows: (C, M) values, one row per channel (see `ptq_core.primitives.channel_rows`).
        bits: Bit-width, 2-8.
        per_channel: One grid per channel instead of one for the tensor.
        ratio: Share of the observed range the grid covers, in (0, 1].
        symmetric: Zero point fixed at 0 (signed grid when there are negative values).

    Returns:
        ``clipping`` and ``rounding`` (MSE per channel, summing to ``total``),
        ``clip_fraction`` per channel, and the grid ``scale`` (per channel or one value).
    """
    if not 0 < ratio <= 1:
        raise ConfigError(f"clipping ratio must be in (0, 1], got {ratio}")
    rows = rows.detach().float()
    if rows.dim() != 2 or rows.numel() == 0:
        raise DataError("channel_error_split needs a non-empty (channels, values) tensor")
    grid = clipped_grid(rows, bits, per_channel, ratio, symmetric)
    scale, zp, qmin, qmax = grid.scale, grid.zero_point, grid.qmin, grid.qmax
    axis = 0 if per_channel else None
    sq, clipped = error_parts(
        rows, scale if per_channel else scale.reshape(()), zp if per_channel else zp.reshape(()), qmin, qmax, axis
    )
    m = rows.shape[1]
    clipping = (sq * clipped).sum(1) / m
    rounding = (sq * ~clipped).sum(1) / m
    return {
        "clipping": clipping.cpu().numpy(),
        "rounding": rounding.cpu().numpy(),
        "total": (clipping + rounding).cpu().numpy(),
        "clip_fraction": clipped.float().mean(1).cpu().numpy(),
        "scale": scale.cpu().numpy(),
    }


def _module(model: nn.Module, layer: str) -> nn.Module:
    try:
        return model.get_submodule(layer)
    except AttributeError:
        raise ConfigError(f"the model has no layer {layer!r}") from None


@torch.no_grad()
def capture_inputs(
    model: nn.Module, images: torch.Tensor, layers: list[str], batch_size: int = 64
) -> dict[str, torch.Tensor]:
    """Inputs of the named layers on `images` (first call per forward pass), concatenated over batches.

    Hooks go on a copy: `model` may be shared with other users and is never touched.
    """
    model = copy.deepcopy(model).eval()
    for name in layers:
        _module(model, name)
    got: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    seen: set[str] = set()

    def record(name: str, inp: tuple) -> None:
        if name not in seen and inp and isinstance(inp[0], torch.Tensor):
            seen.add(name)
            got[name].append(inp[0].detach().cpu())

    with input_hooks(model, layers, record):
        for xb in iterate_batches(images, batch_size):
            seen.clear()
            model(xb)
    missing = [n for n in layers if not got[n]]
    if missing:
        raise ConfigError(f"layer(s) {', '.join(missing)} are never called as modules in the forward pass")
    return {n: torch.cat(v) for n, v in got.items()}


def input_channel_stats(
    model: nn.Module, images: torch.Tensor, layers: list[str], group: int = 6
) -> dict[str, ChannelStats]:
    """Statistics of the input channels of each named layer on `images`: the one measurement behind
    every activation outlier score (the Outlier channels page and the diagnosis both read it).

    Layers are captured a few at a time (`group`) to bound memory.
    """
    out: dict[str, ChannelStats] = {}
    for i in range(0, len(layers), group):
        names = layers[i : i + group]
        for name, x in capture_inputs(model, images, names).items():
            out[name] = activation_channel_stats(x, input_channel_axis(_module(model, name), x))
    return out


def input_channel_axis(module: nn.Module, x: torch.Tensor) -> int:
    """Channel axis of a layer's input: 1 for convolutions, the last axis otherwise."""
    return 1 if isinstance(module, nn.Conv2d) and x.dim() == 4 else x.dim() - 1


def layer_ranges(model: nn.Module, images: torch.Tensor, layer: str) -> dict[str, Any]:
    """Weight (output-channel) and input-activation (input-channel) statistics of one layer.

    Returns:
        ``{"layer", "kind", "weights": ChannelStats dict, "activations": ChannelStats dict, "samples"}``.
    """
    module = _module(model, layer)
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise ConfigError(f"layer {layer!r} has no weight tensor")
    acts = input_channel_stats(model, images, [layer])[layer]
    return {
        "layer": layer,
        "kind": type(module).__name__,
        "samples": int(len(images)),
        "weights": weight_channel_stats(weight).to_dict(),
        "activations": acts.to_dict(),
    }


def layer_rows(model: nn.Module, images: torch.Tensor | None, layer: str, source: str) -> torch.Tensor:
    """(C, M) rows of a layer's weights (output channels) or its inputs on `images` (input channels)."""
    module = _module(model, layer)
    if source == "weights":
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor):
            raise ConfigError(f"layer {layer!r} has no weight tensor")
        return _float_rows(weight, 0)
    if source != "activations":
        raise ConfigError(f"source must be 'weights' or 'activations', got {source!r}")
    if images is None or len(images) == 0:
        raise DataError("activations need at least one image")
    x = capture_inputs(model, images, [layer])[layer]
    return _float_rows(x, input_channel_axis(module, x))

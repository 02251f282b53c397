"""Observers: modules that watch tensors and turn what they saw into (scale, zero_point).

An observer's ``forward`` records statistics and returns its input unchanged; it never
quantizes. Subclasses override ``_observe`` (update stats), ``_range`` (the range to
quantize) and ``_reset_stats``; the base class does validation and calls
:func:`ptq_core.primitives.compute_qparams`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from ptq_core import primitives
from ptq_core.errors import ConfigError, NonFiniteError
from ptq_core.qscheme import QScheme

__all__ = [
    "Observer",
    "MinMaxObserver",
    "PercentileObserver",
    "MSEObserver",
    "MAEObserver",
    "OBSERVERS",
    "make_observer",
]


class Observer(nn.Module, ABC):
    """Base class: validates input, keeps the batch count, computes qparams from ``_range()``.

    Per-tensor observers reduce over everything; per-channel ones over every dim except
    ``scheme.ch_axis`` and keep ``[C]`` statistics.

    Args:
        scheme: The quantization scheme the qparams are for.
    """

    def __init__(self, scheme: QScheme) -> None:
        super().__init__()
        self.scheme = scheme
        self.register_buffer("num_batches", torch.tensor(0, dtype=torch.long))

    @property
    def observed(self) -> bool:
        """True once at least one batch has been recorded."""
        return int(self.num_batches) > 0

    def forward(self, x: Tensor) -> Tensor:
        """Record statistics of ``x`` and return ``x`` unchanged."""
        with torch.no_grad():
            xd = x.detach()
            if xd.numel() == 0:
                raise ConfigError("cannot observe an empty tensor")
            if not bool(torch.isfinite(xd).all()):
                raise NonFiniteError(f"{type(self).__name__} got NaN or infinite values")
            self._observe(xd.float())
            self.num_batches += 1
        return x

    def calculate_qparams(self) -> tuple[Tensor, Tensor]:
        """Scale and zero point for the observed range.

        Returns:
            ``(scale, zero_point)``: 0-d tensors, or ``[C]`` for per-channel schemes.

        Raises:
            ConfigError: If nothing has been observed yet (or the scheme is float).
        """
        if not self.observed:
            raise ConfigError(f"{type(self).__name__} has not observed any data yet: run calibration first")
        if self.scheme.is_float:
            raise ConfigError("a 32-bit (float) scheme has no quantization parameters")
        lo, hi = self._range()
        return primitives.compute_qparams(lo, hi, self.scheme.bits, self.scheme.symmetric, self.scheme.signed)

    def reset(self) -> None:
        """Forget everything observed so far."""
        self.num_batches.zero_()
        self._reset_stats()

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # statistics change shape once observed ([0] -> [C]); resize before loading
        for name, own in self._buffers.items():
            incoming = state_dict.get(prefix + name)
            if own is not None and incoming is not None and incoming.shape != own.shape:
                self._buffers[name] = torch.empty(incoming.shape, dtype=incoming.dtype, device=own.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _reduce_rows(self, x: Tensor) -> Tensor:
        """``x`` as [C, N] rows for per-channel schemes, else [1, N]."""
        axis = self.scheme.ch_axis if self.scheme.per_channel else None
        if axis is not None and not -x.dim() <= axis < x.dim():
            raise ConfigError(f"ch_axis {axis} does not exist for a {x.dim()}-D tensor")
        return primitives.channel_rows(x, axis)  # [C, N], or [1, N] per tensor

    def _squeeze(self, t: Tensor) -> Tensor:
        """[C] -> [] for per-tensor schemes."""
        return t if self.scheme.per_channel else t[0]

    def _check_channels(self, new: Tensor, old: Tensor) -> None:
        if self.observed and new.shape != old.shape:
            raise ConfigError(f"channel count changed between batches: {tuple(old.shape)} -> {tuple(new.shape)}")

    @abstractmethod
    def _observe(self, x: Tensor) -> None:
        """Update statistics with a finite, detached float tensor."""

    @abstractmethod
    def _range(self) -> tuple[Tensor, Tensor]:
        """Return ``(min_val, max_val)`` to quantize: 0-d, or ``[C]`` per channel."""

    @abstractmethod
    def _reset_stats(self) -> None:
        """Clear subclass statistics."""


class MinMaxObserver(Observer):
    """Running min/max over batches, or an EMA of per-batch min/max.

    Example: batches with ranges [-1, 2] and [-3, 1] give [-3, 2]; with
    ``momentum=0.9`` they give ``[0.9*-1 + 0.1*-3, 0.9*2 + 0.1*1] = [-1.2, 1.9]``.

    Args:
        scheme: The quantization scheme.
        momentum: If given (in [0, 1)), ``stat = momentum * stat + (1 - momentum) * batch``
            (PD-Quant uses 0.9 for activations).
    """

    def __init__(self, scheme: QScheme, momentum: float | None = None) -> None:
        super().__init__(scheme)
        if momentum is not None and not 0.0 <= momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.register_buffer("min_val", torch.empty(0))
        self.register_buffer("max_val", torch.empty(0))

    def _observe(self, x: Tensor) -> None:
        rows = self._reduce_rows(x)  # [C, N]
        cur_min, cur_max = rows.amin(1), rows.amax(1)  # [C]
        self._check_channels(cur_min, self.min_val)
        if not self.observed:
            self.min_val, self.max_val = cur_min, cur_max
        elif self.momentum is None:
            self.min_val, self.max_val = torch.minimum(self.min_val, cur_min), torch.maximum(self.max_val, cur_max)
        else:
            m = self.momentum
            self.min_val = m * self.min_val + (1 - m) * cur_min
            self.max_val = m * self.max_val + (1 - m) * cur_max

    def _range(self) -> tuple[Tensor, Tensor]:
        return self._squeeze(self.min_val), self._squeeze(self.max_val)

    def _reset_stats(self) -> None:
        self.min_val, self.max_val = torch.empty(0), torch.empty(0)


class PercentileObserver(Observer):
    """Clip at the (100-q)-th and q-th percentiles, averaged over batches, then min-max.

    Example: with ``percentile=99`` on the values 1..100 the range is [1, 99] (nearest
    rank), so a single outlier of 1e6 among 1000 normal values is clipped away.

    Args:
        scheme: The quantization scheme.
        percentile: q in (50, 100]; 100 is plain min-max.
    """

    max_samples = 2**20

    def __init__(self, scheme: QScheme, percentile: float = 99.99) -> None:
        super().__init__(scheme)
        if not 50.0 < percentile <= 100.0:
            raise ConfigError(f"percentile must be in (50, 100], got {percentile}")
        self.percentile = percentile
        self._gen = torch.Generator().manual_seed(0)
        self.register_buffer("min_val", torch.empty(0))
        self.register_buffer("max_val", torch.empty(0))

    def _observe(self, x: Tensor) -> None:
        rows = self._reduce_rows(x)  # [C, N]
        per_row = max(1, self.max_samples // rows.shape[0])
        if rows.shape[1] > per_row:
            idx = torch.randperm(rows.shape[1], generator=self._gen)[:per_row].to(rows.device)
            rows = rows[:, idx]  # [C, per_row]
        n = rows.shape[1]
        k_hi = min(n, max(1, math.ceil(self.percentile / 100.0 * n - 1e-9)))  # nearest rank
        cur_max = rows.kthvalue(k_hi, dim=1).values  # [C]
        cur_min = rows.kthvalue(n - k_hi + 1, dim=1).values  # [C]
        self._check_channels(cur_min, self.min_val)
        b = int(self.num_batches)
        if b == 0:
            self.min_val, self.max_val = cur_min, cur_max
        else:
            self.min_val = (self.min_val * b + cur_min) / (b + 1)
            self.max_val = (self.max_val * b + cur_max) / (b + 1)

    def _range(self) -> tuple[Tensor, Tensor]:
        return self._squeeze(self.min_val), self._squeeze(self.max_val)

    def _reset_stats(self) -> None:
        self.min_val, self.max_val = torch.empty(0), torch.empty(0)
        self._gen.manual_seed(0)


class MSEObserver(Observer):
    """Lp range search (docs/methods.md) over a bounded sample of what was observed.

    Per-tensor: keeps at most ``max_elements`` deterministically subsampled values (each
    batches weighted about equally) plus the exact global min and max. Per-channel: keeps the last
    tensor seen in full (weights are observed once). ``calculate_qparams`` runs
    :func:`ptq_core.primitives.lp_search`. Example: on Student-t data at 4 bits the chosen
    range is much narrower than min-max, trading a little clipping for finer rounding.

    Args:
        scheme: The quantization scheme.
        p: Loss exponent (2.4 as in BRECQ/QDrop/PD-Quant; 2 = MSE; 1 = MAE).
        num_candidates: Number of candidate range widths.
        max_elements: Sample budget for per-tensor observation.
    """

    def __init__(self, scheme: QScheme, p: float = 2.4, num_candidates: int = 100, max_elements: int = 2**18) -> None:
        super().__init__(scheme)
        if not p > 0 or num_candidates < 1 or max_elements < 2:
            got = f"p={p}, num_candidates={num_candidates}, max_elements={max_elements}"
            raise ConfigError(f"need p > 0, num_candidates >= 1 and max_elements >= 2; got {got}")
        self.p, self.num_candidates, self.max_elements = p, num_candidates, max_elements
        self._gen = torch.Generator().manual_seed(0)
        self.register_buffer("samples", torch.empty(0), persistent=False)  # kept out of checkpoints
        self.register_buffer("min_val", torch.empty(0))
        self.register_buffer("max_val", torch.empty(0))

    def _pick(self, t: Tensor, k: int) -> Tensor:
        if k >= t.numel():
            return t
        return t[torch.randperm(t.numel(), generator=self._gen)[:k].to(t.device)]

    def _observe(self, x: Tensor) -> None:
        if self.scheme.per_channel:
            self._reduce_rows(x)  # validates ch_axis
            self.samples = x.clone()
            return
        flat = x.flatten()  # [N]
        b = int(self.num_batches)
        self.min_val = flat.min() if b == 0 else torch.minimum(self.min_val, flat.min())
        self.max_val = flat.max() if b == 0 else torch.maximum(self.max_val, flat.max())
        if self.samples.numel() + flat.numel() <= self.max_elements:
            self.samples = torch.cat([self.samples.to(flat.device), flat])
            return
        k_new = max(1, self.max_elements // (b + 1))
        new = self._pick(flat, k_new)
        old = self._pick(self.samples.to(flat.device), self.max_elements - new.numel())
        self.samples = torch.cat([old, new])

    def _data(self) -> Tensor:
        if self.samples.numel() == 0:
            raise ConfigError("MSEObserver samples are not saved in checkpoints: observe data again")
        if self.scheme.per_channel:
            return self.samples
        return torch.cat([self.samples, self.min_val.reshape(1), self.max_val.reshape(1)])  # [S + 2]

    def _search_input(self) -> tuple[Tensor, Tensor | None]:
        """Per-channel weights as they are; large per-tensor samples as a 2048-bin histogram."""
        data = self._data()
        if self.scheme.per_channel or data.numel() <= 2 * _HIST_BINS:
            return data, None
        return primitives.histogram_points(data, _HIST_BINS)

    def _range(self) -> tuple[Tensor, Tensor]:
        axis = self.scheme.ch_axis if self.scheme.per_channel else None
        s = self.scheme
        x, w = self._search_input()
        return primitives.lp_search(x, s.bits, s.symmetric, s.signed, self.p, self.num_candidates, axis, weights=w)

    def search_curve(self) -> dict[str, Tensor]:
        """Loss per candidate width for plotting "error vs clip" (per-tensor only).

        Returns:
            The ``curve`` dict of :func:`ptq_core.primitives.lp_search`, plus ``min_val``
            and ``max_val`` of the chosen range.
        """
        if self.scheme.per_channel:
            raise ConfigError("search_curve is available for per-tensor observers only")
        if not self.observed:
            raise ConfigError("MSEObserver has not observed any data yet: run calibration first")
        s = self.scheme
        x, w = self._search_input()
        lo, hi, curve = primitives.lp_search(
            x, s.bits, s.symmetric, s.signed, self.p, self.num_candidates, return_curve=True, weights=w
        )
        return {**curve, "min_val": lo.cpu(), "max_val": hi.cpu()}

    def _reset_stats(self) -> None:
        self.samples, self.min_val, self.max_val = torch.empty(0), torch.empty(0), torch.empty(0)
        self._gen.manual_seed(0)


class MAEObserver(MSEObserver):
    """The same range search minimising the mean absolute error (p = 1; RepAPQ, docs/methods.md).

    A few large outliers pull an MSE (p = 2.4) range wide to shrink their squared clipping
    error; under p = 1 they weigh only linearly, so the range stays near the bulk.
    """

    def __init__(self, scheme: QScheme, p: float = 1.0, num_candidates: int = 100, max_elements: int = 2**18) -> None:
        super().__init__(scheme, p, num_candidates, max_elements)


_HIST_BINS = 2048  # per-tensor MSE search runs on a histogram of the sample (see histogram_points)

OBSERVERS: dict[str, type[Observer]] = {
    "minmax": MinMaxObserver,
    "mse": MSEObserver,
    "mae": MAEObserver,
    "percentile": PercentileObserver,
}


def make_observer(name: str, scheme: QScheme, **kw: object) -> Observer:
    """Build an observer from its name in :data:`OBSERVERS`.

    Args:
        name: ``"minmax"``, ``"mse"``, ``"mae"`` or ``"percentile"``.
        scheme: The quantization scheme.
        **kw: Extra constructor arguments (``momentum``, ``p``, ``percentile``, ...).

    Returns:
        A fresh observer.

    Raises:
        ConfigError: For an unknown name or unknown keyword arguments.
    """
    if name not in OBSERVERS:
        raise ConfigError(f"unknown observer {name!r}: choose one of {', '.join(sorted(OBSERVERS))}")
    try:
        return OBSERVERS[name](scheme, **kw)
    except TypeError as exc:
        raise ConfigError(f"bad arguments for observer {name!r}: {exc}") from None

"""The quantizer contract: what a layer's weight or input quantizer is, whatever computes it.

- `Quantizer`: the contract. A module with a `scheme` (bit-width and grid kind), `observe`
  (whether forward feeds an observer; never for a quantizer without one), `observer_name`,
  `is_calibrated`, `bits`, `forward`, `storage_bits` and `quant_error`. It has no on/off
  switch of its own: the owning layer's ``quant_weight`` / ``quant_act`` decide whether it is
  used (`ptq_core.modules`), and called directly it always quantizes.
- `AffineQuantizer`: a quantizer on an affine grid, holding ``scale`` and ``zero_point``
  (``w_q = s * (q - z)``). The observer-backed `ptq_core.fake_quant.FakeQuantize`, the learned
  `AdaRoundQuantizer` and the solved `CodeQuantizer` are affine quantizers; only the first
  owns an observer.
- A quantizer that is neither (`MultipointQuantizer`: a sum of points per channel) implements
  `Quantizer` alone and carries no scale.

State dicts saved when every quantizer carried an observer (``observer.*``) and a multipoint
quantizer a stand-in scale (``scale``, ``zero_point``, ``_calibrated``) still load: those keys
are dropped when the quantizer has no such entry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from .errors import ConfigError
from .qscheme import QScheme

__all__ = ["Quantizer", "AffineQuantizer"]

_LEGACY_ENTRIES = ("observer", "scale", "zero_point", "_calibrated")  # keys of quantizers saved before the contract


class Quantizer(nn.Module, ABC):
    """A layer's weight or input-activation quantizer.

    Args:
        scheme: Bit-width and grid kind (``bits=32`` means float: the layer skips it).

    Attributes:
        observe: Whether forward feeds an observer (False unless the quantizer owns one).
        observer_name: Name of the observer that chose the grid's range, a record for reports and
            exports (None when no observer did).
    """

    observe: bool = False
    observer_name: str | None = None

    def __init__(self, scheme: QScheme) -> None:
        super().__init__()
        self.scheme = scheme

    @property
    def bits(self) -> int:
        """Bit-width of the scheme (32 means float)."""
        return self.scheme.bits

    @property
    def is_calibrated(self) -> bool:
        """True when the quantizer is ready to quantize (a fixed solution always is)."""
        return True

    @abstractmethod
    def forward(self, x: Tensor) -> Tensor:
        """The quantized version of `x`."""

    def storage_bits(self, numel: int) -> int:
        """Bits to store a weight of `numel` elements quantized by this quantizer."""
        return numel * self.bits

    def quant_error(self, x: Tensor) -> dict[str, float]:
        """Squared error of the quantized `x` (no clipping/rounding split unless a subclass has one).

        Returns:
            ``{"clipping", "rounding", "total", "clip_fraction"}``; here all of the error is
            reported as rounding.
        """
        with torch.no_grad():
            err = float((self(x) - x).square().sum())
        return {"clipping": 0.0, "rounding": err, "total": err, "clip_fraction": 0.0}

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        own = set(self._parameters) | set(self._buffers) | set(self._modules)
        for key in [k for k in state_dict if k.startswith(prefix)]:
            entry = key[len(prefix) :].split(".", 1)[0]
            if entry in _LEGACY_ENTRIES and entry not in own:
                del state_dict[key]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class AffineQuantizer(Quantizer):
    """A quantizer on an affine grid: ``scale`` and ``zero_point``, per tensor or per channel.

    Args:
        scheme: The grid.
        observer_name: Name of the observer that chose (or first chose) the grid's range, kept for
            reports and exports; it is a record, not an observer.
    """

    scale: Tensor
    zero_point: Tensor

    def __init__(self, scheme: QScheme, observer_name: str = "minmax") -> None:
        super().__init__(scheme)
        self.observer_name = observer_name
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("zero_point", torch.zeros(()))
        self.register_buffer("_calibrated", torch.tensor(False))

    @property
    def is_calibrated(self) -> bool:
        """True once qparams were set by :meth:`set_qparams`."""
        return bool(self._calibrated)

    @property
    def axis(self) -> int | None:
        """Channel axis of the qparams, or None for per-tensor."""
        return self.scheme.ch_axis if self.scheme.per_channel else None

    def set_qparams(self, scale: Tensor, zero_point: Tensor) -> None:
        """Set scale and zero point directly (keeps ``scale`` a Parameter if it is one).

        Args:
            scale: Positive scale, 0-d (per-tensor) or ``[C]`` (per-channel).
            zero_point: Integer-valued, same shape as ``scale``.
        """
        scale = torch.as_tensor(scale, dtype=torch.float32).detach()
        zero_point = torch.as_tensor(zero_point, dtype=torch.float32).detach()
        self._check_qparams(scale, zero_point)
        if not self.scheme.per_channel:
            scale, zero_point = scale.reshape(()), zero_point.reshape(())
        device = self.scale.device
        with torch.no_grad():
            if isinstance(self.scale, nn.Parameter):
                self.scale.data = scale.to(device).clone()
            else:
                self.scale = scale.to(device).clone()
            self.zero_point = zero_point.to(device).clone()
            self._calibrated.fill_(True)

    def _check_qparams(self, scale: Tensor, zero_point: Tensor) -> None:
        if scale.shape != zero_point.shape:
            raise ConfigError(f"scale {tuple(scale.shape)} and zero_point {tuple(zero_point.shape)} differ in shape")
        if self.scheme.per_channel and scale.dim() != 1:
            raise ConfigError(f"per-channel qparams must be 1-D, got shape {tuple(scale.shape)}")
        if not self.scheme.per_channel and scale.numel() != 1:
            raise ConfigError(f"per-tensor qparams must have one element, got shape {tuple(scale.shape)}")
        if not bool(torch.isfinite(scale).all() & (scale > 0).all()):
            raise ConfigError("scale must be finite and positive")

    def storage_bits(self, numel: int) -> int:
        """The integer codes at ``bits`` each, plus a 32-bit scale and zero point per channel."""
        return numel * self.bits + 2 * 32 * self.scale.numel()

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # qparams change shape when calibrated ([] -> [C]); resize before loading
        for name in ("scale", "zero_point"):
            incoming = state_dict.get(prefix + name)
            own = getattr(self, name)
            if incoming is not None and incoming.shape != own.shape:
                own.data = torch.empty(incoming.shape, dtype=own.dtype, device=own.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        s = self.scheme
        if s.is_float:
            return "bits=32 (float)"
        grid = f"per_channel(axis={s.ch_axis})" if s.per_channel else "per_tensor"
        return (
            f"bits={s.bits}, {'symmetric' if s.symmetric else 'asymmetric'}, "
            f"{'signed' if s.signed else 'unsigned'}, {grid}, calibrated={self.is_calibrated}"
        )

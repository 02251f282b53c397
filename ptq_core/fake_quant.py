"""FakeQuantize: owns one observer and applies :func:`ptq_core.primitives.fake_quantize`."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ptq_core import primitives
from ptq_core.errors import ConfigError
from ptq_core.observers import make_observer
from ptq_core.qscheme import QScheme

__all__ = ["FakeQuantize"]


class FakeQuantize(nn.Module):
    """Simulated quantization of one tensor: observe, calibrate, then quantize-dequantize.

    Typical flow: feed calibration batches (``observe`` is on), call :meth:`calibrate`
    (stores ``scale`` / ``zero_point`` and turns observing off), then every forward
    returns ``s * (clamp(round(x / s) + z, qmin, qmax) - z)``. For example with 4-bit
    unsigned, ``scale=0.1``, ``zero_point=5``: ``0.26 -> round(2.6) + 5 = 8 -> 0.3`` and
    ``2.0 -> 25, clamped to 15 -> 1.0``. A ``bits=32`` scheme is the identity.

    Args:
        scheme: The quantization scheme.
        observer: Observer name from :data:`ptq_core.observers.OBSERVERS`.
        drop_prob: QDrop probability that an element keeps its float value in training mode.
        **observer_kw: Extra observer arguments (``momentum``, ``p``, ``percentile``, ...).
    """

    scale: Tensor
    zero_point: Tensor

    def __init__(
        self, scheme: QScheme, observer: str = "minmax", *, drop_prob: float = 0.0, **observer_kw: Any
    ) -> None:
        super().__init__()
        self.scheme = scheme
        self.observer_name = observer
        self.observer = make_observer(observer, scheme, **observer_kw)
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("zero_point", torch.zeros(()))
        self.register_buffer("_calibrated", torch.tensor(False))
        self.observe = True
        self.enabled = True
        self.drop_prob = drop_prob

    @property
    def drop_prob(self) -> float:
        """QDrop probability of keeping an element in float during training (0 = off)."""
        return self._drop_prob

    @drop_prob.setter
    def drop_prob(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"drop_prob must be in [0, 1], got {value}")
        self._drop_prob = float(value)

    @property
    def bits(self) -> int:
        """Bit-width of the scheme (32 means float)."""
        return self.scheme.bits

    @property
    def is_calibrated(self) -> bool:
        """True once qparams were set by :meth:`calibrate` or :meth:`set_qparams`."""
        return bool(self._calibrated)

    @property
    def axis(self) -> int | None:
        """Channel axis of the qparams, or None for per-tensor."""
        return self.scheme.ch_axis if self.scheme.per_channel else None

    def enable_observer(self, on: bool = True) -> None:
        """Turn feeding the observer on or off."""
        self.observe = on

    def enable_quant(self, on: bool = True) -> None:
        """Turn applying fake quantization on or off."""
        self.enabled = on

    def calibrate(self) -> None:
        """Store the observer's qparams and stop observing (no-op for a float scheme).

        Raises:
            ConfigError: If the observer has seen no data.
        """
        if not self.scheme.is_float:
            self.set_qparams(*self.observer.calculate_qparams())
        self.observe = False

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

    def make_scale_learnable(self) -> None:
        """Turn ``scale`` into an ``nn.Parameter`` (LSQ-style step-size learning)."""
        if not isinstance(self.scale, nn.Parameter):
            value = self.scale.detach().clone()
            del self._buffers["scale"]
            self.scale = nn.Parameter(value)

    def freeze_scale(self) -> None:
        """Turn a learnable ``scale`` back into a buffer, keeping its current value."""
        if isinstance(self.scale, nn.Parameter):
            value = self.scale.detach().clone()
            del self._parameters["scale"]
            self.register_buffer("scale", value)

    def forward(self, x: Tensor) -> Tensor:
        """Observe and/or fake-quantize ``x`` according to the flags."""
        if self.scheme.is_float:
            return x
        if self.observe:
            self.observer(x)
        if not (self.enabled and self.is_calibrated):
            return x
        s = self.scheme
        keep = primitives.bernoulli_mask(x, self.drop_prob) if self.training and self.drop_prob > 0 else None
        return primitives.fake_quantize_fused(x, self.scale, self.zero_point, s.qmin, s.qmax, self.axis, keep)

    def storage_bits(self, numel: int) -> int:
        """Bits to store a weight of `numel` elements quantized by this quantizer.

        The integer codes at ``bits`` each, plus a 32-bit scale and zero point per channel.
        """
        return numel * self.bits + 2 * 32 * self.scale.numel()

    def quant_error(self, x: Tensor) -> dict[str, float]:
        """Clipping / rounding split of the error on ``x`` with the current qparams.

        Args:
            x: Tensor to evaluate.

        Returns:
            The dict of :func:`ptq_core.primitives.quantization_error`.
        """
        if self.scheme.is_float or not self.is_calibrated:
            raise ConfigError("quant_error needs a calibrated, non-float quantizer")
        s = self.scheme
        return primitives.quantization_error(x, self.scale.detach(), self.zero_point, s.qmin, s.qmax, self.axis)

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
            f"{'signed' if s.signed else 'unsigned'}, {grid}, observer={self.observer_name}, "
            f"calibrated={self.is_calibrated}, drop_prob={self.drop_prob}"
        )

"""FakeQuantize: the affine quantizer that owns an observer and applies :func:`ptq_core.primitives.fake_quantize`."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ptq_core import primitives
from ptq_core.errors import ConfigError
from ptq_core.observers import make_observer
from ptq_core.qscheme import QScheme
from ptq_core.quantizer import AffineQuantizer

__all__ = ["FakeQuantize"]


class FakeQuantize(AffineQuantizer):
    """Simulated quantization of one tensor: observe, calibrate, then quantize-dequantize.

    Typical flow: feed calibration batches (``observe`` is on), call :meth:`calibrate`
    (stores ``scale`` / ``zero_point`` and turns observing off), then every forward
    returns ``s * (clamp(round(x / s) + z, qmin, qmax) - z)``. For example with 4-bit
    unsigned, ``scale=0.1``, ``zero_point=5``: ``0.26 -> round(2.6) + 5 = 8 -> 0.3`` and
    ``2.0 -> 25, clamped to 15 -> 1.0``. A ``bits=32`` scheme is the identity. The qparams and
    `set_qparams` come from `ptq_core.quantizer.AffineQuantizer`; whether a layer uses the
    quantizer is the layer's switch (`ptq_core.modules.QuantLayer.set_quant_state`).

    Args:
        scheme: The quantization scheme.
        observer: Observer name from :data:`ptq_core.observers.OBSERVERS`.
        drop_prob: QDrop probability that an element keeps its float value in training mode.
        **observer_kw: Extra observer arguments (``momentum``, ``p``, ``percentile``, ...).
    """

    def __init__(
        self, scheme: QScheme, observer: str = "minmax", *, drop_prob: float = 0.0, **observer_kw: Any
    ) -> None:
        super().__init__(scheme, observer)
        self.observer = make_observer(observer, scheme, **observer_kw)
        self.observe = True
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

    def enable_observer(self, on: bool = True) -> None:
        """Turn feeding the observer on or off."""
        self.observe = on

    def calibrate(self) -> None:
        """Store the observer's qparams and stop observing (no-op for a float scheme).

        Raises:
            ConfigError: If the observer has seen no data.
        """
        if not self.scheme.is_float:
            self.set_qparams(*self.observer.calculate_qparams())
        self.observe = False

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
        if not self.is_calibrated:
            return x
        s = self.scheme
        keep = primitives.bernoulli_mask(x, self.drop_prob) if self.training and self.drop_prob > 0 else None
        return primitives.fake_quantize_fused(x, self.scale, self.zero_point, s.qmin, s.qmax, self.axis, keep)

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

    def extra_repr(self) -> str:
        base = super().extra_repr()
        return base if self.scheme.is_float else f"{base}, observer={self.observer_name}, drop_prob={self.drop_prob}"

"""AdaRound: learn whether each weight rounds down or up (Nagel et al., 2020; docs/methods.md).

The soft weight is ``s * (clamp(floor(W/s) + h(V) + z, qmin, qmax) - z)`` with the
rectified sigmoid ``h(V) = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)``,
zeta = 1.1, gamma = -0.1. V starts where ``h(V)`` equals the fractional part of
``W/s``, so the soft weight starts at the float weight (inside the grid). The
regulariser ``sum(1 - |2h - 1|^beta)`` pushes every h to 0 or 1; it is off for
the warm-up, then beta falls linearly from 20 to 2. Hardening keeps
``floor(W/s) + [V >= 0]``, at most one grid step from round-to-nearest.

Example: s = 0.1, W = 0.26 -> W/s = 2.6, floor 2, V starts at h^-1(0.6); if V ends
below 0 the weight is 0.2, else 0.3.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..primitives import along
from ..quantizer import AffineQuantizer

__all__ = [
    "ZETA",
    "GAMMA",
    "rectified_sigmoid",
    "inverse_rectified_sigmoid",
    "AdaRoundQuantizer",
    "RoundingSchedule",
    "rounding_regularizer",
]

ZETA, GAMMA = 1.1, -0.1


def rectified_sigmoid(v: Tensor) -> Tensor:
    """``clip(sigmoid(v) * (zeta - gamma) + gamma, 0, 1)``."""
    return (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


def inverse_rectified_sigmoid(h: Tensor) -> Tensor:
    """V with ``rectified_sigmoid(V) == h`` for h in [0, 1)."""
    return -torch.log((ZETA - GAMMA) / (h - GAMMA) - 1.0)


class AdaRoundQuantizer(AffineQuantizer):
    """A weight quantizer whose rounding direction per element is learned.

    Built from a calibrated weight quantizer (same grid, scale and zero point) and the
    float weight it will quantize; it owns no observer. ``soft`` selects the relaxed weight used
    in training; after :meth:`harden` the learned rounding is a fixed buffer and
    the quantizer has no parameters left.

    Args:
        base: The calibrated weight quantizer it replaces.
        weight: The float weight.
    """

    def __init__(self, base: AffineQuantizer, weight: Tensor) -> None:
        super().__init__(base.scheme, base.observer_name)
        self.to(weight.device)
        self.set_qparams(base.scale.detach(), base.zero_point.detach())
        scaled = self._scaled(weight.detach())
        floor = torch.floor(scaled)  # [*W]
        self.alpha = nn.Parameter(inverse_rectified_sigmoid(scaled - floor))  # h(V) = fractional part
        self._soft_base = floor + along(self.zero_point, weight.dim(), self.axis)  # floor(W/s) + z, for training
        self.register_buffer("round_up", None)
        self.soft = True

    @property
    def hardened(self) -> bool:
        """True once the rounding is fixed."""
        return self.round_up is not None

    def _scaled(self, w: Tensor) -> Tensor:
        return w * along(self.scale.detach(), w.dim(), self.axis).reciprocal()

    def rounding(self) -> Tensor:
        """The rounding offset h in [0, 1] per element (exactly 0/1 unless soft)."""
        if self.round_up is not None:
            return self.round_up
        if self.soft:
            return rectified_sigmoid(self.alpha)
        return (self.alpha.detach() >= 0).to(self.alpha.dtype)

    def integer_codes(self, w: Tensor) -> Tensor:
        """Grid integers ``clamp(floor(W/s) + h + z)`` of the hard rounding."""
        z = along(self.zero_point, w.dim(), self.axis)
        h = self.round_up if self.round_up is not None else (self.alpha.detach() >= 0).to(w.dtype)
        return (torch.floor(self._scaled(w.detach())) + h + z).clamp(self.scheme.qmin, self.scheme.qmax)

    def harden(self) -> None:
        """Fix ``h = [V >= 0]`` and drop the rounding variables."""
        if self.round_up is not None:
            return
        up = (self.alpha.detach() >= 0).to(self.alpha.dtype)
        del self.alpha
        self.round_up = up
        self._soft_base = None
        self.soft = False

    def forward(self, x: Tensor) -> Tensor:
        """The (soft or hard) AdaRound weight for the float weight `x`."""
        s = along(self.scale.detach(), x.dim(), self.axis)
        z = along(self.zero_point, x.dim(), self.axis)
        if self.soft and self._soft_base is not None and self._soft_base.shape == x.shape:
            q = self._soft_base + rectified_sigmoid(self.alpha)  # the weight is fixed while V is learned
        else:
            q = torch.floor(x.detach() * s.reciprocal()) + z + self.rounding()  # [*W]
        return (q.clamp(self.scheme.qmin, self.scheme.qmax) - z) * s

    def extra_repr(self) -> str:
        return super().extra_repr() + f", adaround={'hard' if self.hardened else 'soft' if self.soft else 'sign'}"


class RoundingSchedule:
    """Warm-up then linear annealing of the regulariser exponent beta.

    Args:
        iters: Total steps.
        warmup: Fraction of steps with the regulariser off.
        beta_start, beta_end: Exponent at the end of the warm-up and at the last step.
    """

    def __init__(self, iters: int, warmup: float = 0.2, beta_start: float = 20.0, beta_end: float = 2.0) -> None:
        self.iters, self.start = iters, warmup * iters
        self.beta_start, self.beta_end = beta_start, beta_end

    def active(self, step: int) -> bool:
        """Whether the regulariser counts at `step` (1-based)."""
        return step >= self.start

    def beta(self, step: int) -> float:
        """Exponent at `step` (1-based)."""
        if step < self.start:
            return self.beta_start
        rel = (step - self.start) / max(1e-12, self.iters - self.start)
        return self.beta_end + (self.beta_start - self.beta_end) * max(0.0, 1.0 - rel)


def rounding_regularizer(quantizers: list[AdaRoundQuantizer], beta: float) -> Tensor:
    """``sum over all weights of (1 - |2h - 1|^beta)``: 0 when every h is 0 or 1."""
    total = torch.zeros((), device=quantizers[0].alpha.device)
    for q in quantizers:
        total = total + (1.0 - (2.0 * rectified_sigmoid(q.alpha) - 1.0).abs().pow(beta)).sum()
    return total

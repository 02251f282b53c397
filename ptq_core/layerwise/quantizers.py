"""Weight quantizers that hold a layer-wise solver's answer.

The float weight stays in the layer (so switching quantization off still gives the
float model, which the metrics compare against); the quantizer returns the solved
weight instead of rounding it to nearest:

- `CodeQuantizer` (COMQ, GPTQ): integer codes on the layer's per-channel grid,
  ``w_q = s * (code - z)``; computed exactly as `primitives.fake_quantize` does, so
  fake-quantizing ``w_q`` again gives ``w_q`` (the grid is a fixed point).
- `MultipointQuantizer`: a sum of points ``w_c = sum_p a_pc * v_pc`` per output
  channel, with b-bit integer vectors ``v`` and float coefficients ``a``.

Example: s = 0.1, z = 8 and code 11 give 0.1 * (11 - 8) = 0.3 whatever the float
weight was (a solver may pick 11 for a weight of 0.26 to cancel other errors).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError
from ..primitives import along
from ..qscheme import QScheme
from ..quantizer import AffineQuantizer, Quantizer

__all__ = ["CodeQuantizer", "MultipointQuantizer"]


def _check_shape(quantizer: Quantizer, x: Tensor, shape: torch.Size) -> None:
    if x.shape != shape:
        raise ConfigError(f"{type(quantizer).__name__} holds a weight of shape {tuple(shape)}, got {tuple(x.shape)}")


class CodeQuantizer(AffineQuantizer):
    """Solved integer codes on a per-channel (or per-tensor) affine grid.

    Args:
        base: The layer's calibrated weight quantizer (gives the scheme and the observer's name).
        codes: Integers in ``[qmin, qmax]``, shaped like the weight.
        scale: Scale (possibly updated by the solver), same shape as ``base.scale``.
        zero_point: Zero point, same shape as ``scale``.
    """

    def __init__(self, base: AffineQuantizer, codes: Tensor, scale: Tensor, zero_point: Tensor) -> None:
        super().__init__(base.scheme, base.observer_name)
        self.to(codes.device)
        self.set_qparams(scale, zero_point)
        s = self.scheme
        if bool((codes < s.qmin).any() | (codes > s.qmax).any()):
            raise ConfigError(f"codes must lie in [{s.qmin}, {s.qmax}]")
        self.register_buffer("codes", codes.detach().round().to(torch.int16))

    def forward(self, x: Tensor) -> Tensor:
        """The solved weight (`x` is the float weight; only its shape is used)."""
        _check_shape(self, x, self.codes.shape)
        s = along(self.scale.detach(), x.dim(), self.axis)
        z = along(self.zero_point, x.dim(), self.axis)
        return (self.codes.to(x.dtype) - z) * s

    def extra_repr(self) -> str:
        return super().extra_repr() + ", solved codes"


class MultipointQuantizer(Quantizer):
    """``w_c = sum_{p < n_c} a_pc * v_pc``: a few b-bit vectors per output channel.

    Args:
        bits: Bit-width of every point's integer vector.
        codes: ``[P, C, d]`` integers (P = the most points any channel has).
        coeffs: ``[P, C]`` float coefficients, zero for points a channel does not use.
        points: ``[C]`` number of points of each channel.
        weight_shape: Shape of the layer's weight.
    """

    def __init__(self, bits: int, codes: Tensor, coeffs: Tensor, points: Tensor, weight_shape: torch.Size) -> None:
        super().__init__(QScheme(bits=bits, symmetric=True, signed=True, per_channel=True))
        used = torch.arange(codes.shape[0], device=codes.device)[:, None] < points[None, :]  # [P, C]
        coeffs = torch.where(used, coeffs, torch.zeros_like(coeffs))
        self.register_buffer("codes", codes.detach().round().to(torch.int8))
        self.register_buffer("coeffs", coeffs.detach().float().clone())
        self.register_buffer("points", points.detach().to(torch.long).clone())
        self.weight_shape = torch.Size(weight_shape)

    def forward(self, x: Tensor) -> Tensor:
        """The effective weight, the sum of each channel's points."""
        _check_shape(self, x, self.weight_shape)
        w = (self.coeffs[:, :, None].to(x.dtype) * self.codes.to(x.dtype)).sum(0)  # [C, d]
        return w.reshape(x.shape)

    def storage_bits(self, numel: int) -> int:
        """Every point's b-bit vector plus its 32-bit coefficient (a channel with n points stores n of each)."""
        n = int(self.points.sum())
        return n * (numel // self.points.numel()) * self.bits + 32 * n

    def extra_repr(self) -> str:
        return f"bits={self.bits}, multipoint, points={int(self.points.sum())} over {self.points.numel()} channels"

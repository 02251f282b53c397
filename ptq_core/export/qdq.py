"""QuantizeLinear / DequantizeLinear as PyTorch modules that export to ONNX QDQ nodes.

In eager mode each module computes exactly what the fake-quant model computes;
when `torch.onnx.export` traces it, the autograd function's ``symbolic`` emits the
ONNX operators instead:

- `ActQDQ` (an input activation): ``Clip(x, lo, hi) -> QuantizeLinear(s, z) ->
  DequantizeLinear(s, z)``. Codes are int8 (signed grid) or uint8; a grid narrower
  than its storage type (any bit-width below 8) is clamped in the float domain
  first, at ``lo = (qmin - z) s`` and ``hi = (qmax - z) s``, so the integer codes
  never leave ``[qmin, qmax]`` (rounding is monotonic, so clamping before rounding
  equals clamping the codes). An 8-bit grid needs no Clip: saturation clamps.
- `IntWeight` (a weight): the integer codes are an int8 / uint8 initializer and
  ``DequantizeLinear(codes, s, z, axis=0)`` restores ``(codes - z) s``, bit for bit
  the weight the fake-quant layer uses.

Example: a 4-bit unsigned input grid with ``s = 0.1``, ``z = 3`` exports as
``Clip(x, -0.3, 1.2) -> QuantizeLinear(0.1, uint8 3) -> DequantizeLinear(0.1, uint8 3)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ExportError
from ..primitives import along, fake_quantize_fused
from .grid import Grid

__all__ = ["ActQDQ", "IntWeight"]


class _QuantizeDequantize(torch.autograd.Function):
    """Per-tensor fake-quant in eager mode; Clip (optional) + QuantizeLinear + DequantizeLinear in ONNX."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, lo, hi, qmin, qmax, clip):  # type: ignore[override]
        return fake_quantize_fused(x, scale, zero_point.float(), qmin, qmax, None)

    @staticmethod
    def symbolic(g, x, scale, zero_point, lo, hi, qmin, qmax, clip):  # type: ignore[no-untyped-def]
        if clip:
            x = g.op("Clip", x, lo, hi)
        q = g.op("QuantizeLinear", x, scale, zero_point)
        return g.op("DequantizeLinear", q, scale, zero_point)


class _Dequantize(torch.autograd.Function):
    """``(codes - z) * s`` (per channel along `axis`, or per tensor) in eager mode; DequantizeLinear in ONNX."""

    @staticmethod
    def forward(ctx, codes, scale, zero_point, axis):  # type: ignore[override]
        s, z = along(scale, codes.dim(), axis), along(zero_point.float(), codes.dim(), axis)
        return (codes.float() - z) * s

    @staticmethod
    def symbolic(g, codes, scale, zero_point, axis):  # type: ignore[no-untyped-def]
        if axis is None:
            return g.op("DequantizeLinear", codes, scale, zero_point)
        return g.op("DequantizeLinear", codes, scale, zero_point, axis_i=axis)


class ActQDQ(nn.Module):
    """The input fake-quantizer of one layer, per tensor, as a QDQ pair.

    Args:
        grid: A per-tensor grid (see `ptq_core.export.grid.act_grid`).
    """

    def __init__(self, grid: Grid) -> None:
        super().__init__()
        if grid.axis is not None:
            raise ExportError("per-channel activation quantization has no QDQ export here; use per-tensor")
        lo, hi = grid.bounds()
        self.register_buffer("scale", grid.scale.reshape(()).clone())
        self.register_buffer("zero_point", grid.zero_point_codes().reshape(()))
        self.register_buffer("lo", lo.reshape(()).clone())
        self.register_buffer("hi", hi.reshape(()).clone())
        self.qmin, self.qmax, self.clip = grid.quant_min, grid.quant_max, not grid.full_range

    def forward(self, x: Tensor) -> Tensor:
        return _QuantizeDequantize.apply(
            x, self.scale, self.zero_point, self.lo, self.hi, self.qmin, self.qmax, self.clip
        )

    def extra_repr(self) -> str:
        return f"grid=[{self.qmin}, {self.qmax}], clip={self.clip}"


class IntWeight(nn.Module):
    """A weight stored as integer codes; `forward()` returns the dequantized float weight.

    Args:
        codes: Integer codes in the grid's storage dtype, shaped like the weight.
        grid: Their grid (per channel along ``grid.axis``, or per tensor).
    """

    def __init__(self, codes: Tensor, grid: Grid) -> None:
        super().__init__()
        self.register_buffer("codes", codes.clone())
        self.register_buffer("scale", grid.scale.clone())
        self.register_buffer("zero_point", grid.zero_point_codes())
        self.axis = grid.axis

    def forward(self) -> Tensor:
        return _Dequantize.apply(self.codes, self.scale, self.zero_point, self.axis)

    def extra_repr(self) -> str:
        return f"codes={tuple(self.codes.shape)} {self.codes.dtype}, axis={self.axis}"

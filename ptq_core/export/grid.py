"""The integer grid a quantized layer runs on, read off its quantizers and verified.

Every exporter starts here. `act_grid` reads an input quantizer's affine grid;
`weight_codes` reads the integer codes of the weight *as the layer uses it*
(``QuantLayer.quantized_weight()``), so learned roundings (AdaRound, BRECQ, QDrop,
PD-Quant), solved codes (GPTQ, COMQ) and folded affines (RepAPQ) all come out as
plain codes. The codes are accepted only if ``(codes - z) * s`` reproduces that
weight bit for bit; otherwise the quantizer is not a uniform affine grid and
`ExportError` names the layer.

Example: 4-bit unsigned, ``s = 0.1``, ``z = 8`` and a used weight of 0.3 give the code
``round(0.3 / 0.1) + 8 = 11``, stored in a ``uint8`` whose values stay in ``[0, 15]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import ExportError
from ..fake_quant import FakeQuantize
from ..modules import QuantLayer
from ..primitives import along
from ..quantizer import AffineQuantizer, Quantizer

__all__ = ["Grid", "quantizer_grid", "act_grid", "weight_codes", "weight_quantized", "is_plain_quantizer"]


@dataclass(frozen=True)
class Grid:
    """A uniform affine integer grid: ``x = scale * (code - zero_point)``, code in ``[quant_min, quant_max]``.

    Attributes:
        bits: Bit-width, 2-8.
        signed: Signed integer grid (stored as int8) instead of unsigned (uint8).
        symmetric: Zero point fixed at 0.
        quant_min, quant_max: The clamp bounds of the integer codes.
        axis: Channel axis of per-channel qparams, or None for per-tensor.
        scale: Float32 scale, 0-d or ``[C]``.
        zero_point: Integer-valued float32 zero point, same shape as ``scale``.
    """

    bits: int
    signed: bool
    symmetric: bool
    quant_min: int
    quant_max: int
    axis: int | None
    scale: Tensor
    zero_point: Tensor

    @property
    def code_dtype(self) -> torch.dtype:
        """``torch.int8`` for a grid with negative codes, else ``torch.uint8``."""
        return torch.int8 if self.quant_min < 0 else torch.uint8

    @property
    def full_range(self) -> bool:
        """True when the grid covers its storage type, so saturation alone clamps (8-bit grids)."""
        info = torch.iinfo(self.code_dtype)
        return self.quant_min == info.min and self.quant_max == info.max

    def zero_point_codes(self) -> Tensor:
        """The zero point in the storage dtype."""
        return self.zero_point.round().to(self.code_dtype)

    def bounds(self) -> tuple[Tensor, Tensor]:
        """Float clamp bounds ``((qmin - z) s, (qmax - z) s)``: the range the grid represents."""
        return (self.quant_min - self.zero_point) * self.scale, (self.quant_max - self.zero_point) * self.scale

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (scales and zero points as lists)."""
        return {
            "bits": self.bits,
            "signed": self.signed,
            "symmetric": self.symmetric,
            "quant_min": self.quant_min,
            "quant_max": self.quant_max,
            "axis": self.axis,
            "scale": self.scale.reshape(-1).tolist(),
            "zero_point": [int(z) for z in self.zero_point.reshape(-1)],
        }


def quantizer_grid(fq: AffineQuantizer) -> Grid:
    """The affine grid of a calibrated, non-float quantizer (its scheme and qparams)."""
    s = fq.scheme
    scale = fq.scale.detach().float().cpu().clone()
    zero_point = fq.zero_point.detach().float().cpu().clone()
    return Grid(s.bits, s.signed, s.symmetric, s.qmin, s.qmax, fq.axis, scale, zero_point)


def is_plain_quantizer(fq: Quantizer) -> bool:
    """True when `fq` computes the plain affine fake-quant (its class keeps `FakeQuantize.forward`)."""
    return type(fq).forward is FakeQuantize.forward


def act_grid(name: str, layer: QuantLayer) -> Grid | None:
    """The grid the layer's input is fake-quantized on, or None when the input stays float.

    Raises:
        ExportError: If the input quantizer is not the plain affine fake-quantizer.
    """
    fq = layer.act_quantizer
    if not layer.quant_act or fq.scheme.is_float or not fq.is_calibrated:
        return None
    if not is_plain_quantizer(fq):
        raise ExportError(
            f"layer {name!r}: input quantizer {type(fq).__name__} is not a uniform affine "
            "fake-quantizer and has no deployable form"
        )
    return quantizer_grid(fq)


def weight_quantized(layer: QuantLayer) -> bool:
    """True when the layer's weight runs through a non-float, calibrated quantizer."""
    fq = layer.weight_quantizer
    if not layer.quant_weight or fq.scheme.is_float:
        return False
    return fq.is_calibrated if is_plain_quantizer(fq) else True  # learned / solved weights are always ready


@torch.no_grad()
def weight_codes(name: str, layer: QuantLayer) -> tuple[Tensor, Grid]:
    """Integer codes of the weight as the layer uses it, and their grid.

    Args:
        name: Layer name (for error messages).
        layer: A quantized layer whose weight is quantized (see `weight_quantized`).

    Returns:
        ``(codes, grid)``: codes shaped like the weight, in ``grid.code_dtype``, with
        ``(codes - z) * s`` equal to the used weight bit for bit.

    Raises:
        ExportError: If the used weight is not exactly on the quantizer's affine grid.
    """
    grid = quantizer_grid(layer.weight_quantizer)
    used = layer.quantized_weight().detach().float().cpu()  # [*W]
    s, z = along(grid.scale, used.dim(), grid.axis), along(grid.zero_point, used.dim(), grid.axis)
    codes = torch.round(used * s.reciprocal()) + z
    inside = bool(((codes >= grid.quant_min) & (codes <= grid.quant_max)).all())
    if not (inside and torch.equal((codes - z) * s, used)):
        kind = type(layer.weight_quantizer).__name__
        raise ExportError(
            f"layer {name!r}: weight quantizer {kind} does not produce values on its "
            f"{grid.bits}-bit affine grid and has no deployable form"
        )
    return codes.to(grid.code_dtype), grid

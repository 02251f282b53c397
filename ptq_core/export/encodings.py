"""Per-layer quantization encodings: bits, scales, zero points, clamp bounds; JSON-ready.

One dict per quantized layer, in registration order::

    {"name": "layer1.0.conv1", "kind": "Conv2d", "wbits": 4, "abits": 4,
     "weight": {"form": "affine", "bits": 4, "signed": False, "symmetric": False,
                "quant_min": 0, "quant_max": 15, "axis": 0, "scale": [...], "zero_point": [...]},
     "activation": {"bits": 4, ..., "axis": None, "scale": [0.02], "zero_point": [3]}}

``weight`` / ``activation`` is None for a side left in float (bits 32). A multipoint
weight has ``"form": "multipoint"`` with its points per channel and coefficients
instead of scales. A quantizer with neither an affine grid nor a deployable form
raises `ExportError` naming the layer.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..cat.module import unwrap
from ..layerwise.quantizers import MultipointQuantizer
from ..modules import QuantLayer, quant_layers
from ..qscheme import FLOAT_BITS, QScheme
from .grid import act_grid, weight_codes, weight_quantized

__all__ = ["encodings", "layer_encoding"]


def _multipoint(q: MultipointQuantizer) -> dict[str, Any]:
    unit = QScheme(bits=q.bits, symmetric=True, signed=True)
    used = q.points.cpu()
    coeffs = [q.coeffs[: int(n), c].tolist() for c, n in enumerate(used)]
    return {
        "form": "multipoint",
        "bits": q.bits,
        "signed": True,
        "symmetric": True,
        "quant_min": unit.qmin,
        "quant_max": unit.qmax,
        "axis": 0,
        "points": used.tolist(),
        "coefficients": coeffs,
    }


def layer_encoding(name: str, layer: QuantLayer) -> dict[str, Any]:
    """The encoding of one quantized layer (see the module docstring)."""
    weight: dict[str, Any] | None = None
    if layer.quant_weight and isinstance(layer.weight_quantizer, MultipointQuantizer):
        weight = _multipoint(layer.weight_quantizer)
    elif weight_quantized(layer):
        weight = {"form": "affine", **weight_codes(name, layer)[1].to_dict()}
    act = act_grid(name, layer)
    return {
        "name": name,
        "kind": type(layer).__name__.removeprefix("Quant"),
        "wbits": weight["bits"] if weight else FLOAT_BITS,
        "abits": act.bits if act else FLOAT_BITS,
        "weight": weight,
        "activation": act.to_dict() if act else None,
    }


def encodings(qmodel: nn.Module) -> list[dict[str, Any]]:
    """Encodings of every quantized layer of `qmodel` (a `CATCorrected` is looked through).

    Args:
        qmodel: A quantized model (`QuantResult.model`).

    Returns:
        One JSON-ready dict per quantized layer, in registration order.

    Raises:
        ExportError: If a quantizer is not a uniform affine grid and has no deployable form.
    """
    return [layer_encoding(name, layer) for name, layer in quant_layers(unwrap(qmodel))]

"""Export a quantized model: encodings, ONNX (QDQ), parity checks, integer checkpoints.

Works on `QuantResult.model` of any method in `ptq_core.methods` (and on a
`CATCorrected` model). Typical use::

    from ptq_core.export import encodings, export_onnx, onnx_parity, save_int_checkpoint
    export_onnx(result.model, images[:1], "model.onnx")
    report = onnx_parity("model.onnx", images, result.model(images))
    save_int_checkpoint(result.model, "model.int.safetensors")
    model = load_int_checkpoint("model.int.safetensors", float_model, images[:2])
"""

from __future__ import annotations

from .encodings import encodings, layer_encoding
from .form import export_form
from .grid import Grid
from .int_checkpoint import load_int_checkpoint, read_int_checkpoint, save_int_checkpoint
from .onnx_export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, export_onnx
from .packing import pack_codes, packed_size, unpack_codes
from .parity import ParityReport, onnx_logits, onnx_parity, onnx_session

__all__ = [
    "DEFAULT_OPSET",
    "MAX_OPSET",
    "MIN_OPSET",
    "Grid",
    "ParityReport",
    "encodings",
    "export_form",
    "export_onnx",
    "layer_encoding",
    "load_int_checkpoint",
    "onnx_logits",
    "onnx_parity",
    "onnx_session",
    "pack_codes",
    "packed_size",
    "read_int_checkpoint",
    "save_int_checkpoint",
    "unpack_codes",
]

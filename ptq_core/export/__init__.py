"""Export a quantized model: encodings, ONNX (QDQ), integer checkpoints.

Works on `QuantResult.model` of any method of `ptq_core.methods` (and on a
`CATCorrected` model). Typical use::

    from ptq_core.export import encodings, export_onnx, onnx_parity, save_int_checkpoint
    export_onnx(result.model, images[:1], "model.onnx")
    report = onnx_parity("model.onnx", images, result.model(images))
    save_int_checkpoint(result.model, "model.int.safetensors")
"""

from __future__ import annotations

from .form import export_form
from .grid import Grid
from .onnx_export import DEFAULT_OPSET, export_onnx

__all__ = ["DEFAULT_OPSET", "Grid", "export_form", "export_onnx"]

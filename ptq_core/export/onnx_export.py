"""Write a quantized model as an ONNX QDQ graph (`export_onnx`).

The model is turned into its export form (`ptq_core.export.form`) and traced with
the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``, which works
offline and honours the custom QDQ symbolics). The graph has QuantizeLinear /
DequantizeLinear pairs on every quantized layer input (per tensor), int8 / uint8
weight initializers behind DequantizeLinear (per output channel, axis 0), a float
Clip before each QuantizeLinear whose grid is narrower than 8 bits, float biases as
separate Adds, and a dynamic batch dimension. `onnx.checker.check_model` validates the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import ExportError
from .form import export_form

__all__ = ["MIN_OPSET", "MAX_OPSET", "DEFAULT_OPSET", "export_onnx"]

MIN_OPSET = 13  # per-axis DequantizeLinear
MAX_OPSET = 20  # newest opset of the TorchScript exporter
DEFAULT_OPSET = 17
_BATCH_AXES = {"input": {0: "batch"}, "logits": {0: "batch"}}


def export_onnx(qmodel: nn.Module, example_input: torch.Tensor, path: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """Export a quantized model to ONNX with QDQ pairs and integer weights.

    Args:
        qmodel: A quantized model (`QuantResult.model`), optionally a `CATCorrected`.
        example_input: One input batch (any batch size; the batch axis is dynamic).
        path: Where to write the ``.onnx`` file (parent folders are created).
        opset: ONNX opset, `MIN_OPSET`-`MAX_OPSET`.

    Returns:
        The path written.

    Raises:
        ExportError: For an opset out of range or a quantizer that cannot be expressed.
    """
    import onnx

    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset {opset} is not supported: use {MIN_OPSET}-{MAX_OPSET}")
    model = export_form(qmodel)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = example_input.detach().cpu().float()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            model,
            (x,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes=_BATCH_AXES,
        )
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return path

"""Check an exported ONNX model against the PyTorch fake-quant logits with onnxruntime.

`onnx_parity` runs the file on the CPU execution provider and compares its logits
with reference logits row by row: top-1 agreement, max and mean absolute logit
difference, and (when labels come with the inputs) both top-1 accuracies. Exact
equality is not expected: the float convolutions sum in a different order, and an
activation that lands within rounding noise of a grid midpoint can move one step,
so `ParityReport.passed` applies tolerances.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ExportError

__all__ = ["ParityReport", "onnx_session", "onnx_logits", "onnx_parity"]

_DISABLED = ["WeightBiasQuantization"]
Batches = Tensor | Iterable[Tensor | tuple[Tensor, Tensor] | list[Tensor]]


@dataclass
class ParityReport:
    """onnxruntime against the reference logits.

    Attributes:
        samples: Number of inputs compared.
        agreement: Share of inputs whose top-1 class is the same.
        max_abs_diff: Largest absolute logit difference.
        mean_abs_diff: Mean absolute logit difference.
        onnx_top1: Top-1 accuracy of onnxruntime (None without labels).
        reference_top1: Top-1 accuracy of the reference (None without labels).
        atol: Tolerance on `max_abs_diff` (a single grid-boundary flip may come close to it).
        mean_atol: Tolerance on `mean_abs_diff` (catches small but systematic differences).
        min_agreement: Least acceptable `agreement`.
    """

    samples: int
    agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    onnx_top1: float | None
    reference_top1: float | None
    atol: float
    mean_atol: float
    min_agreement: float

    @property
    def passed(self) -> bool:
        """True when the logit differences and the top-1 agreement are within tolerance."""
        close = self.max_abs_diff <= self.atol and self.mean_abs_diff <= self.mean_atol
        return close and self.agreement >= self.min_agreement

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, `passed` included."""
        return {**asdict(self), "passed": self.passed}


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime `InferenceSession` on the CPU provider (`threads` intra-op threads, None = default).

    Two of onnxruntime's default rewrites compute something other than the graph, and
    the session turns them off so that it runs what the fake-quant model computes:

    - ``WeightBiasQuantization`` would quantize a *float* weight behind a QDQ input
      (a layer with ``wbits=32``) to int8, and a Conv's float bias to int32 (the
      exported graph keeps biases in a separate Add, so they are safe anyway);
    - the ``DequantizeLinear -> MatMul`` fusion into ``MatMulNBits`` defaults to
      accuracy level 4, which quantizes the float *input* to int8 as well; level 1
      keeps the integer-weight kernel with float inputs.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "1")  # fp32 inputs
    if threads is not None:
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"], disabled_optimizers=_DISABLED)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own unexported error types
        raise ExportError(f"onnxruntime cannot load {path}: {exc}") from None


def _split(batches: Batches) -> Iterable[tuple[Tensor, Tensor | None]]:
    if isinstance(batches, Tensor):
        yield batches, None
        return
    for b in batches:
        yield (b[0], b[1]) if isinstance(b, (tuple, list)) else (b, None)


def onnx_logits(session: Any, batches: Batches) -> tuple[Tensor, Tensor | None]:
    """Logits of every input (and the labels, if the batches carry them), in order."""
    name = session.get_inputs()[0].name
    outs, labels = [], []
    for x, y in _split(batches):
        outs.append(torch.from_numpy(session.run(None, {name: np.ascontiguousarray(x.detach().cpu().float())})[0]))
        if y is not None:
            labels.append(y.cpu())
    return torch.cat(outs), (torch.cat(labels) if labels else None)


def onnx_parity(
    path: str | Path,
    inputs: Batches,
    reference_logits: Tensor,
    atol: float = 5e-2,
    mean_atol: float = 1e-3,
    min_agreement: float = 0.99,
    threads: int | None = None,
) -> ParityReport:
    """Run `path` on `inputs` with onnxruntime and compare with `reference_logits`.

    Args:
        path: An ONNX file (e.g. from `export_onnx`).
        inputs: One tensor, or an iterable of tensors or ``(images, labels)`` batches
            (a DataLoader), in the order of `reference_logits`.
        reference_logits: ``[N, classes]`` PyTorch fake-quant logits of the same inputs.
        atol: Largest acceptable absolute logit difference.
        mean_atol: Largest acceptable mean absolute logit difference.
        min_agreement: Least acceptable share of equal top-1 predictions.
        threads: onnxruntime intra-op threads (None: its default).

    Returns:
        A `ParityReport`.

    Raises:
        ExportError: If the file cannot be run or the logit shapes differ.
    """
    got, labels = onnx_logits(onnx_session(path, threads), inputs)
    ref = reference_logits.detach().cpu().float()
    if got.shape != ref.shape:
        raise ExportError(f"onnxruntime gave logits of shape {tuple(got.shape)}, the reference {tuple(ref.shape)}")
    diff = (got - ref).abs()
    pred, ref_pred = got.argmax(1), ref.argmax(1)
    acc = (lambda p: float((p == labels).float().mean())) if labels is not None else (lambda p: None)
    return ParityReport(
        samples=len(ref),
        agreement=float((pred == ref_pred).float().mean()),
        max_abs_diff=float(diff.max()) if diff.numel() else 0.0,
        mean_abs_diff=float(diff.mean()) if diff.numel() else 0.0,
        onnx_top1=acc(pred),
        reference_top1=acc(ref_pred),
        atol=atol,
        mean_atol=mean_atol,
        min_agreement=min_agreement,
    )

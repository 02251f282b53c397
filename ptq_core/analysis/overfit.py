"""Overfitting check of a reconstruction: the calibration images against held-out test images.

A reconstruction method fits rounding (and sometimes scales) to its calibration images.
When it overfits, the quantized model loses less on those images than on images it has
never seen. MCT's Xquant compares a representative set with a validation set the same
way. Both sets are measured against the float model on the *same* images (the float model
itself does better on training images), so what is compared is the quantization loss:

- top-1 drop (float minus quantized) on the calibration images and on the test images;
  flagged when the test drop exceeds the calibration drop by more than `gap_pts` and by
  more than twice the sampling noise of the two drops (binomial standard errors);
- per-layer output SQNR (all layers quantized) on each set; a layer is flagged when it is
  `gap_db` better on the calibration images than on the test images.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..calibrate import iterate_batches
from ..metrics import layer_errors
from ..modules import quant_state

__all__ = ["OVERFIT_IMAGES", "overfit_check"]

OVERFIT_IMAGES = 256  # per set: cheap next to a reconstruction


@torch.no_grad()
def _top1(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    pairs = zip(iterate_batches(x, 128), iterate_batches(y, 128), strict=True)
    hits = sum(int((model(xb).argmax(1).cpu() == yb.cpu()).sum()) for xb, yb in pairs)
    return 100.0 * hits / max(len(y), 1)


def _drops(qmodel: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(float top-1, quantized top-1) on one set; the model's quantization state is restored."""
    with quant_state(qmodel, False, False):
        fp = _top1(qmodel, x, y)
    return fp, _top1(qmodel, x, y)


def overfit_check(
    qmodel: nn.Module,
    calib: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    gap_pts: float = 2.0,
    gap_db: float = 3.0,
) -> dict[str, Any]:
    """Quantization loss on the calibration images beside the held-out test images.

    Args:
        qmodel: The quantized model (quantization on); its state is restored.
        calib: (images, labels) the method was fitted on (a few hundred).
        test: (images, labels) it never saw, as many.
        gap_pts: Smallest top-1 gap (points) that counts as overfitting.
        gap_db: Smallest per-layer SQNR gap (dB) that counts.

    Returns:
        ``{"calib": {"images", "fp_top1", "top1", "drop"}, "test": {...}, "gap", "noise",
        "flagged", "layers": [{"name", "sqnr_calib", "sqnr_test", "gap_db", "flagged"}],
        "flagged_layers"}``.
    """
    out: dict[str, Any] = {}
    for name, (x, y) in (("calib", calib), ("test", test)):
        fp, q = _drops(qmodel, x, y)
        out[name] = {"images": len(y), "fp_top1": fp, "top1": q, "drop": fp - q}
    gap = out["test"]["drop"] - out["calib"]["drop"]
    noise = math.hypot(
        *(math.sqrt(max(out[s]["top1"] * (100 - out[s]["top1"]), 1.0) / out[s]["images"]) for s in ("calib", "test"))
    )
    errs = {
        s: {e.name: e.sqnr_db for e in layer_errors(qmodel, pair[0], "accumulated")}
        for s, pair in (("calib", calib), ("test", test))
    }
    layers = []
    for n, s_cal in errs["calib"].items():
        s_test = errs["test"].get(n, math.nan)
        g = s_cal - s_test if math.isfinite(s_cal) and math.isfinite(s_test) else 0.0
        layers.append({"name": n, "sqnr_calib": s_cal, "sqnr_test": s_test, "gap_db": g, "flagged": g > gap_db})
    out.update(
        gap=gap,
        noise=noise,
        flagged=gap > max(gap_pts, 2 * noise),
        layers=layers,
        flagged_layers=[r["name"] for r in layers if r["flagged"]],
    )
    return out

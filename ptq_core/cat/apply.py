"""Putting CAT on a quantized model: the fitting set, logits, fitting, and base-vs-corrected evaluation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from ..data import DataBundle
from ..errors import DataError
from ..metrics import topk_accuracy
from .fit import CATFit, fit_cat
from .module import CATCorrected
from .options import CATOptions

__all__ = ["FitSet", "fit_set", "model_logits", "apply_cat", "EvalLogits", "eval_logits", "accuracy"]


@dataclass
class FitSet:
    """CAT's fitting images and where they came from (recorded with the run)."""

    images: Tensor
    indices: list[int]  # positions in the calibration split
    description: dict[str, Any]


def fit_set(bundle: DataBundle, calib_used: int, size: int, seed: int = 0) -> FitSet:
    """The `size` calibration-split images that follow the base method's `calib_used` ones.

    The base method calibrates on the first `calib_used` images of the seeded
    permutation of `bundle.calib` (`calibration_tensor`); CAT fits on the next
    ones, so the two sets are disjoint while the split has enough images. When
    it has not, the fitting set starts over at the beginning of the permutation,
    and the overlap is recorded.
    """
    if size < 1:
        raise DataError("the CAT fitting set needs at least one image")
    ds = bundle.calib
    n = len(ds)
    if n == 0:
        raise DataError("the calibration split is empty; CAT has nothing to fit on")
    size = min(size, n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    used = min(calib_used, n)
    idx = perm[used : used + size]
    overlap = size - len(idx)
    idx += perm[:overlap]
    if isinstance(ds, TensorDataset):
        images = ds.tensors[0][idx]
    else:
        images = torch.stack([ds[i][0] for i in idx])
    desc = {
        "split": "calib",
        "data": bundle.name,
        "size": size,
        "seed": seed,
        "offset": used,
        "overlap_with_calibration": overlap,
        "disjoint": overlap == 0,
    }
    return FitSet(images, idx, desc)


@torch.no_grad()
def model_logits(model: nn.Module, images: Tensor, batch_size: int = 256) -> Tensor:
    """Logits [N, C] of `model` (eval mode) on `images`, computed on the model's device."""
    model.eval()
    device = next((t.device for t in model.state_dict().values()), images.device)
    outs = [model(images[i : i + batch_size].to(device)).float() for i in range(0, len(images), batch_size)]
    return torch.cat(outs)


def apply_cat(
    fp_model: nn.Module, qmodel: nn.Module, images: Tensor, options: CATOptions | None = None, batch_size: int = 256
) -> tuple[CATCorrected, CATFit]:
    """Fit CAT on `images` (float vs quantized logits) and wrap `qmodel` with the correction.

    Neither model is changed; the returned wrapper holds `qmodel` itself (not a copy).
    """
    opts = options or CATOptions()
    zf = model_logits(fp_model, images, batch_size)
    zq = model_logits(qmodel, images, batch_size)
    fit = fit_cat(zq, zf.to(zq.device), opts)
    return CATCorrected(qmodel, fit), fit


@dataclass
class EvalLogits:
    """Float and base-quantized logits and labels of an evaluation set (CPU tensors)."""

    fp: Tensor
    q: Tensor
    labels: Tensor


@torch.no_grad()
def eval_logits(
    fp_model: nn.Module,
    qmodel: nn.Module,
    loader: DataLoader,
    device: torch.device | str,
    on_batch: Callable[[int, int], None] | None = None,
) -> EvalLogits:
    """Both models' logits over a loader of (images, labels)."""
    fp, q, labels = [], [], []
    fp_model.eval()
    qmodel.eval()
    for i, (x, y) in enumerate(loader):
        x = x.to(device)
        fp.append(fp_model(x).float().cpu())
        q.append(qmodel(x).float().cpu())
        labels.append(y.cpu())
        if on_batch:
            on_batch(i, len(loader))
    return EvalLogits(torch.cat(fp), torch.cat(q), torch.cat(labels))


def accuracy(logits: Tensor, labels: Tensor) -> dict[str, float]:
    """Top-1/top-5 in percent, like `metrics.evaluate`."""
    ks = (1, min(5, logits.shape[1]))
    hits = topk_accuracy(logits, labels, ks)
    n = max(len(labels), 1)
    return {"top1": 100.0 * hits[1] / n, "top5": 100.0 * hits[ks[1]] / n, "samples": len(labels)}

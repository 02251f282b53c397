"""`CATResult`: everything the UI draws about a fitted correction, as plain JSON-ready data.

Built from a `CATFit` and the float / quantized logits of an evaluation set with
labels (never the fitting set, so fixes and breaks are honest):

- the clusters: centroids, sizes on the fitting and evaluation sets, a 2-D PCA
  projection of the evaluation logits and centroids, each sample's cluster;
- the tables: gamma/beta per cluster and class, which clusters fell back to the
  identity and which slopes were capped;
- the outcome: accuracy before/after overall and per cluster, fixes (wrong before,
  right after) and breaks (right before, wrong after), KL(p_fp || p) and logit MSE
  against the float model before/after;
- the cost: extra numbers and bytes (fp32).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from .fit import CATFit, blend, pca_fit, project

__all__ = ["CATResult", "build_result", "logit_gap", "STATUSES"]

STATUSES = ("right", "wrong", "fixed", "broken")  # per evaluation sample, before -> after


def logit_gap(z: Tensor, zf: Tensor) -> dict[str, float]:
    """KL(softmax(zf) || softmax(z)) averaged over samples, and mean squared logit error."""
    kl = torch.nn.functional.kl_div(z.log_softmax(1), zf.log_softmax(1), log_target=True, reduction="batchmean")
    return {"kl": float(kl), "mse": float((z - zf).square().mean())}


@dataclass
class CATResult:
    """A fitted CAT correction measured on an evaluation set (all fields plain Python data)."""

    options: dict[str, Any]
    alpha: float
    k: int
    pca: int | None
    num_classes: int
    fp_top1: float
    top1_base: float
    top1: float
    fixes: int
    breaks: int
    gap_before: dict[str, float]
    gap_after: dict[str, float]
    centroids: list[list[float]]  # [K, d] in the clustering space
    centroids_2d: list[list[float]]  # [K, 2]
    points_2d: list[list[float]]  # [N_eval, 2]
    assign: list[int]  # [N_eval]
    labels: list[int]
    status: list[str]  # [N_eval], one of STATUSES
    fit_counts: list[int]  # [K]
    eval_counts: list[int]  # [K]
    acc_before: list[float | None]  # [K] per cluster on the evaluation set (None: no sample)
    acc_after: list[float | None]
    fixes_per_cluster: list[int]
    breaks_per_cluster: list[int]
    gamma: list[list[float]]  # [K, C]
    beta: list[list[float]]
    fallback: list[int]  # clusters kept at the identity
    capped: int  # capped slopes
    capped_per_cluster: list[int]
    overhead_floats: int
    overhead_bytes: int
    fit_set: dict[str, Any] = field(default_factory=dict)
    eval_set: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    def summary(self) -> dict[str, Any]:
        """The scalars and per-cluster counts (what a run record keeps; no per-sample lists)."""
        skip = {"points_2d", "assign", "labels", "status", "centroids", "centroids_2d", "gamma", "beta"}
        return {k: v for k, v in self.to_dict().items() if k not in skip}


def _rows(t: Tensor) -> list[list[float]]:
    return [[float(v) for v in row] for row in t.double().cpu().tolist()]


def _per_cluster_acc(hit: Tensor, assign: Tensor, k: int) -> list[float | None]:
    n = torch.bincount(assign, minlength=k)
    s = torch.bincount(assign, weights=hit.double(), minlength=k)
    return [100.0 * float(s[i]) / int(n[i]) if int(n[i]) else None for i in range(k)]


def _display_projection(fit: CATFit, fit_zq: Tensor | None, zq: Tensor) -> tuple[Tensor, Tensor]:
    """2-D PCA coordinates of `zq` and of the centroids (mapped back to logit space first)."""
    base = fit_zq if fit_zq is not None and len(fit_zq) >= 2 else zq
    dims = min(2, base.shape[0], base.shape[1])
    mean, comps = pca_fit(base.float(), dims)
    cent = fit.centroids.float()
    if fit.pca_components is not None:
        cent = fit.pca_mean + cent @ fit.pca_components  # back to logit space
    pts, cen = project(zq.float(), mean, comps), project(cent, mean, comps)
    if dims < 2:  # one class or one sample: pad a zero axis
        pts = torch.cat([pts, torch.zeros(len(pts), 2 - dims)], 1)
        cen = torch.cat([cen, torch.zeros(len(cen), 2 - dims)], 1)
    return pts, cen


@torch.no_grad()
def build_result(
    fit: CATFit,
    zq: Tensor,
    zf: Tensor,
    labels: Tensor,
    alpha: float | None = None,
    fit_zq: Tensor | None = None,
    fit_set: dict[str, Any] | None = None,
    eval_set: dict[str, Any] | None = None,
) -> CATResult:
    """Measure `fit` on evaluation logits `zq` (base quantized) and `zf` (float) with `labels`.

    Args:
        fit: The fitted correction.
        zq, zf: Evaluation logits [N, C] (any device; moved to the fit's device).
        labels: True classes [N].
        alpha: Blend factor (default: the fit's).
        fit_zq: Quantized logits of the fitting set, for the 2-D projection (default: `zq`).
        fit_set, eval_set: Descriptions recorded with the result.
    """
    a = fit.options.alpha if alpha is None else float(alpha)
    dev = fit.gamma.device
    zq, zf, labels = zq.float().to(dev), zf.float().to(dev), labels.to(dev)
    assign = fit.predict(zq)
    zc = blend(zq, fit.gamma, fit.beta, assign, a)
    right0, right1 = zq.argmax(1) == labels, zc.argmax(1) == labels
    fixed, broken = ~right0 & right1, right0 & ~right1
    status = [STATUSES[int(i)] for i in (fixed.long() * 2 + broken.long() * 3 + (~right0 & ~right1).long())]
    k = int(fit.gamma.shape[0])
    pts, cen = _display_projection(fit, fit_zq.to(dev) if fit_zq is not None else None, zq)
    n = max(len(labels), 1)
    floats = fit.overhead_floats()
    return CATResult(
        options=fit.options.to_dict(),
        alpha=a,
        k=k,
        pca=fit.options.pca,
        num_classes=fit.num_classes,
        fp_top1=100.0 * float((zf.argmax(1) == labels).sum()) / n,
        top1_base=100.0 * float(right0.sum()) / n,
        top1=100.0 * float(right1.sum()) / n,
        fixes=int(fixed.sum()),
        breaks=int(broken.sum()),
        gap_before=logit_gap(zq, zf),
        gap_after=logit_gap(zc, zf),
        centroids=_rows(fit.centroids),
        centroids_2d=_rows(cen),
        points_2d=_rows(pts),
        assign=assign.cpu().tolist(),
        labels=labels.cpu().tolist(),
        status=status,
        fit_counts=fit.counts.cpu().tolist(),
        eval_counts=torch.bincount(assign, minlength=k).cpu().tolist(),
        acc_before=_per_cluster_acc(right0, assign, k),
        acc_after=_per_cluster_acc(right1, assign, k),
        fixes_per_cluster=torch.bincount(assign, weights=fixed.double(), minlength=k).long().cpu().tolist(),
        breaks_per_cluster=torch.bincount(assign, weights=broken.double(), minlength=k).long().cpu().tolist(),
        gamma=_rows(fit.gamma),
        beta=_rows(fit.beta),
        fallback=torch.nonzero(fit.fallback).flatten().cpu().tolist(),
        capped=int(fit.capped.sum()),
        capped_per_cluster=fit.capped.sum(1).cpu().tolist(),
        overhead_floats=floats,
        overhead_bytes=4 * floats,
        fit_set=dict(fit_set or {}),
        eval_set=dict(eval_set or {}),
    )

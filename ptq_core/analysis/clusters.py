"""Activation clusters: a layer's outputs (or the logits) of the float and the quantized model in 2-D.

`capture_features` runs a calibrated prepared model twice on the same images, with
quantization off (the float reference, equal to the original model) and on, and
keeps one layer's output per image (spatially pooled when large) plus the logits.
`project` fits PCA (default) on the float features and maps both sets with the same
projection, so the float -> quantized displacement of each image is meaningful;
UMAP (imported only when asked for, fixed `random_state`) is fitted on both sets
together. `kmeans` and `outcome` give the colourings (cluster, correct/wrong).
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..calibrate import iterate_batches
from ..errors import ConfigError, DataError
from ..modules import set_quant_state

__all__ = [
    "Features",
    "LOGITS",
    "MAX_POINTS",
    "MAX_DIM",
    "PROJECTIONS",
    "capture_features",
    "project",
    "kmeans",
    "outcome",
    "OUTCOMES",
    "cluster_view",
]

LOGITS = "logits"  # pseudo-layer name: the model's output
MAX_POINTS = 5000  # UMAP and the scatter plots never see more points
MAX_DIM = 2048  # features per image kept for the projection (spatial average pooling above this)
PROJECTIONS = ("pca", "umap")
OUTCOMES = ("both right", "quantization broke it", "quantization fixed it", "both wrong")


@dataclass
class Features:
    """Per-image features of one layer in float and quantized form, with predictions."""

    float_feats: np.ndarray  # (N, D)
    quant_feats: np.ndarray  # (N, D)
    pred_float: np.ndarray  # (N,)
    pred_quant: np.ndarray  # (N,)


def _pool(t: torch.Tensor) -> torch.Tensor:
    """(N, D) features of a layer output; 4-D maps are average-pooled until C*h*w <= MAX_DIM."""
    if t.dim() == 4 and t[0].numel() > MAX_DIM:
        side = max(1, int(math.sqrt(MAX_DIM / t.shape[1])))
        t = F.adaptive_avg_pool2d(t, (min(side, t.shape[2]), min(side, t.shape[3])))
    if t.dim() == 3 and t[0].numel() > MAX_DIM:  # tokens: average over the sequence
        t = t.mean(1)
    flat = t.flatten(1)
    return flat[:, :MAX_DIM] if flat.shape[1] > MAX_DIM else flat


@torch.no_grad()
def _run(model: nn.Module, images: torch.Tensor, layer: str, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    feats, logits = [], []
    box: list[torch.Tensor] = []
    handle = None
    if layer != LOGITS:
        handle = model.get_submodule(layer).register_forward_hook(lambda _m, _i, out: box.append(out.detach()))
    try:
        for xb in iterate_batches(images, batch_size):
            box.clear()
            out = model(xb)
            logits.append(out.float().cpu())
            feats.append(_pool(box[0] if box else out).float().cpu())
    finally:
        if handle is not None:
            handle.remove()
    return torch.cat(feats).numpy(), torch.cat(logits).argmax(1).numpy()


def capture_features(qmodel: nn.Module, images: torch.Tensor, layer: str = LOGITS, batch_size: int = 128) -> Features:
    """Float and quantized features of `layer` (a module name or "logits") on `images`.

    Args:
        qmodel: A calibrated prepared model; it is copied, never changed.
        images: Input batch on the model's device.
        layer: Module whose output to keep, or "logits".
        batch_size: Forward batch size.
    """
    if len(images) == 0:
        raise DataError("no images to embed")
    model = copy.deepcopy(qmodel).eval()
    if layer != LOGITS:
        try:
            model.get_submodule(layer)
        except AttributeError:
            raise ConfigError(f"the model has no layer {layer!r}") from None
    set_quant_state(model, False, False)
    f_feats, f_pred = _run(model, images, layer, batch_size)
    set_quant_state(model, True, True)
    q_feats, q_pred = _run(model, images, layer, batch_size)
    if f_feats.shape != q_feats.shape:
        raise DataError(f"layer {layer!r} gives features of different shapes in float and quantized form")
    return Features(f_feats, q_feats, f_pred, q_pred)


def _numba_cache() -> None:
    """Give numba (UMAP's compiler) a writable cache folder so later imports are fast."""
    if "NUMBA_CACHE_DIR" not in os.environ:
        folder = Path(os.environ.get("PTQ_EXPLORER_HOME", Path.home() / ".cache" / "ptq-explorer")) / "numba"
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = str(folder)


def project(float_feats: np.ndarray, quant_feats: np.ndarray, method: str = "pca", seed: int = 0) -> dict[str, Any]:
    """2-D coordinates of both feature sets in one shared space.

    PCA is fitted on the float features only (so the axes are the float model's main
    directions) and applied to both. UMAP is fitted on both sets together (at most
    `MAX_POINTS` points in all) with a fixed `random_state`.

    Returns:
        ``{"float": (N, 2), "quant": (N, 2), "explained": [var ratio of PC1, PC2] or [], "method"}``.
    """
    if method not in PROJECTIONS:
        raise ConfigError(f"projection must be one of {', '.join(PROJECTIONS)}, got {method!r}")
    n = len(float_feats)
    if n < 3 or float_feats.shape != quant_feats.shape:
        raise DataError("projection needs at least 3 images with float and quantized features of one shape")
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=seed).fit(float_feats)
        return {
            "float": pca.transform(float_feats),
            "quant": pca.transform(quant_feats),
            "method": "pca",
            "explained": [float(v) for v in pca.explained_variance_ratio_],
        }
    if 2 * n > MAX_POINTS:
        raise ConfigError(f"UMAP takes at most {MAX_POINTS} points: use at most {MAX_POINTS // 2} images")
    _numba_cache()
    import umap  # slow import (numba): only when asked for

    both = umap.UMAP(n_components=2, random_state=seed, n_neighbors=min(15, 2 * n - 1)).fit_transform(
        np.concatenate([float_feats, quant_feats])
    )
    return {"float": both[:n], "quant": both[n:], "method": "umap", "explained": []}


def kmeans(feats: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """k-means cluster index of each row (k-means++ start, 4 restarts, fixed seed)."""
    from sklearn.cluster import KMeans

    if not 1 <= k <= len(feats):
        raise ConfigError(f"k must be between 1 and the number of images ({len(feats)}), got {k}")
    return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(feats)


def outcome(labels: np.ndarray, pred_float: np.ndarray, pred_quant: np.ndarray) -> np.ndarray:
    """Index into `OUTCOMES` per image: both right / quantization broke it / fixed it / both wrong."""
    fr, qr = pred_float == labels, pred_quant == labels
    return np.where(fr & qr, 0, np.where(fr & ~qr, 1, np.where(~fr & qr, 2, 3)))


def cluster_view(
    qmodel: nn.Module,
    images: torch.Tensor,
    labels: np.ndarray,
    layer: str = LOGITS,
    method: str = "pca",
    k: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Everything the clusters page draws: coordinates, classes, clusters, outcomes, displacement.

    The k-means clusters are those of the float features, so one colour follows the
    same images into the quantized panel.
    """
    if len(images) > MAX_POINTS:
        raise ConfigError(f"at most {MAX_POINTS} images, got {len(images)}")
    feats = capture_features(qmodel, images, layer)
    coords = project(feats.float_feats, feats.quant_feats, method, seed)
    labels = np.asarray(labels)
    shift = np.linalg.norm(feats.quant_feats - feats.float_feats, axis=1)
    scale = np.linalg.norm(feats.float_feats, axis=1).mean()
    return {
        "float": coords["float"].astype(np.float32),
        "quant": coords["quant"].astype(np.float32),
        "explained": coords["explained"],
        "method": method,
        "labels": labels.astype(int),
        "clusters": kmeans(feats.float_feats, k, seed).astype(int),
        "outcome": outcome(labels, feats.pred_float, feats.pred_quant).astype(int),
        "outcome_names": list(OUTCOMES),
        "pred_float": feats.pred_float.astype(int),
        "pred_quant": feats.pred_quant.astype(int),
        "relative_shift": (shift / max(float(scale), 1e-12)).astype(np.float32),
        "dim": int(feats.float_feats.shape[1]),
    }

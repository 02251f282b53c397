"""CAT stage 2 (docs/methods.md): PCA, k-means and the closed-form per-cluster, per-class affine map.

Everything here is pure tensor math on logits, device-agnostic and deterministic
for a given seed. For cluster k with samples S_k and class c:

    gamma[k, c] = cov_{S_k}(Zq[:, c], Zf[:, c]) / max(var_{S_k}(Zq[:, c]), floor)
    beta[k, c]  = mean_{S_k} Zf[:, c] - gamma[k, c] * mean_{S_k} Zq[:, c]

(population moments), i.e. ordinary least squares of the float logit on the
quantized logit. At inference a sample goes to its nearest centroid k* and
``z~ = (1 - alpha) z + alpha (gamma[k*] * z + beta[k*])``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError, NonFiniteError
from .options import CATOptions

__all__ = ["CATFit", "pca_fit", "project", "kmeans", "nearest", "affine_tables", "blend", "fit_cat"]


def _check_logits(z: Tensor, what: str) -> None:
    if z.dim() != 2 or z.shape[0] == 0 or z.shape[1] == 0:
        raise ConfigError(f"{what} must be a non-empty [samples, classes] matrix, got shape {tuple(z.shape)}")
    if not bool(torch.isfinite(z).all()):
        raise NonFiniteError(f"{what} contains NaN or infinite values")


def pca_fit(z: Tensor, dims: int) -> tuple[Tensor, Tensor]:
    """Principal axes of the rows of `z` (as sklearn's PCA: centred SVD, deterministic signs).

    Args:
        z: Logits [N, C].
        dims: Number of components, at most min(N, C).

    Returns:
        ``(mean [C], components [dims, C])``; each component's largest-magnitude entry is positive.
    """
    n, c = z.shape
    if dims > min(n, c):
        raise ConfigError(f"PCA to {dims} dimensions needs at most min(samples, classes) = {min(n, c)}")
    z64 = z.double()
    mean = z64.mean(0)
    _, _, vt = torch.linalg.svd(z64 - mean, full_matrices=False)
    comps = vt[:dims]  # [d, C]
    idx = comps.abs().argmax(1)
    signs = torch.sign(comps[torch.arange(dims, device=z.device), idx])
    comps = comps * torch.where(signs == 0, torch.ones_like(signs), signs)[:, None]
    return mean.to(z.dtype), comps.to(z.dtype)


def project(z: Tensor, mean: Tensor | None, components: Tensor | None) -> Tensor:
    """The clustering features of logits `z` [N, C]: PCA coordinates [N, d], or `z` itself without PCA."""
    if components is None or components.numel() == 0:
        return z
    return (z - mean) @ components.T


def _sq_dist(x: Tensor, centers: Tensor) -> Tensor:
    """Squared Euclidean distances [N, K] (float64 for stable ties)."""
    x64, c64 = x.double(), centers.double()
    return (x64.square().sum(1, keepdim=True) - 2.0 * x64 @ c64.T + c64.square().sum(1)[None]).clamp_(min=0.0)


def nearest(x: Tensor, centers: Tensor) -> Tensor:
    """Index of the nearest centre for every row of `x` (k-means predict) [N]."""
    return _sq_dist(x, centers).argmin(1)


def _plus_plus(x: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """k-means++ seeding: each next centre drawn with probability proportional to squared distance."""
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=gen))
    idx = [first]
    d2 = _sq_dist(x, x[first : first + 1])[:, 0]
    for _ in range(1, k):
        total = float(d2.sum())
        probs = d2 / total if total > 0 else torch.ones_like(d2) / n
        nxt = int(torch.multinomial(probs.float().cpu(), 1, generator=gen))
        idx.append(nxt)
        d2 = torch.minimum(d2, _sq_dist(x, x[nxt : nxt + 1])[:, 0])
    return x[idx].clone()


def kmeans(x: Tensor, k: int, seed: int = 42, iters: int = 100) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means with k-means++ seeding (one initialisation, fixed seed).

    An empty cluster is moved to the point farthest from its current centre.

    Args:
        x: Features [N, d].
        k: Number of clusters, at most N.
        seed: Seed of the initialisation.
        iters: Maximum Lloyd iterations (stops earlier when assignments settle).

    Returns:
        ``(centroids [k, d], assignments [N])``.
    """
    n = x.shape[0]
    if k > n:
        raise ConfigError(f"k-means with {k} clusters needs at least {k} fitting samples, got {n}")
    gen = torch.Generator().manual_seed(int(seed))
    x64 = x.double()
    centers = _plus_plus(x64, k, gen)
    assign = nearest(x64, centers)
    for _ in range(iters):
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centers).index_add_(0, assign, x64)
        new = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centers)
        empty = torch.nonzero(counts == 0).flatten().tolist()
        if empty:  # relocate each empty cluster to the point farthest from its centre
            spread = (x64 - new[assign]).square().sum(1)
            for j in empty:
                far = int(spread.argmax())
                new[j], spread[far] = x64[far], -1.0
        new_assign = nearest(x64, new)
        centers = new
        if torch.equal(new_assign, assign):
            break
        assign = new_assign
    return centers.to(x.dtype), nearest(x64, centers)


@dataclass
class _Moments:
    counts: Tensor  # [K]
    mq: Tensor  # [K, C]
    mf: Tensor
    var: Tensor
    cov: Tensor


def _moments(zq: Tensor, zf: Tensor, assign: Tensor, k: int) -> _Moments:
    """Per-cluster, per-class population means, variance of zq and covariance (two passes, float64)."""
    q, f = zq.double(), zf.double()
    counts = torch.bincount(assign, minlength=k)
    n = counts.clamp(min=1).double()[:, None]
    mq = torch.zeros(k, q.shape[1], dtype=q.dtype, device=q.device).index_add_(0, assign, q) / n
    mf = torch.zeros_like(mq).index_add_(0, assign, f) / n
    dq, df = q - mq[assign], f - mf[assign]
    var = torch.zeros_like(mq).index_add_(0, assign, dq * dq) / n
    cov = torch.zeros_like(mq).index_add_(0, assign, dq * df) / n
    return _Moments(counts, mq, mf, var, cov)


def affine_tables(
    zq: Tensor,
    zf: Tensor,
    assign: Tensor,
    k: int,
    min_cluster: int = 1,
    max_gamma: float | None = None,
    var_floor: float = 1e-8,
) -> dict[str, Tensor]:
    """Closed-form gamma/beta per cluster and class.

    Args:
        zq, zf: Quantized and float logits [N, C].
        assign: Cluster of every sample [N].
        k: Number of clusters.
        min_cluster: Clusters with fewer samples keep the identity (gamma 1, beta 0).
        max_gamma: Clip slopes to [-max_gamma, max_gamma] (beta refitted); None: no clipping.
        var_floor: Floor of the variance in the slope's denominator.

    Returns:
        Dict with ``gamma``, ``beta`` [K, C] (dtype of `zq`), ``counts`` [K], ``fallback`` [K] (bool)
        and ``capped`` [K, C] (bool).
    """
    m = _moments(zq, zf, assign, k)
    gamma = m.cov / m.var.clamp(min=var_floor)
    fallback = m.counts < min_cluster
    capped = torch.zeros_like(gamma, dtype=torch.bool)
    if max_gamma is not None:
        capped = (gamma.abs() > max_gamma) & ~fallback[:, None]
        gamma = gamma.clamp(-max_gamma, max_gamma)
    beta = m.mf - gamma * m.mq
    gamma = torch.where(fallback[:, None], torch.ones_like(gamma), gamma)
    beta = torch.where(fallback[:, None], torch.zeros_like(beta), beta)
    return {
        "gamma": gamma.to(zq.dtype),
        "beta": beta.to(zq.dtype),
        "counts": m.counts,
        "fallback": fallback,
        "capped": capped,
    }


def blend(z: Tensor, gamma: Tensor, beta: Tensor, assign: Tensor, alpha: float | Tensor) -> Tensor:
    """``(1 - alpha) z + alpha (gamma[k] z + beta[k])`` with k = `assign` per row."""
    return (1.0 - alpha) * z + alpha * (gamma[assign] * z + beta[assign])


@dataclass
class CATFit:
    """A fitted correction: projection, centroids, tables, and how the fitting set fell into clusters."""

    options: CATOptions
    centroids: Tensor  # [K, d]
    gamma: Tensor  # [K, C]
    beta: Tensor  # [K, C]
    counts: Tensor  # [K] fitting samples per cluster
    fallback: Tensor  # [K] bool
    capped: Tensor  # [K, C] bool
    assign: Tensor  # [N] fitting-set clusters
    pca_mean: Tensor | None = None  # [C]
    pca_components: Tensor | None = None  # [d, C]
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return int(self.gamma.shape[1])

    @property
    def feature_dims(self) -> int:
        """Dimensions k-means ran in (d with PCA, C without)."""
        return int(self.centroids.shape[1])

    def features(self, z: Tensor) -> Tensor:
        """Clustering features of logits `z`."""
        return project(z, self.pca_mean, self.pca_components)

    def predict(self, z: Tensor) -> Tensor:
        """Nearest centroid of every row of logits `z` [N]."""
        return nearest(self.features(z), self.centroids)

    def correct(self, z: Tensor, alpha: float | None = None) -> Tensor:
        """Corrected logits (alpha defaults to the fitted options')."""
        a = self.options.alpha if alpha is None else alpha
        return blend(z, self.gamma, self.beta, self.predict(z), a)

    def overhead_floats(self) -> int:
        """Extra numbers stored: K*2*C tables + K*d centroids (+ d*C + C for PCA)."""
        k, c, d = self.gamma.shape[0], self.num_classes, self.feature_dims
        pca = self.pca_components.numel() + self.pca_mean.numel() if self.pca_components is not None else 0
        return k * 2 * c + k * d + pca


def fit_cat(zq: Tensor, zf: Tensor, options: CATOptions | None = None) -> CATFit:
    """Fit CAT on quantized logits `zq` and float logits `zf` of the same fitting images [N, C].

    Steps: optional PCA of `zq`, k-means, closed-form tables (docs/methods.md).
    """
    opts = options or CATOptions()
    _check_logits(zq, "quantized logits")
    _check_logits(zf, "float logits")
    if zq.shape != zf.shape:
        raise ConfigError(f"quantized {tuple(zq.shape)} and float {tuple(zf.shape)} logits differ in shape")
    zq, zf = zq.detach().float(), zf.detach().float().to(zq.device)
    mean = comps = None
    if opts.pca is not None:
        mean, comps = pca_fit(zq, opts.pca)
    feats = project(zq, mean, comps)
    centroids, assign = kmeans(feats, opts.k, opts.kmeans_seed, opts.kmeans_iters)
    t = affine_tables(zq, zf, assign, opts.k, opts.min_cluster, opts.max_gamma, opts.var_floor)
    return CATFit(opts, centroids, t["gamma"], t["beta"], t["counts"], t["fallback"], t["capped"], assign, mean, comps)

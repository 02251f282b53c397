"""CAT's stage-2 settings (methods.md §2.3-2.5): clusters, PCA, blend factor, fitting set, safeguards."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

__all__ = ["CATOptions"]


@dataclass
class CATOptions:
    """How CAT's correction is fitted and applied.

    Attributes:
        k: Number of k-means clusters (64 in the paper; 1 is the plain affine map it argues against).
        alpha: Blend toward the cluster's affine prediction, 0 (none) to 1 (all); 0.4 in the paper.
        pca: PCA dimensions of the quantized logits before k-means; None (the paper's default) skips PCA.
        fit_size: Fitting images, drawn from the calibration split after the base method's images (1024).
        min_cluster: Clusters with fewer fitting samples than this keep the identity (gamma 1, beta 0).
            The paper only does this for empty clusters (1); our default 2 also covers single-sample
            clusters, whose fitted map would copy one float logit vector.
        max_gamma: Slopes are clipped to [-max_gamma, max_gamma] (beta refitted so the cluster mean
            still maps onto the float mean); None leaves them as fitted (the paper's code).
        kmeans_seed: Seed of the k-means++ initialisation (the reference uses random_state 42).
        kmeans_iters: Lloyd iterations at most.
        var_floor: Floor of the per-class variance (1e-8 in the reference code).
    """

    k: int = 64
    alpha: float = 0.4
    pca: int | None = None
    fit_size: int = 1024
    min_cluster: int = 2
    max_gamma: float | None = 10.0
    kmeans_seed: int = 42
    kmeans_iters: int = 100
    var_floor: float = 1e-8

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `ConfigError` with a one-line reason for a bad setting."""
        for name in ("k", "fit_size", "min_cluster", "kmeans_iters"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"CAT {name} must be a positive integer, got {v!r}")
        if not isinstance(self.alpha, (int, float)) or not 0.0 <= float(self.alpha) <= 1.0:
            raise ConfigError(f"CAT alpha must be in [0, 1], got {self.alpha!r}")
        if self.pca is not None and (not isinstance(self.pca, int) or isinstance(self.pca, bool) or self.pca < 1):
            raise ConfigError(f"CAT pca must be a positive number of dimensions or None, got {self.pca!r}")
        if self.max_gamma is not None and not float(self.max_gamma) > 0:
            raise ConfigError(f"CAT max_gamma must be positive or None, got {self.max_gamma!r}")
        if not float(self.var_floor) > 0:
            raise ConfigError(f"CAT var_floor must be positive, got {self.var_floor!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CATOptions:
        """Inverse of `to_dict`; unknown keys are an error."""
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown CAT setting(s): {', '.join(sorted(unknown))}")
        return cls(**d)

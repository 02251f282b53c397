"""CAT's stage-2 settings (docs/methods.md): clusters, PCA, blend factor, fitting set, safeguards."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..settings import check_settings, setting

__all__ = ["CATOptions"]


@dataclass
class CATOptions:
    """How CAT's correction is fitted and applied.

    `min_cluster`: the paper keeps the identity only for empty clusters (1); our default 2
    also covers single-sample clusters, whose fitted map would copy one float logit vector.
    `max_gamma`: slopes are clipped and beta refitted so the cluster mean still maps onto the
    float mean; unset leaves them as fitted (the paper's code).
    """

    k: int = setting(64, help="k-means clusters (64 in the paper; 1 is one plain affine map)", min=1)
    alpha: float = setting(0.4, help="blend toward the cluster's affine prediction, 0 (none) to 1 (all)", min=0, max=1)
    pca: int | None = setting(None, help="PCA dimensions of the logits before k-means (unset: no PCA)", min=1)
    fit_size: int = setting(1024, help="fitting images, from the calibration split after the method's", min=1)
    min_cluster: int = setting(2, help="clusters with fewer fitting samples keep the identity", min=1)
    max_gamma: float | None = setting(10.0, help="slopes clipped to [-max_gamma, max_gamma] (unset: as fitted)", min=0)
    kmeans_seed: int = setting(42, help="seed of the k-means++ initialisation", min=0)
    kmeans_iters: int = setting(100, help="Lloyd iterations at most", min=1)
    var_floor: float = setting(1e-8, help="floor of the per-class variance", min=0)

    def __post_init__(self) -> None:
        self.validate()
        check_settings(self)

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

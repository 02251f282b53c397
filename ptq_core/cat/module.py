"""`CATCorrected`: a quantized classifier followed by CAT's cluster-wise logit correction.

An ordinary `nn.Module` whose correction lives in buffers, so `state_dict()` holds
the base model and the tables together and `evaluate`, the CLI and the app use it
unchanged. `CATCorrected.from_state_dict(base, sd)` rebuilds one from a saved
state_dict (shapes are read from the file); `save_cat` / `load_cat` do it through
a safetensors file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..checkpoints import load_state_dict, save_state_dict
from ..errors import CheckpointError, ConfigError
from .fit import CATFit, blend, nearest, project

__all__ = ["CATCorrected", "save_cat", "load_cat", "unwrap"]

_TABLES = ("centroids", "gamma", "beta", "pca_mean", "pca_components")


class CATCorrected(nn.Module):
    """``base`` followed by CAT: nearest centroid, then ``(1 - alpha) z + alpha (gamma z + beta)``.

    Args:
        base: The quantized model (its logits are corrected).
        fit: A `CATFit`; None builds an empty shell for loading (see `from_state_dict`).
        alpha: Blend factor; defaults to the fit's.
    """

    centroids: Tensor
    gamma: Tensor
    beta: Tensor
    pca_mean: Tensor
    pca_components: Tensor
    alpha: Tensor

    def __init__(self, base: nn.Module, fit: CATFit | None = None, alpha: float | None = None) -> None:
        super().__init__()
        self.base = base
        device = next((t.device for t in base.state_dict().values()), torch.device("cpu"))
        empty = torch.zeros(0, device=device)
        if fit is None:
            tables = {name: empty for name in _TABLES}
            a = 0.0 if alpha is None else alpha
        else:
            tables = {
                "centroids": fit.centroids,
                "gamma": fit.gamma,
                "beta": fit.beta,
                "pca_mean": fit.pca_mean if fit.pca_mean is not None else empty,
                "pca_components": fit.pca_components if fit.pca_components is not None else empty,
            }
            a = fit.options.alpha if alpha is None else alpha
        for name, t in tables.items():
            self.register_buffer(name, t.detach().float().to(device).clone())
        self.register_buffer("alpha", torch.tensor(float(a), device=device))
        self.set_alpha(float(a))

    @property
    def k(self) -> int:
        """Number of clusters."""
        return int(self.gamma.shape[0])

    @property
    def has_pca(self) -> bool:
        """Whether clustering runs on PCA coordinates."""
        return self.pca_components.numel() > 0

    def set_alpha(self, alpha: float) -> None:
        """Change the blend factor (0 = the base model's logits)."""
        if not 0.0 <= float(alpha) <= 1.0:
            raise ConfigError(f"CAT alpha must be in [0, 1], got {alpha}")
        self.alpha.fill_(float(alpha))

    def features(self, z: Tensor) -> Tensor:
        """Clustering features of logits `z` (PCA coordinates or the logits)."""
        return project(z, self.pca_mean, self.pca_components) if self.has_pca else z

    def assign(self, z: Tensor) -> Tensor:
        """Nearest centroid of each row of logits `z` [N]."""
        return nearest(self.features(z), self.centroids)

    def correct(self, z: Tensor) -> Tensor:
        """Corrected logits for base logits `z` [N, C]."""
        if self.k == 0:
            raise ConfigError("this CATCorrected holds no fitted tables; load a state_dict first")
        out = blend(z.float(), self.gamma, self.beta, self.assign(z.float()), self.alpha)
        return out.to(z.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.correct(self.base(x))

    def overhead_floats(self) -> int:
        """Numbers CAT adds to the model (tables, centroids, PCA; alpha excluded)."""
        return sum(getattr(self, name).numel() for name in _TABLES)

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name in _TABLES:  # the tables' shapes come from the file (an empty shell has none)
            incoming = state_dict.get(prefix + name)
            if incoming is not None:
                own = getattr(self, name)
                own.data = torch.empty(incoming.shape, dtype=own.dtype, device=own.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @classmethod
    def from_state_dict(cls, base: nn.Module, state_dict: Mapping[str, Tensor]) -> CATCorrected:
        """Rebuild around `base` (same structure as the saved base) from a `state_dict()` of a `CATCorrected`.

        The base's weights and quantizer parameters come from the file as well; its
        quantization switches are not part of a state_dict, so `base` must already
        have them set (e.g. `set_quant_state(base, True, True)` on a `prepare()`d copy).
        """
        missing = [name for name in (*_TABLES, "alpha") if name not in state_dict]
        if missing:
            raise CheckpointError(f"not a CAT state_dict: missing {', '.join(missing)}")
        model = cls(base)
        try:
            model.load_state_dict(dict(state_dict))
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"CAT state_dict does not fit this base model: {first}") from None
        return model


def save_cat(model: CATCorrected, path: str | Path) -> Path:
    """Write the whole corrected model's state_dict as safetensors."""
    return save_state_dict(model.state_dict(), path)


def load_cat(base: nn.Module, path: str | Path) -> CATCorrected:
    """Read a file written by `save_cat` (safely: tensors only) around a structurally equal `base`."""
    return CATCorrected.from_state_dict(base, load_state_dict(path))


def unwrap(model: nn.Module) -> nn.Module:
    """The base model of a `CATCorrected`, anything else unchanged."""
    return model.base if isinstance(model, CATCorrected) else model

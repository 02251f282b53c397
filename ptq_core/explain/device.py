"""Where the explanations' torch work runs: a model's device, CUDA availability, the thread budget."""

from __future__ import annotations

import os

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["model_device", "cuda_available", "set_threads", "default_threads"]


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (CPU for a parameter-free model)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def cuda_available() -> bool:
    """Whether a CUDA device can be used."""
    return torch.cuda.is_available()


def default_threads(env: str = "PTQ_UI_THREADS") -> int:
    """Torch threads for an interactive process: `$env` when it is a positive integer, else half the cores."""
    value = os.environ.get(env, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else max(1, (os.cpu_count() or 2) // 2)


def set_threads(threads: int) -> None:
    """Set torch's thread budget of the calling thread (see `ptq_ui.jobs` on per-thread OpenMP teams)."""
    if threads < 1:
        raise ConfigError(f"threads must be at least 1, got {threads}")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)

"""The images an explanation looks at: a seeded calibration draw or the first test images, on the model's device.

Also `run_model`, a forward pass that turns "this model does not take this data" into one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from ..data import DataBundle, calibration_tensor, make_loader
from ..errors import DataError
from .device import model_device

__all__ = ["calibration_images", "example_batch", "test_batch", "model_fits", "run_model"]


def calibration_images(model: nn.Module, bundle: DataBundle, n: int, seed: int = 0) -> torch.Tensor:
    """`n` images of the seeded calibration draw, on the model's device."""
    return calibration_tensor(bundle, n, seed=seed).to(model_device(model))


def example_batch(model: nn.Module, bundle: DataBundle, n: int = 2) -> torch.Tensor:
    """The first `n` images of the seed-0 calibration draw, on the model's device."""
    return calibration_images(model, bundle, n, seed=0)


def test_batch(model: nn.Module, bundle: DataBundle, n: int) -> tuple[torch.Tensor, np.ndarray]:
    """The first `n` test images (on the model's device) and their labels."""
    x, y = next(iter(make_loader(bundle.test, batch_size=n, limit=n)))
    return x.to(model_device(model)), y.numpy()


test_batch.__test__ = False  # not a pytest test, despite its name


@contextmanager
def model_fits(x: torch.Tensor) -> Iterator[None]:
    """Within the block, a forward pass on `x` that fails raises a one-line DataError (model and data do not fit)."""
    try:
        yield
    except (RuntimeError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise DataError(f"the model cannot run on this data (input {tuple(x.shape[1:])}): {first}") from None


def run_model(model: nn.Module, x: torch.Tensor) -> None:
    """Run the model on `x`; fail with a one-line message when model and data do not fit together."""
    with model_fits(x), torch.no_grad():
        model(x)

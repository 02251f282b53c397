"""Exceptions raised by ptq_core.

Every error a user can cause (bad bit-width, bad checkpoint, empty data folder,
unsupported model) is a subclass of :class:`PTQError`, so the CLI and the app can
show its one-line message instead of a stack trace.
"""

from __future__ import annotations

__all__ = [
    "PTQError",
    "BitWidthError",
    "ConfigError",
    "CheckpointError",
    "UnsafeCheckpointError",
    "NonFiniteError",
    "DataError",
    "ModelNotFoundError",
    "WeightsUnavailableError",
    "UnsupportedModelError",
    "RunCancelled",
    "ExportError",
]


class PTQError(Exception):
    """Base class for every error a user can cause; its message is one line."""


class BitWidthError(PTQError, ValueError):
    """A bit-width outside the supported range (2-8, or 32 for float)."""


class ConfigError(PTQError, ValueError):
    """A configuration value that is out of range or of the wrong type."""


class CheckpointError(PTQError):
    """A checkpoint that cannot be read or does not fit the architecture."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle that would need to run code (import classes) to load."""


class NonFiniteError(PTQError, ValueError):
    """NaN or infinite values where finite ones are required."""


class DataError(PTQError):
    """A data set that is missing, empty or malformed."""


class ModelNotFoundError(PTQError, KeyError):
    """A model name that is neither in the zoo nor in torchvision's list."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it plain
        return str(self.args[0]) if self.args else ""


class WeightsUnavailableError(PTQError):
    """Pretrained weights that are neither cached nor downloadable."""


class UnsupportedModelError(PTQError):
    """A model that cannot be prepared for quantization at all."""


class RunCancelled(PTQError):
    """Raised inside a method when the user cancels a run."""


class ExportError(PTQError):
    """A quantized model (or one of its layers) that cannot be written in a deployable form."""

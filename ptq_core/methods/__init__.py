"""The method registry: one file per algorithm, one shared entry point `quantize`."""

from __future__ import annotations

from . import rtn  # noqa: F401  (registers "rtn")
from .base import (
    METHODS,
    MethodConfig,
    ProgressEvent,
    ProgressFn,
    QuantResult,
    config_from_dict,
    emit,
    method_names,
    quantize,
    register_method,
)
from .rtn import RTNConfig

__all__ = [
    "METHODS",
    "MethodConfig",
    "ProgressEvent",
    "ProgressFn",
    "QuantResult",
    "RTNConfig",
    "config_from_dict",
    "emit",
    "method_names",
    "quantize",
    "register_method",
]

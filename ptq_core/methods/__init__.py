"""The method registry: one file per algorithm, one shared entry point `quantize`."""

from __future__ import annotations

from . import adaround, brecq, pdquant, qdrop, rtn  # noqa: F401  (each registers its method)
from .adaround import AdaRoundConfig
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
from .brecq import BRECQConfig
from .pdquant import PDQuantConfig
from .qdrop import QDropConfig
from .recon_base import ReconMethodConfig
from .rtn import RTNConfig

__all__ = [
    "AdaRoundConfig",
    "BRECQConfig",
    "METHODS",
    "MethodConfig",
    "ProgressEvent",
    "PDQuantConfig",
    "ProgressFn",
    "QDropConfig",
    "QuantResult",
    "RTNConfig",
    "ReconMethodConfig",
    "config_from_dict",
    "emit",
    "method_names",
    "quantize",
    "register_method",
]

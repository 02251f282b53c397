"""The method registry: one file per algorithm, one shared entry point `quantize`."""

from __future__ import annotations

from . import adaround, brecq, cat, comq, gptq, multipoint, pdquant, qdrop, repapq, rtn  # noqa: F401  (each registers its method)
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
from .cat import CATRefineConfig
from .comq import COMQConfig
from .gptq import GPTQConfig
from .layerwise_base import LayerwiseConfig
from .multipoint import MultipointConfig
from .pdquant import PDQuantConfig
from .qdrop import QDropConfig
from .recon_base import ReconMethodConfig
from .repapq import RepAPQConfig
from .rtn import RTNConfig

__all__ = [
    "COMQConfig",
    "GPTQConfig",
    "LayerwiseConfig",
    "MultipointConfig",
    "AdaRoundConfig",
    "BRECQConfig",
    "CATRefineConfig",
    "METHODS",
    "MethodConfig",
    "ProgressEvent",
    "PDQuantConfig",
    "ProgressFn",
    "QDropConfig",
    "QuantResult",
    "RTNConfig",
    "ReconMethodConfig",
    "RepAPQConfig",
    "config_from_dict",
    "emit",
    "method_names",
    "quantize",
    "register_method",
]

"""ptq_core: a device-agnostic post-training quantization core for vision networks.

Quick start (Python)::

    from ptq_core import load_model, load_data, calibration_tensor, quantize, RTNConfig, QuantSpec
    loaded = load_model("fmnist-resnet20")
    data = load_data("fmnist-sample")
    calib = calibration_tensor(data, 1024)
    result = quantize(loaded.model, calib, RTNConfig(quant=QuantSpec(wbits=4, abits=4)))
    result.model  # fake-quantized copy, ready to evaluate

Or end to end, recorded in the run store::

    record, _ = run_quantization(RunSpec(model="fmnist-resnet20", method=make_config("rtn", wbits=4, abits=4)))
"""

from __future__ import annotations

from .blocks import Unit, UnitPlan, find_units, reconstruction_units
from .cat import CATCorrected, CATOptions
from .data import DataBundle, calibration_tensor, load_data, make_loader
from .errors import (
    BitWidthError,
    CheckpointError,
    ConfigError,
    DataError,
    ModelNotFoundError,
    NonFiniteError,
    PTQError,
    RunCancelled,
    UnsafeCheckpointError,
    UnsupportedModelError,
    WeightsUnavailableError,
)
from .fake_quant import FakeQuantize
from .methods import (
    METHODS,
    AdaRoundConfig,
    BRECQConfig,
    CATRefineConfig,
    COMQConfig,
    GPTQConfig,
    MethodConfig,
    MultipointConfig,
    PDQuantConfig,
    ProgressEvent,
    QDropConfig,
    QuantResult,
    RTNConfig,
    config_from_dict,
    quantize,
)
from .metrics import LayerError, evaluate, layer_errors, model_size_bits
from .models import list_models, load_model, resolve_device
from .modules import QuantConv2d, QuantLinear, quant_layers, set_quant_state
from .observers import OBSERVERS, make_observer
from .overrides import format_overrides, parse_overrides
from .pipeline import RunResult, quantize_and_evaluate, run_quantization
from .prepare import PrepareReport, QuantSpec, prepare
from .qscheme import QScheme
from .settings import Setting, setting, settings
from .spec import RunSpec, make_config
from .store import RunRecord, RunStore

__version__ = "0.1.0"

__all__ = [
    "AdaRoundConfig",
    "BRECQConfig",
    "PDQuantConfig",
    "QDropConfig",
    "COMQConfig",
    "GPTQConfig",
    "MultipointConfig",
    "CATCorrected",
    "CATOptions",
    "CATRefineConfig",
    "BitWidthError",
    "CheckpointError",
    "ConfigError",
    "DataBundle",
    "DataError",
    "FakeQuantize",
    "LayerError",
    "METHODS",
    "MethodConfig",
    "ModelNotFoundError",
    "NonFiniteError",
    "OBSERVERS",
    "PTQError",
    "PrepareReport",
    "ProgressEvent",
    "QScheme",
    "QuantConv2d",
    "QuantLinear",
    "QuantResult",
    "QuantSpec",
    "RTNConfig",
    "RunCancelled",
    "RunRecord",
    "RunResult",
    "RunStore",
    "Unit",
    "UnitPlan",
    "UnsafeCheckpointError",
    "UnsupportedModelError",
    "WeightsUnavailableError",
    "calibration_tensor",
    "config_from_dict",
    "evaluate",
    "layer_errors",
    "list_models",
    "load_data",
    "load_model",
    "make_loader",
    "make_observer",
    "model_size_bits",
    "prepare",
    "quant_layers",
    "quantize",
    "quantize_and_evaluate",
    "RunSpec",
    "make_config",
    "Setting",
    "setting",
    "settings",
    "parse_overrides",
    "format_overrides",
    "find_units",
    "reconstruction_units",
    "resolve_device",
    "run_quantization",
    "set_quant_state",
    "__version__",
]

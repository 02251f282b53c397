"""What every PTQ method shares: config base, progress events, result, registry, `quantize`."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from ..prepare import PrepareReport, QuantSpec
from ..progress import ProgressEvent, ProgressFn, emit
from ..settings import check_settings, setting

__all__ = [
    "MethodConfig",
    "ProgressEvent",
    "ProgressFn",
    "QuantResult",
    "register_method",
    "METHODS",
    "method_names",
    "config_from_dict",
    "quantize",
    "emit",
]


@dataclass
class MethodConfig:
    """Settings shared by every method; each method subclasses it as `XxxConfig`.

    Attributes:
        quant: Where and how to quantize (bit-widths, observers, policies).
        calib: Number of calibration images.
        batch_size: Batch size for calibration forward passes.
        seed: Seed for the calibration draw and any randomness in the method.
    """

    method: ClassVar[str] = ""
    version: ClassVar[int] = 1  # of the stored form; `from_dict` upgrades older ones (see `upgrade`)
    quant: QuantSpec = setting(default_factory=QuantSpec, help="bit-widths, observers and policies", nested=True)
    calib: int = setting(1024, help="calibration images", min=1)
    batch_size: int = setting(128, help="batch size of the calibration forward passes", min=1)
    seed: int = setting(0, help="seed of the calibration draw and of the method's randomness", min=0)

    def __post_init__(self) -> None:
        if isinstance(self.quant, dict):
            self.quant = QuantSpec.from_dict(self.quant)
        if not isinstance(self.calib, int) or self.calib < 1:
            raise ConfigError(f"calibration size must be a positive integer, got {self.calib!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch size must be a positive integer, got {self.batch_size!r}")
        self.validate()
        check_settings(self)

    def validate(self) -> None:
        """Method-specific checks; raise `ConfigError` with a clear message."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict including the method name and the version of this form."""
        return {"method": self.method, "version": self.version, **dataclasses.asdict(self)}

    @classmethod
    def upgrade(cls, d: dict[str, Any], version: int) -> dict[str, Any]:
        """Turn a stored dict of an older `version` into the current form (override when fields change).

        Version 0 is a dict stored before configs carried a version; its fields are today's.
        """
        if version > cls.version:
            raise ConfigError(f"{cls.method} settings of version {version} are newer than this program's")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MethodConfig:
        """Inverse of `to_dict`; older versions are upgraded, unknown keys are an error."""
        version = int(d.get("version", 0))
        d = cls.upgrade({k: v for k, v in d.items() if k not in ("method", "version")}, version)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown {cls.method} setting(s): {', '.join(sorted(unknown))}")
        return cls(**d)


@dataclass
class QuantResult:
    """A quantized model and what the method recorded while making it."""

    model: nn.Module
    config: MethodConfig
    report: PrepareReport
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


MethodFn = Callable[[nn.Module, torch.Tensor, Any, ProgressFn | None], QuantResult]
METHODS: dict[str, tuple[type[MethodConfig], MethodFn]] = {}


def register_method(config_cls: type[MethodConfig]) -> Callable[[MethodFn], MethodFn]:
    """Decorator: register `fn(model, calib, config, progress) -> QuantResult` for `config_cls`."""

    def wrap(fn: MethodFn) -> MethodFn:
        if not config_cls.method:
            raise ValueError(f"{config_cls.__name__} needs a `method` name")
        METHODS[config_cls.method] = (config_cls, fn)
        return fn

    return wrap


def method_names() -> list[str]:
    """Registered method names, in registration order."""
    return list(METHODS)


def config_from_dict(d: dict[str, Any]) -> MethodConfig:
    """Build the right `XxxConfig` from a dict holding a `method` key."""
    name = d.get("method")
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}: choose one of {', '.join(METHODS)}")
    return METHODS[name][0].from_dict(d)


def quantize(
    model: nn.Module, calib: torch.Tensor, config: MethodConfig, progress: ProgressFn | None = None
) -> QuantResult:
    """Quantize a copy of `model` with the method `config` belongs to.

    Args:
        model: Float model in eval mode; never modified.
        calib: Calibration images, stacked, on the model's device.
        config: An `XxxConfig` of a registered method.
        progress: Optional callback receiving `ProgressEvent`s; it may raise
            `RunCancelled` to stop the run.

    Returns:
        A `QuantResult` whose model is ready to evaluate (quantization on).
    """
    if config.method not in METHODS:
        raise ConfigError(f"method {config.method!r} is not registered")
    if len(calib) == 0:
        raise ConfigError("the calibration set is empty")
    start = time.perf_counter()
    result = METHODS[config.method][1](model, calib[: config.calib], config, progress)
    result.seconds = time.perf_counter() - start
    return result

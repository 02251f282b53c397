"""`RunSpec`: the one description of a run, from the screen to the store and back.

The app's Quantize page, the command line (`quantize`, `--config`, `runs show --spec`)
and the benchmarks all build a `RunSpec`; `run_quantization(spec)` runs it, and the
run store keeps it, so a stored run can be re-run exactly.

    >>> spec = RunSpec(model="fmnist-resnet20", method=make_config("rtn", wbits=2, abits=2))
    >>> RunSpec.from_dict(spec.to_dict()) == spec
    True
    >>> spec.title()
    'rtn W2A2 on fmnist-resnet20'
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .cat.options import CATOptions
from .errors import ConfigError
from .methods import METHODS, MethodConfig, ReconMethodConfig, RTNConfig, config_from_dict
from .prepare import QuantSpec
from .qscheme import FLOAT_BITS
from .settings import settings

__all__ = ["SPEC_VERSION", "RunSpec", "BitsSummary", "make_config", "bits_label", "bits_summary"]

SPEC_VERSION = 1


def make_config(method: str, preset: str | None = None, **values: Any) -> MethodConfig:
    """A method's config from flat values: `QuantSpec` fields and the method's own, by name.

    Reconstruction methods start from `preset` ("paper" when None) and `values` override it;
    the others take their defaults. Unknown names are an error naming the method.

        >>> make_config("qdrop", preset="fast", wbits=2, iters=10).iters
        10
    """
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    cls = METHODS[method][0]
    quant_names = {s.name for s in settings(QuantSpec)}
    own = {s.name for s in settings(cls)} - {"quant"}
    unknown = set(values) - quant_names - own - {"quant"}
    if unknown:
        raise ConfigError(f"{', '.join(sorted(unknown))}: not a setting of {method}")
    quant = values.pop("quant", None)
    qvalues = {k: values.pop(k) for k in list(values) if k in quant_names}
    base = quant if quant is not None else _default_quant(cls)
    if isinstance(base, dict):
        base = QuantSpec.from_dict(base)
    values["quant"] = dataclasses.replace(base, **qvalues)
    preset = preset or values.pop("preset", None)
    if issubclass(cls, ReconMethodConfig):
        return cls.from_preset(preset or "paper", **values)
    if preset is not None and "preset" in own:
        values["preset"] = preset
    return cls(**values)


def _default_quant(cls: type[MethodConfig]) -> QuantSpec:
    field_ = next(f for f in dataclasses.fields(cls) if f.name == "quant")
    return field_.default_factory()  # type: ignore[misc]


@dataclass
class RunSpec:
    """Everything that decides a run's numbers.

    Attributes:
        model: Zoo or torchvision name, or ``file.py:factory``.
        weights: A state_dict file for the model (None: its own weights).
        data: ``fmnist-sample``, ``fmnist-full`` or ``imagefolder:<path>``.
        device: ``auto``, ``cpu`` or ``cuda``.
        method: The method and its settings (bits, observers, calibration size, seed, ...).
        cat: CAT's correction after the method, or None.
        eval_limit: Evaluate on the first N test images (None: the whole test split).
        error_samples: Test images of the per-layer error tables.
    """

    model: str = "fmnist-resnet20"
    weights: str | None = None
    data: str = "fmnist-sample"
    device: str = "auto"
    method: MethodConfig = field(default_factory=RTNConfig)
    cat: CATOptions | None = None
    eval_limit: int | None = None
    error_samples: int = 256

    def __post_init__(self) -> None:
        if isinstance(self.method, dict):
            self.method = config_from_dict(self.method)
        if isinstance(self.cat, dict):
            self.cat = CATOptions.from_dict(self.cat)
        if self.eval_limit is not None and (not isinstance(self.eval_limit, int) or self.eval_limit < 1):
            raise ConfigError(f"eval_limit must be a positive number of test images, got {self.eval_limit!r}")
        if not isinstance(self.error_samples, int) or self.error_samples < 1:
            raise ConfigError(f"error_samples must be a positive integer, got {self.error_samples!r}")

    @property
    def seed(self) -> int:
        """The run's seed (the method's)."""
        return self.method.seed

    @property
    def label(self) -> str:
        """The method as runs are filed: ``pdquant``, or ``pdquant+cat`` with CAT."""
        return self.method.method if self.cat is None else f"{self.method.method}+cat"

    def title(self) -> str:
        """One line: method, uniform bits and model (the effective bits come with the result)."""
        q = self.method.quant
        return f"{self.label} {bits_label(q.wbits, q.abits)} on {self.model}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with the spec's version."""
        return {
            "version": SPEC_VERSION,
            "model": self.model,
            "weights": self.weights,
            "data": self.data,
            "device": self.device,
            "method": self.method.to_dict(),
            "cat": None if self.cat is None else self.cat.to_dict(),
            "eval_limit": self.eval_limit,
            "error_samples": self.error_samples,
        }

    def to_json(self) -> str:
        """`to_dict` as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        """Inverse of `to_dict`; a newer version or an unknown key is an error."""
        if not isinstance(d, dict):
            raise ConfigError("a run description must be a JSON object")
        version = int(d.get("version", SPEC_VERSION))
        if version > SPEC_VERSION:
            raise ConfigError(f"run description version {version} is newer than this program's ({SPEC_VERSION})")
        d = {k: v for k, v in d.items() if k != "version"}
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown run setting(s): {', '.join(sorted(unknown))}")
        if "method" not in d:
            raise ConfigError("a run description needs its method settings ('method')")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        """Parse `to_json`'s output (ConfigError when it is not valid JSON)."""
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not a valid run description (JSON): {exc}") from None


def bits_label(wbits: int, abits: int) -> str:
    """``W4A4``, ``W4A32`` (float activations) ..."""
    return f"W{wbits}A{abits}"


@dataclass
class BitsSummary:
    """The bits a run really used, layer by layer.

    `overridden` counts the layers whose bits differ from the uniform ones for a reason other
    than the first/last-layer policy; `w_avg` / `a_avg` are averages weighted by parameters.
    """

    wbits: int
    abits: int
    overridden: int
    w_avg: float
    a_avg: float

    @property
    def mixed(self) -> bool:
        """Whether some layers run at other bits than the uniform ones (besides first/last)."""
        return self.overridden > 0

    @property
    def label(self) -> str:
        """``W2A2``, or ``W2A2 + 6 overrides, 2.6 bits avg`` when mixed."""
        base = bits_label(self.wbits, self.abits)
        if not self.mixed:
            return base
        return f"{base} + {self.overridden} override{'s' * (self.overridden != 1)}, {self.w_avg:.1f} bits avg"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, with the label and `mixed`."""
        return {**dataclasses.asdict(self), "mixed": self.mixed, "label": self.label}


def bits_summary(layers: list[dict[str, Any]], quant: QuantSpec) -> BitsSummary:
    """Summarise a prepare report's layers (name, wbits, abits, params, role) under `quant`."""
    overridden, total = 0, 0
    w_sum = a_sum = 0.0
    for layer in layers:
        base_w, base_a = quant.wbits, quant.abits
        if layer.get("role") and quant.first_last_bits:
            base_w = quant.first_last_bits if base_w != FLOAT_BITS else base_w
            base_a = quant.first_last_bits if base_a != FLOAT_BITS else base_a
        overridden += (layer["wbits"], layer["abits"]) != (base_w, base_a)
        n = int(layer.get("params", 1)) or 1
        total += n
        w_sum += n * layer["wbits"]
        a_sum += n * layer["abits"]
    w_avg = w_sum / total if total else float(quant.wbits)
    a_avg = a_sum / total if total else float(quant.abits)
    return BitsSummary(quant.wbits, quant.abits, overridden, w_avg, a_avg)

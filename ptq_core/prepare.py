"""Prepare a float model for quantization.

`prepare(model, spec, example)` returns a quantizable *copy* (the input model is
never modified): non-finite weights are refused, `nn.MultiheadAttention` is
decomposed into linear layers, BatchNorm is folded into the preceding conv, and
every `nn.Conv2d` / `nn.Linear` becomes a `QuantConv2d` / `QuantLinear` with the
bit-widths the spec gives it (first and last layer 8-bit by default, per-layer
overrides by name pattern). Anything it cannot quantize is named in the report
and left in float.
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .attention import DecomposedAttention, decompose_attention_
from .errors import ConfigError, NonFiniteError
from .fold import fold_bn_
from .hooks import traced_forward
from .modules import QUANT_MODULES, QuantLayer
from .observers import OBSERVERS
from .qscheme import FLOAT_BITS, MAX_BITS, MIN_BITS, QScheme
from .settings import check_settings, setting

BIT_CHOICES = (*range(MIN_BITS, MAX_BITS + 1), FLOAT_BITS)

__all__ = [
    "BIT_CHOICES",
    "QuantSpec",
    "LayerInfo",
    "PrepareReport",
    "prepare",
    "check_finite_params",
    "execution_order",
]

# leaf modules that hold no quantizable weight matrix and pass data through in float
_FLOAT_OK = (
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.LeakyReLU,
    nn.Softmax,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
    nn.Flatten,
    nn.LayerNorm,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.GroupNorm,
)


@dataclass
class QuantSpec:
    """Where and how to quantize: bit-widths, observers, granularity, first/last policy, overrides.

    `wbits`/`abits` of 32 keep that side in float. `overrides` maps a module-name
    pattern (fnmatch, e.g. ``"layer3.*"``) to ``{"wbits": b, "abits": b}``.
    """

    wbits: int = setting(4, help="weight bits (2-8; 32 keeps weights in float)", choices=BIT_CHOICES)
    abits: int = setting(4, help="activation bits (2-8; 32 keeps activations in float)", choices=BIT_CHOICES)
    w_observer: str = setting("mse", help="weight range estimator", choices=tuple(OBSERVERS))
    a_observer: str = setting("mse", help="activation range estimator", choices=tuple(OBSERVERS))
    w_per_channel: bool = setting(True, help="one weight scale per output channel (else one per tensor)")
    w_symmetric: bool = setting(False, help="symmetric, signed weight grid (else asymmetric with a zero point)")
    a_symmetric: bool = setting(False, help="symmetric, signed activation grid")
    first_last_bits: int | None = setting(
        8, help="bits of the first and last layer (unset: same as the rest)", choices=BIT_CHOICES
    )
    overrides: dict[str, dict[str, int]] = setting(
        default_factory=dict, help="per-layer bits by name pattern: PATTERN=W/A, e.g. 'layer3.*=8/8'"
    )
    fold_bn: bool = setting(True, help="fold BatchNorm into the preceding convolution")

    def __post_init__(self) -> None:
        for bits in (self.wbits, self.abits, *([self.first_last_bits] if self.first_last_bits else [])):
            QScheme(bits=bits)  # raises BitWidthError with a clear message
        for obs in (self.w_observer, self.a_observer):
            if obs not in OBSERVERS:
                raise ConfigError(f"unknown observer {obs!r}: choose one of {', '.join(OBSERVERS)}")
        for pattern, bits in self.overrides.items():
            if not isinstance(bits, dict) or set(bits) - {"wbits", "abits"}:
                raise ConfigError(f"override {pattern!r} must be a dict with keys wbits and/or abits")
            for b in bits.values():
                QScheme(bits=b)
        check_settings(self)

    def weight_scheme(self, bits: int) -> QScheme:
        """Weight grid: per output channel by default; signed when symmetric."""
        return QScheme(
            bits=bits, symmetric=self.w_symmetric, signed=self.w_symmetric, per_channel=self.w_per_channel, ch_axis=0
        )

    def act_scheme(self, bits: int) -> QScheme:
        """Activation grid: one scale (and zero point) per tensor."""
        return QScheme(bits=bits, symmetric=self.a_symmetric, signed=self.a_symmetric)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantSpec:
        """Inverse of `to_dict`; unknown keys are an error."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown quantization setting(s): {', '.join(sorted(unknown))}")
        return cls(**d)


@dataclass
class LayerInfo:
    """One quantized layer as prepared."""

    name: str
    kind: str
    wbits: int
    abits: int
    params: int
    role: str = ""  # "first", "last" or ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass
class PrepareReport:
    """What `prepare` did: quantized layers (in execution order), what stayed float, and why."""

    layers: list[LayerInfo] = field(default_factory=list)
    unsupported: list[tuple[str, str]] = field(default_factory=list)  # (name, type): left in float
    float_params: list[str] = field(default_factory=list)  # e.g. class token, position embedding
    folded: list[tuple[str, str]] = field(default_factory=list)
    decomposed_attention: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d = asdict(self)
        d["unsupported"] = [list(u) for u in self.unsupported]
        d["folded"] = [list(p) for p in self.folded]
        return d


def check_finite_params(model: nn.Module) -> None:
    """Refuse NaN/inf weights or buffers, naming the tensor."""
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and not torch.isfinite(t).all():
            bad = int((~torch.isfinite(t)).sum())
            raise NonFiniteError(f"{name} holds {bad} non-finite value(s) (NaN/inf); refusing to quantize")


def execution_order(model: nn.Module, example: torch.Tensor, types: tuple[type, ...]) -> list[str]:
    """Names of the modules of `types` in the order a forward pass calls them (first call)."""
    order: list[str] = []
    handles = [
        m.register_forward_pre_hook(lambda _m, _i, n=n: order.append(n) if n not in order else None)
        for n, m in model.named_modules()
        if isinstance(m, types)
    ]
    traced_forward(model, example, handles)
    return order


def _classify(model: nn.Module) -> tuple[list[tuple[str, str]], list[str]]:
    """(unsupported leaf modules, float parameters owned by non-leaf modules)."""
    unsupported, float_params = [], []
    for name, m in model.named_modules():
        if isinstance(m, (DecomposedAttention, QuantLayer)) or type(m) in QUANT_MODULES:
            continue
        children = list(m.children())
        own_params = [p for p, _ in m.named_parameters(recurse=False)]
        if (
            not children
            and not isinstance(m, _FLOAT_OK)
            and (own_params or isinstance(m, (nn.MultiheadAttention, nn.RNNBase)))
        ):
            unsupported.append((name, type(m).__name__))
        elif children and own_params:
            float_params += [f"{name}.{p}" if name else p for p in own_params]
    return unsupported, float_params


def _layer_bits(name: str, role: str, spec: QuantSpec) -> tuple[int, int]:
    wbits, abits = spec.wbits, spec.abits
    if role and spec.first_last_bits:  # a side left in float (32) stays float
        wbits = spec.first_last_bits if wbits != FLOAT_BITS else wbits
        abits = spec.first_last_bits if abits != FLOAT_BITS else abits
    for pattern, bits in spec.overrides.items():
        if fnmatch.fnmatchcase(name, pattern):
            wbits, abits = bits.get("wbits", wbits), bits.get("abits", abits)
    return wbits, abits


def prepare(model: nn.Module, spec: QuantSpec, example: torch.Tensor) -> tuple[nn.Module, PrepareReport]:
    """Build the quantizable copy of `model` (quantizers present but off and uncalibrated).

    Args:
        model: Any float `nn.Module`; it is not modified.
        spec: Bit-widths and quantizer settings.
        example: A small input batch on the model's device, used to trace data flow.

    Returns:
        The prepared copy and a `PrepareReport`.
    """
    check_finite_params(model)
    example = example[:2]  # tracing needs one or two samples, not a batch
    qmodel = copy.deepcopy(model).eval()
    report = PrepareReport()
    report.decomposed_attention, _ = decompose_attention_(qmodel)
    if spec.fold_bn:
        report.folded = fold_bn_(qmodel, example)
    order = execution_order(qmodel, example, tuple(QUANT_MODULES))
    matched = {p: 0 for p in spec.overrides}
    for i, name in enumerate(order):
        float_layer = qmodel.get_submodule(name)
        if type(float_layer) not in QUANT_MODULES:
            continue
        role = "first" if i == 0 else "last" if i == len(order) - 1 else ""
        wbits, abits = _layer_bits(name, role, spec)
        for p in matched:
            matched[p] += fnmatch.fnmatchcase(name, p)
        q = QUANT_MODULES[type(float_layer)].from_float(
            float_layer, spec.weight_scheme(wbits), spec.act_scheme(abits), spec.w_observer, spec.a_observer
        )
        parent_name, _, child = name.rpartition(".")
        setattr(qmodel.get_submodule(parent_name) if parent_name else qmodel, child, q)
        report.layers.append(
            LayerInfo(
                name, type(float_layer).__name__, wbits, abits, sum(p.numel() for p in float_layer.parameters()), role
            )
        )
    unused = [p for p, n in matched.items() if n == 0]
    if unused:
        raise ConfigError(f"override pattern(s) {', '.join(map(repr, unused))} match no quantizable layer")
    report.unsupported, report.float_params = _classify(qmodel)
    return qmodel, report

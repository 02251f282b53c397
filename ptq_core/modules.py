"""Quantized layers: `QuantConv2d` and `QuantLinear`.

Each wraps the float layer's parameters with two fake-quantizers, one for the
weight (per output channel by default) and one for the layer's *input*
activation (per tensor). Each side is switched on its own with
`set_quant_state(weight, act)`, the building block of every sensitivity sweep;
`quant_state(model, weight, act)` does the same for a block of code and puts the
previous state back afterwards. These flags are the only on/off switch: a
quantizer called on its own always quantizes (once calibrated), which is what
methods rely on to compare the quantized weight with the float one. The layer's
output is never quantized here, so the logits of the last layer stay in float.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .fake_quant import FakeQuantize
from .qscheme import QScheme
from .quantizer import Quantizer

__all__ = [
    "QuantLayer",
    "QuantConv2d",
    "QuantLinear",
    "QUANT_MODULES",
    "quant_layers",
    "set_quant_state",
    "quant_state",
]


class QuantLayer:
    """Mixin for layers with a weight quantizer and an input-activation quantizer.

    Attributes:
        quant_weight: Whether the weight goes through ``weight_quantizer`` (the weight's switch).
        quant_act: Whether the input goes through ``act_quantizer`` (the input's switch).
    """

    weight: nn.Parameter
    bias: nn.Parameter | None
    weight_quantizer: Quantizer
    act_quantizer: Quantizer
    quant_weight: bool
    quant_act: bool

    def _adopt(self, layer: nn.Module, w_scheme: QScheme, a_scheme: QScheme, w_observer: str, a_observer: str):
        """Copy the float layer's parameters and attach (uncalibrated, switched-off) quantizers."""
        with torch.no_grad():
            self.weight.copy_(layer.weight)
            if layer.bias is not None:
                self.bias.copy_(layer.bias)
        self.weight_quantizer = FakeQuantize(w_scheme, w_observer)
        self.act_quantizer = FakeQuantize(a_scheme, a_observer)
        self.quant_weight = False
        self.quant_act = False
        return self.to(layer.weight.device)

    def set_quant_state(self, weight: bool, act: bool) -> None:
        """Turn weight and input-activation quantization on or off independently."""
        self.quant_weight, self.quant_act = bool(weight), bool(act)

    @property
    def wbits(self) -> int:
        """Weight bit-width (32 = float)."""
        return self.weight_quantizer.bits

    @property
    def abits(self) -> int:
        """Input-activation bit-width (32 = float)."""
        return self.act_quantizer.bits

    def quantized_weight(self) -> torch.Tensor:
        """The weight as the quantized layer uses it (fake-quantized when on)."""
        if self.quant_weight and not self.weight_quantizer.scheme.is_float:
            return self.weight_quantizer(self.weight)
        return self.weight

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantize the input when on; feed the observer while it is calibrating."""
        fq = self.act_quantizer
        if self.quant_act:
            return fq(x)
        if fq.observe and not fq.scheme.is_float:
            fq.observer(x)
        return x


class QuantConv2d(nn.Conv2d, QuantLayer):
    """An `nn.Conv2d` whose weight and input pass through fake-quantizers."""

    @classmethod
    def from_float(
        cls, conv: nn.Conv2d, w_scheme: QScheme, a_scheme: QScheme, w_observer: str = "mse", a_observer: str = "mse"
    ) -> QuantConv2d:
        """Build from a float conv, sharing nothing with it (parameters are copied)."""
        q = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
            conv.padding_mode,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        return q._adopt(conv, w_scheme, a_scheme, w_observer, a_observer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.quantize_input(x), self.quantized_weight(), self.bias)


class QuantLinear(nn.Linear, QuantLayer):
    """An `nn.Linear` whose weight and input pass through fake-quantizers."""

    @classmethod
    def from_float(
        cls, fc: nn.Linear, w_scheme: QScheme, a_scheme: QScheme, w_observer: str = "mse", a_observer: str = "mse"
    ) -> QuantLinear:
        """Build from a float linear layer (parameters are copied)."""
        q = cls(fc.in_features, fc.out_features, fc.bias is not None, device=fc.weight.device, dtype=fc.weight.dtype)
        return q._adopt(fc, w_scheme, a_scheme, w_observer, a_observer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.quantize_input(x), self.quantized_weight(), self.bias)


# float type -> quantized twin
QUANT_MODULES: dict[type[nn.Module], type[nn.Module]] = {nn.Conv2d: QuantConv2d, nn.Linear: QuantLinear}


def quant_layers(model: nn.Module) -> Iterator[tuple[str, QuantLayer]]:
    """(name, layer) for every quantized layer, in registration order."""
    for name, module in model.named_modules():
        if isinstance(module, QuantLayer):
            yield name, module


def set_quant_state(model: nn.Module, weight: bool, act: bool, names: set[str] | None = None) -> None:
    """Switch quantization of every quantized layer (or only those in `names`)."""
    for name, layer in quant_layers(model):
        if names is None or name in names:
            layer.set_quant_state(weight, act)


@contextmanager
def quant_state(
    target: nn.Module | Iterable[QuantLayer], weight: bool | None = None, act: bool | None = None
) -> Iterator[list[QuantLayer]]:
    """Switch quantization for the block, then put every layer's previous state back exactly.

    Example: ``with quant_state(qmodel, False, False): fp = qmodel(x)`` runs the float model;
    afterwards each layer is switched as it was before, also when the block raises.

    Args:
        target: A model (all its quantized layers) or the quantized layers themselves.
        weight: Weight quantization inside the block; None leaves each layer's as it is.
        act: Input-activation quantization inside the block; None leaves each layer's as it is.

    Yields:
        The layers affected, in registration order.
    """
    layers = [q for _, q in quant_layers(target)] if isinstance(target, nn.Module) else list(target)
    saved = [(q.quant_weight, q.quant_act) for q in layers]
    try:
        for q, (w, a) in zip(layers, saved, strict=True):
            q.set_quant_state(w if weight is None else weight, a if act is None else act)
        yield layers
    finally:
        for q, (w, a) in zip(layers, saved, strict=True):
            q.set_quant_state(w, a)

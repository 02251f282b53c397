"""A per-output-channel protecting affine on a quantized layer's output, and its exact fold.

RepAPQ's QPRep (docs/methods.md, step 2) trains ``y = g * layer(x) + h`` with one
gain ``g_c`` (init 1) and shift ``h_c`` (init 0) per output channel, where
``layer(x) = conv(Q_a(x), Q_w(W)) + b`` is the whole quantized layer, bias included.
It sits on the layer's output, before whatever follows it (the ReLU of a RepVGG block),
as a forward hook, so any `QuantLayer` can carry it while its unit is reconstructed.

Why the fold is exact: with per-output-channel weight quantization (axis 0)
``Q_w(W)_c = s_c * (q_c - z_c)`` for integer codes ``q_c``, so

    g_c * (conv(x, Q_w(W))_c + b_c) + h_c = conv(x, (g_c s_c) * (q_c - z_c))_c + (g_c b_c + h_c).

Folding therefore sets the scale to ``s'_c = g_c s_c``, the weight to ``W'_c = g_c W_c``,
keeps the zero points and the integer codes ``q`` *exactly* (they are read off the
quantizer before the fold and stored as a fixed rounding relative to ``floor(W'/s')``),
and sets the bias to ``b'_c = g_c b_c + h_c``; the input quantizer is untouched. Only
floating-point rounding of the products differs (about 1e-7 relative). A float-weight
layer folds ``g`` into the weight directly. ``g`` is kept at or above `MIN_GAIN`, so every
folded scale stays positive.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..fake_quant import FakeQuantize
from ..modules import QuantLayer
from ..primitives import along
from ..quantizer import AffineQuantizer
from .losses import channel_dim
from .rounding import AdaRoundQuantizer

__all__ = ["ChannelAffine", "MIN_GAIN", "check_affine_layer", "fold_affine"]

MIN_GAIN = 1e-4  # gains are clamped at or above this after every step


def _out_channels(layer: QuantLayer) -> int:
    return int(layer.weight.shape[0])


def check_affine_layer(layer: QuantLayer) -> None:
    """Raise `ConfigError` when the affine could not be folded into `layer` exactly."""
    fq = layer.weight_quantizer
    if fq.scheme.is_float or not fq.is_calibrated:
        return
    if not fq.scheme.per_channel or fq.scheme.ch_axis != 0:
        raise ConfigError(
            "the protecting affine folds into per-output-channel weight scales: "
            "quantize weights per channel (w_per_channel=True)"
        )


class ChannelAffine(nn.Module):
    """Trainable ``y = g * out + h`` per output channel, hooked onto one quantized layer.

    Args:
        layer: The quantized layer whose output it rescales (hook installed at once).
    """

    def __init__(self, layer: QuantLayer) -> None:
        super().__init__()
        check_affine_layer(layer)
        c, w = _out_channels(layer), layer.weight
        self.g = nn.Parameter(torch.ones(c, device=w.device, dtype=w.dtype))
        self.h = nn.Parameter(torch.zeros(c, device=w.device, dtype=w.dtype))
        self.layer = [layer]  # a list, so the layer is not registered as a submodule
        self._handle = layer.register_forward_hook(self._hook)  # type: ignore[union-attr]

    def _hook(self, _m: nn.Module, _args: tuple, out: Tensor) -> Tensor:
        dim = channel_dim(out)
        shape = [1] * out.dim()
        shape[dim] = -1
        return out * self.g.reshape(shape) + self.h.reshape(shape)

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep every gain at or above `MIN_GAIN`."""
        self.g.clamp_(min=MIN_GAIN)

    def remove(self) -> None:
        """Take the hook off (the layer is back to its own output)."""
        self._handle.remove()

    @torch.no_grad()
    def fold(self) -> dict[str, list[float]]:
        """Fold g and h into the layer (see the module docstring), remove the hook; returns g and h."""
        self.clamp_()
        layer = self.layer[0]
        g, h = self.g.detach().clone(), self.h.detach().clone()
        self.remove()
        fold_affine(layer, g, h)
        return {"g": g.cpu().tolist(), "h": h.cpu().tolist()}


@torch.no_grad()
def _codes(fq: AffineQuantizer, weight: Tensor) -> Tensor:
    """The integer grid codes q the quantizer gives `weight` (from its own output)."""
    s = along(fq.scale.detach(), weight.dim(), fq.axis)
    z = along(fq.zero_point, weight.dim(), fq.axis)
    return torch.round(fq(weight) / s) + z


@torch.no_grad()
def fold_affine(layer: QuantLayer, g: Tensor, h: Tensor) -> None:
    """Fold a per-output-channel ``g * out + h`` into `layer` in place (outputs unchanged).

    Args:
        layer: A `QuantLayer`; its weight quantizer per output channel or float.
        g: Positive gains [C_out].
        h: Shifts [C_out].
    """
    check_affine_layer(layer)
    if not bool((g > 0).all()):
        raise ConfigError("the protecting affine's gains must be positive to fold into scales")
    w = layer.weight
    g_w = along(g, w.dim(), 0)
    fq = layer.weight_quantizer
    if not fq.scheme.is_float and fq.is_calibrated:
        codes = _codes(fq, w.detach())  # [*W]
        base = FakeQuantize(fq.scheme, fq.observer_name).to(w.device)
        base.set_qparams(fq.scale.detach() * g, fq.zero_point)
        new_w = w.detach() * g_w
        fixed = AdaRoundQuantizer(base, new_w)
        fixed.harden()
        z = along(fixed.zero_point, w.dim(), fixed.axis)
        fixed.round_up = codes - torch.floor(fixed._scaled(new_w)) - z  # codes exactly as before the fold
        layer.weight_quantizer = fixed
        w.copy_(new_w)
    else:
        w.mul_(g_w)
    if layer.bias is None:
        layer.bias = nn.Parameter(h.clone(), requires_grad=False)  # type: ignore[misc]
    else:
        layer.bias.copy_(layer.bias * g + h)

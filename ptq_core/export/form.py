"""The export form of a quantized model: every quantized layer as QDQ-ready modules.

`export_form(qmodel)` returns a copy in which each `QuantConv2d` / `QuantLinear`
becomes an `ExportLayer` (input `ActQDQ`, weight `IntWeight` codes, then the plain
conv / linear) and each multipoint layer its deployable expanded form
(`ExportMultipoint`: the b-bit integer vectors as an ordinary layer with one output
per point, then a dense channel merge that applies the coefficients and the bias).
A `CATCorrected` model keeps its logit correction after the converted base. A layer's
float bias is added after the conv / matmul rather than passed to it: runtimes treat
a QDQ Conv's bias input as int32 at scale ``s_x * s_w`` (onnxruntime's
``WeightBiasQuantization`` rounds it so), while the fake-quant model keeps it float.
In eager mode the copy gives the fake-quant model's logits up to float summation
order; `torch.onnx.export` turns it into a QDQ graph.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cat.module import CATCorrected
from ..errors import ExportError
from ..layerwise.deploy import deploy_layer
from ..layerwise.quantizers import MultipointQuantizer
from ..modules import QuantLayer, quant_layers
from ..qscheme import QScheme
from ..quantizer import Quantizer
from .grid import Grid, act_grid, weight_codes, weight_quantized
from .qdq import ActQDQ, IntWeight

__all__ = ["ExportLayer", "ExportMultipoint", "export_form", "export_layer"]


def _conv_args(conv: nn.Conv2d) -> dict:
    return {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation, "groups": conv.groups}


def _conv(x: Tensor, w: Tensor, b: Tensor | None, args: dict, padding_mode: str, pad: tuple) -> Tensor:
    if padding_mode != "zeros":
        return F.conv2d(F.pad(x, pad, mode=padding_mode), w, b, **{**args, "padding": 0})
    return F.conv2d(x, w, b, **args)


class _LayerBase(nn.Module):
    """Shared parts: the optional input QDQ and the conv / linear call."""

    def __init__(self, layer: nn.Module, act: Grid | None) -> None:
        super().__init__()
        self.act = ActQDQ(act) if act is not None else None
        self.is_conv = isinstance(layer, nn.Conv2d)

    def _input(self, x: Tensor) -> Tensor:
        return self.act(x) if self.act is not None else x


class ExportLayer(_LayerBase):
    """Input QDQ (if quantized), weight from integer codes (or float), then conv2d / linear.

    Args:
        name: Layer name (for error messages).
        layer: The quantized layer it replaces.
    """

    def __init__(self, name: str, layer: QuantLayer) -> None:
        super().__init__(layer, act_grid(name, layer))
        if weight_quantized(layer):
            self.weight: nn.Module | None = IntWeight(*weight_codes(name, layer))
            self.float_weight = None
        else:
            self.weight = None
            self.float_weight = nn.Parameter(layer.quantized_weight().detach().clone(), requires_grad=False)
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone(), requires_grad=False)
        self.bias_shape = (-1, 1, 1) if self.is_conv else (-1,)
        if self.is_conv:
            self.args, self.padding_mode = _conv_args(layer), layer.padding_mode
            self.pad = tuple(layer._reversed_padding_repeated_twice)

    def forward(self, x: Tensor) -> Tensor:
        x = self._input(x)
        w = self.weight() if self.weight is not None else self.float_weight
        y = _conv(x, w, None, self.args, self.padding_mode, self.pad) if self.is_conv else F.linear(x, w)
        return y if self.bias is None else y + self.bias.reshape(self.bias_shape)


class ExportMultipoint(_LayerBase):
    """A multipoint layer's deployable form: expanded b-bit layer, then ``merge`` (coefficients and bias).

    Args:
        name: Layer name (for error messages).
        layer: A quantized layer whose weight quantizer is a `MultipointQuantizer`.
    """

    def __init__(self, name: str, layer: QuantLayer) -> None:
        super().__init__(layer, act_grid(name, layer))
        q: MultipointQuantizer = layer.weight_quantizer  # type: ignore[assignment]
        dep = deploy_layer(layer)
        unit = QScheme(bits=q.bits, symmetric=True, signed=True)  # the points' integer vectors
        grid = Grid(q.bits, True, True, unit.qmin, unit.qmax, None, torch.ones(()), torch.zeros(()))
        self.weight = IntWeight(dep.expanded.weight.detach().cpu().round().to(torch.int8), grid)
        self.register_buffer("gather", dep.gather)
        merge = torch.zeros(dep.merge.channels, len(dep.merge.index))  # [C, P]: coefficient of point p in c
        merge[dep.merge.index.cpu(), torch.arange(len(dep.merge.index))] = dep.merge.coeff.cpu()
        self.register_buffer("merge", merge)
        self.register_buffer("bias", dep.merge.bias)
        if self.is_conv:
            self.args, self.padding_mode = _conv_args(dep.expanded), dep.expanded.padding_mode
            self.pad = tuple(dep.expanded._reversed_padding_repeated_twice)

    def forward(self, x: Tensor) -> Tensor:
        x = self._input(x)
        if self.gather is not None:
            x = x.index_select(1, self.gather)
        if self.is_conv:
            z = _conv(x, self.weight(), None, self.args, self.padding_mode, self.pad)  # [N, P, H, W]
            return F.conv2d(z, self.merge[:, :, None, None], self.bias)
        return F.linear(F.linear(x, self.weight()), self.merge, self.bias)


def export_layer(name: str, layer: QuantLayer) -> nn.Module:
    """The export twin of one quantized layer.

    Raises:
        ExportError: If the layer carries hooks (e.g. an unfolded affine) or a quantizer
            without an affine grid or deployable form.
    """
    if layer._forward_hooks or layer._forward_pre_hooks:  # type: ignore[attr-defined]
        raise ExportError(f"layer {name!r} has forward hooks (e.g. an unfolded RepAPQ affine); fold them first")
    if layer.quant_weight and isinstance(layer.weight_quantizer, MultipointQuantizer):
        return ExportMultipoint(name, layer)
    return ExportLayer(name, layer)


def _convert(model: nn.Module) -> nn.Module:
    for name, layer in list(quant_layers(model)):
        twin = export_layer(name, layer)
        parent, _, child = name.rpartition(".")
        if not name:
            return twin
        setattr(model.get_submodule(parent) if parent else model, child, twin)
    left = [n for n, m in model.named_modules() if isinstance(m, Quantizer)]
    if left:
        raise ExportError(f"quantizer {left[0]!r} sits outside a QuantConv2d / QuantLinear and cannot be exported")
    return model


@torch.no_grad()
def export_form(qmodel: nn.Module) -> nn.Module:
    """A CPU copy of `qmodel` with every quantized layer in its export form (see the module docstring).

    Args:
        qmodel: A quantized model (`QuantResult.model`), optionally wrapped in `CATCorrected`.

    Returns:
        An eval-mode module with the same logits, ready for `torch.onnx.export`.
    """
    model = copy.deepcopy(qmodel).cpu().eval()
    if isinstance(model, CATCorrected):
        model.base = _convert(model.base)
        return model
    return _convert(model)

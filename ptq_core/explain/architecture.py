"""What a model is made of, as the Model & data page shows it.

- `architecture`: one row per leaf module with parameters, MACs (counted with forward
  hooks on one sample, on a copy of the model) and the bits `prepare` would give it;
- `quantizable_layers`: the conv and linear layers;
- `float_accuracy`: top-1/top-5 of the float model on the first test images.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from ..data import DataBundle, make_loader
from ..errors import ConfigError, DataError, PTQError
from ..metrics import evaluate
from ..modules import QuantLayer
from ..prepare import QuantSpec, prepare
from .device import model_device
from .samples import run_model

__all__ = ["architecture", "quantizable_layers", "quant_layer", "count_macs", "float_accuracy"]


def _macs(module: nn.Module, inp: tuple, out: Any) -> int:
    """Multiply-accumulates of one call, per sample."""
    if isinstance(module, nn.Conv2d):
        per_out = module.in_channels // module.groups * math.prod(module.kernel_size)
        return out[0].numel() * per_out
    if isinstance(module, nn.Linear):
        return out[0].numel() * module.in_features
    if isinstance(module, nn.MultiheadAttention):
        q = inp[0] if module.batch_first else inp[0].transpose(0, 1)
        length, dim = q.shape[1], module.embed_dim
        return 4 * length * dim * dim + 2 * length * length * dim  # q/k/v/out projections + scores + mix
    return 0


@torch.no_grad()
def count_macs(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """MACs per module name for one sample (modules called twice are summed).

    Hooks go on a copy: the shared model may be running in another session at the same time.
    """
    model = copy.deepcopy(model)
    macs: dict[str, int] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.MultiheadAttention)):
            hook = lambda mod, i, o, n=name: macs.__setitem__(n, macs.get(n, 0) + _macs(mod, i, o))  # noqa: E731
            handles.append(m.register_forward_hook(hook))
    try:
        model(example[:1])
    finally:
        for h in handles:
            h.remove()
    return macs


def architecture(model: nn.Module, example: torch.Tensor, spec: QuantSpec) -> dict[str, Any]:
    """Rows (layer, type, params, MACs, status, bits, role) plus what `prepare` left in float.

    Raises:
        DataError: The model cannot run on `example`.
    """
    run_model(model, example[:1])
    macs = count_macs(model, example)
    _, report = prepare(model, spec, example)
    qlayers = {info.name: info for info in report.layers}
    unsupported = dict(report.unsupported)
    folded = {bn for _, bn in report.folded}
    rows = []
    for name, m in model.named_modules():
        if list(m.children()) and not isinstance(m, nn.MultiheadAttention):
            continue
        info = qlayers.pop(name, None)
        params = sum(p.numel() for p in m.parameters())
        status = (
            "quantized"
            if info
            else "unsupported (float)"
            if name in unsupported
            else "folded into conv"
            if name in folded
            else "float"
        )
        bits = f"W{info.wbits}/A{info.abits}" if info else ""
        rows.append(
            {
                "layer": name or "(model)",
                "type": type(m).__name__,
                "params": params,
                "MACs": macs.get(name, 0),
                "status": status,
                "bits": bits,
                "role": info.role if info else "",
            }
        )
    for info in qlayers.values():  # layers created by prepare (decomposed attention)
        rows.append(
            {
                "layer": info.name,
                "type": info.kind,
                "params": info.params,
                "MACs": 0,
                "status": "quantized",
                "bits": f"W{info.wbits}/A{info.abits}",
                "role": info.role,
            }
        )
    return {
        "rows": rows,
        "unsupported": [list(u) for u in report.unsupported],
        "float_params": report.float_params,
        "decomposed": report.decomposed_attention,
        "total_params": sum(p.numel() for p in model.parameters()),
        "total_macs": sum(macs.values()),
        "quantized_layers": len(report.layers),
    }


def quantizable_layers(model: nn.Module) -> list[str]:
    """Names of the conv and linear layers, in module order."""
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def float_accuracy(model: nn.Module, bundle: DataBundle, limit: int | None) -> dict[str, float]:
    """Top-1/top-5 (%) of the float model on the first `limit` test images (all if None)."""
    try:
        return evaluate(model, make_loader(bundle.test, limit=limit), model_device(model))
    except PTQError:
        raise
    except (RuntimeError, ValueError) as exc:
        raise DataError(f"evaluation failed: {str(exc).splitlines()[0][:200]}") from None


def quant_layer(qmodel: nn.Module, layer: str) -> QuantLayer:
    """The prepared model's quantized layer `layer` (ConfigError when it is missing or not conv/linear)."""
    try:
        module = qmodel.get_submodule(layer)
    except AttributeError:
        raise ConfigError(f"the model has no layer {layer!r}") from None
    if not isinstance(module, QuantLayer):
        raise ConfigError(f"{layer!r} is not a quantizable (conv or linear) layer")
    return module

"""Metrics: top-k accuracy, per-layer float-vs-quantized output error, model size.

Per-layer errors come in two views (collected with scoped forward hooks):
- *accumulated*: every layer quantized, so each layer's output error includes
  what earlier layers passed on;
- *alone*: only that layer quantized, the rest in float: its own contribution.
The float reference is the prepared model with quantization switched off, whose
outputs equal the original model's (BatchNorm folding is exact).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from .hooks import scoped
from .modules import QuantLayer, quant_layers, quant_state, set_quant_state

__all__ = [
    "LayerError",
    "topk_accuracy",
    "evaluate",
    "capture_outputs",
    "layer_errors",
    "model_size_bits",
    "sqnr_db",
]


@dataclass
class LayerError:
    """Float-vs-quantized output error of one layer."""

    name: str
    mse: float
    sqnr_db: float
    cosine: float
    wbits: int = 32
    abits: int = 32

    def to_dict(self) -> dict[str, float | str | int]:
        """A JSON-ready dict."""
        return asdict(self)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, int]:
    """Number of samples whose label is in the top-k predictions, for each k."""
    top = logits.topk(max(ks), dim=1).indices  # (N, kmax)
    hit = top == labels[:, None]
    return {k: int(hit[:, :k].any(1).sum()) for k in ks}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device | str = "cpu",
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """Top-1 / top-5 accuracy in percent over a loader of (images, labels)."""
    model.eval()
    n, hits = 0, {1: 0, 5: 0}
    for i, (x, y) in enumerate(loader):
        logits = model(x.to(device))
        ks = (1, min(5, logits.shape[1]))
        h = topk_accuracy(logits.float().cpu(), y, ks)
        hits[1] += h[1]
        hits[5] += h[ks[1]]
        n += len(y)
        if on_batch:
            on_batch(i, len(loader))
    return {"top1": 100.0 * hits[1] / max(n, 1), "top5": 100.0 * hits[5] / max(n, 1), "samples": n}


@contextmanager
def capture_outputs(model: nn.Module, names: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the output of the named modules during the forward passes inside the block."""
    store: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(n).register_forward_hook(lambda _m, _i, out, n=n: store.__setitem__(n, out.detach()))
        for n in names
    ]
    with scoped(handles):
        yield store


def sqnr_db(ref: torch.Tensor, err_energy: float) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when the error is zero)."""
    signal = float(ref.double().pow(2).sum())
    return math.inf if err_energy == 0 else 10.0 * math.log10(max(signal, 1e-30) / err_energy)


def _compare(name: str, ref: torch.Tensor, out: torch.Tensor, layer: QuantLayer) -> LayerError:
    diff = (out - ref).double()
    energy = float(diff.pow(2).sum())
    cos = torch.nn.functional.cosine_similarity(out.flatten(1).double(), ref.flatten(1).double(), dim=1, eps=1e-12)
    return LayerError(name, energy / ref.numel(), sqnr_db(ref, energy), float(cos.mean()), layer.wbits, layer.abits)


@torch.no_grad()
def layer_errors(qmodel: nn.Module, x: torch.Tensor, view: str = "accumulated") -> list[LayerError]:
    """Per-layer output error of a calibrated model on the batch `x`.

    Args:
        qmodel: A prepared, calibrated model.
        x: Input batch on the model's device.
        view: "accumulated" (all layers quantized) or "alone" (one layer at a time).

    Returns:
        One `LayerError` per quantized layer, in registration order. The model's
        quantization state is restored afterwards.
    """
    if view not in ("accumulated", "alone"):
        raise ValueError("view must be 'accumulated' or 'alone'")
    layers = dict(quant_layers(qmodel))
    names = list(layers)
    with quant_state(qmodel, False, False):
        with capture_outputs(qmodel, names) as ref:
            qmodel(x)
        ref = dict(ref)
        errors = []
        if view == "accumulated":
            set_quant_state(qmodel, True, True)
            with capture_outputs(qmodel, names) as out:
                qmodel(x)
            errors = [_compare(n, ref[n], out[n], layers[n]) for n in names if n in out]
        else:
            for n in names:
                set_quant_state(qmodel, False, False)
                layers[n].set_quant_state(True, True)
                with capture_outputs(qmodel, [n]) as out:
                    qmodel(x)
                if n in out:
                    errors.append(_compare(n, ref[n], out[n], layers[n]))
        return errors


def model_size_bits(model: nn.Module) -> int:
    """Storage in bits: quantized weights as their quantizer stores them (codes at their bit-width plus
    fp32 scales and zero points; multipoint: every point's codes and coefficient); the rest fp32."""
    total = 0
    counted: set[int] = set()
    for _, layer in quant_layers(model):
        for fq in (layer.weight_quantizer, layer.act_quantizer):
            counted.update(id(p) for p in fq.parameters())  # learnable scales are not weights
        fq = layer.weight_quantizer
        if layer.quant_weight and not fq.scheme.is_float:
            total += fq.storage_bits(layer.weight.numel())
            counted.add(id(layer.weight))
    return total + sum(p.numel() * 32 for p in model.parameters() if id(p) not in counted)

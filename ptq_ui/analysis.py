"""Torch-side computations behind the app's views (no Streamlit here; `bridge` caches them).

- `architecture`: one row per leaf module with parameters, MACs (counted with
  forward hooks on one sample), and the bits `prepare` would give it;
- `layer_values`: a real layer's weights, or its input activations on calibration images;
- `quantizer_view` / `clip_curve`: the Learn page's quantizer on those values.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ptq_core.data import DataBundle, calibration_tensor, make_loader
from ptq_core.errors import ConfigError, DataError, PTQError
from ptq_core.metrics import evaluate
from ptq_core.prepare import QuantSpec, prepare
from ptq_core.primitives import compute_qparams, histogram_points, lp_search, quant_range, quantization_error

__all__ = ["model_device", "example_batch", "architecture", "quantizable_layers", "layer_values",
           "quantizer_view", "grid_view", "clip_curve", "float_accuracy"]  # fmt: skip

_MAX_VALUES = 200_000  # values kept for the Learn page (seeded subsample)
_HIST_BINS = 120


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (CPU for a parameter-free model)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def example_batch(model: nn.Module, bundle: DataBundle, n: int = 2) -> torch.Tensor:
    """The first `n` images of the seeded calibration draw, on the model's device."""
    return calibration_tensor(bundle, n, seed=0).to(model_device(model))


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
def _count_macs(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
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


def _forward(model: nn.Module, x: torch.Tensor) -> None:
    """Run the model on `x`; fail with a one-line message when model and data do not fit together."""
    try:
        with torch.no_grad():
            model(x)
    except (RuntimeError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise DataError(f"the model cannot run on this data (input {tuple(x.shape[1:])}): {first}") from None


def architecture(model: nn.Module, example: torch.Tensor, spec: QuantSpec) -> dict[str, Any]:
    """Rows (layer, type, params, MACs, quantized, bits) plus what `prepare` left in float."""
    _forward(model, example[:1])
    macs = _count_macs(model, example)
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
        status = ("quantized" if info else "unsupported (float)" if name in unsupported
                  else "folded into conv" if name in folded else "float")  # fmt: skip
        bits = f"W{info.wbits}/A{info.abits}" if info else ""
        rows.append({"layer": name or "(model)", "type": type(m).__name__, "params": params,
                     "MACs": macs.get(name, 0), "status": status, "bits": bits, "role": info.role if info else ""})
    for info in qlayers.values():  # layers created by prepare (decomposed attention)
        rows.append({"layer": info.name, "type": info.kind, "params": info.params, "MACs": 0,
                     "status": "quantized", "bits": f"W{info.wbits}/A{info.abits}", "role": info.role})
    return {"rows": rows, "unsupported": [list(u) for u in report.unsupported], "float_params": report.float_params,
            "decomposed": report.decomposed_attention, "total_params": sum(p.numel() for p in model.parameters()),
            "total_macs": sum(macs.values()), "quantized_layers": len(report.layers)}  # fmt: skip


def quantizable_layers(model: nn.Module) -> list[str]:
    """Names of the conv and linear layers, in module order."""
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _subsample(values: torch.Tensor, seed: int = 0) -> np.ndarray:
    flat = values.detach().float().flatten().cpu()
    if flat.numel() > _MAX_VALUES:
        idx = torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(seed))[:_MAX_VALUES]
        flat = flat[idx]
    return flat.numpy().astype(np.float32)


@torch.no_grad()
def layer_values(model: nn.Module, bundle: DataBundle, layer: str, source: str, n_images: int = 64) -> np.ndarray:
    """The layer's weights (`source="weights"`) or its inputs on `n_images` calibration images."""
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        raise ConfigError(f"the model has no layer {layer!r}") from None
    if source == "weights":
        return _subsample(module.weight)
    model = copy.deepcopy(model)  # the hook must not see other sessions' forward passes
    module = model.get_submodule(layer)
    captured: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda _m, inp: captured.append(inp[0].detach()))
    try:
        _forward(model, example_batch(model, bundle, n_images))
    finally:
        handle.remove()
    if not captured:
        raise ConfigError(f"layer {layer!r} is never called as a module in the forward pass")
    return _subsample(captured[-1])


def _grid(values: torch.Tensor, bits: int, ratio: float, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(scale, zero point, signed) for the range ratio * [min, max] (symmetric: ratio * max|x|)."""
    lo, hi = float(values.min()), float(values.max())
    signed = symmetric and lo < 0
    if symmetric:
        thr = ratio * (max(-lo, hi) if signed else max(hi, 0.0))
        rng = (-thr if signed else 0.0, thr)
    else:
        rng = (ratio * lo, ratio * hi)
    scale, zp = compute_qparams(torch.tensor(rng[0]), torch.tensor(rng[1]), bits, symmetric, signed)
    return scale, zp, signed


def quantizer_view(values: np.ndarray, bits: int, ratio: float, symmetric: bool) -> dict[str, Any]:
    """Grid, histogram and rounding/clipping error of one uniform quantizer on `values`."""
    if not 0 < ratio <= 1:
        raise ConfigError(f"clipping ratio must be in (0, 1], got {ratio}")
    x = torch.from_numpy(np.ascontiguousarray(values))
    if x.numel() == 0:
        raise DataError("no values to quantize")
    scale, zp, signed = _grid(x, bits, ratio, symmetric)
    return grid_view(values, bits, float(scale), int(zp), signed)


def grid_view(values: np.ndarray, bits: int, scale: float, zero_point: int, signed: bool) -> dict[str, Any]:
    """Like `quantizer_view`, for a grid given by its scale and zero point (the Learn page's manual mode)."""
    qmin, qmax = quant_range(bits, signed)
    if not (math.isfinite(scale) and scale > 0):
        raise ConfigError(f"scale must be a positive number, got {scale}")
    if not qmin <= zero_point <= qmax:
        raise ConfigError(f"zero point must be in {qmin}..{qmax} for a {bits}-bit grid, got {zero_point}")
    x = torch.from_numpy(np.ascontiguousarray(values))
    if x.numel() == 0:
        raise DataError("no values to quantize")
    scale, zp = torch.tensor(float(scale)), torch.tensor(float(zero_point))
    err = quantization_error(x, scale, zp, qmin, qmax)
    n = x.numel()
    levels = ((torch.arange(qmin, qmax + 1, dtype=torch.float32) - zp) * scale).tolist()
    counts, edges = np.histogram(values, bins=_HIST_BINS)
    signal = float(x.double().pow(2).sum())
    total = err["total"]
    return {
        "bits": bits, "scale": float(scale), "zero_point": int(zp), "qmin": qmin, "qmax": qmax, "signed": signed,
        "levels": levels, "lo": levels[0], "hi": levels[-1], "min": float(x.min()), "max": float(x.max()),
        "hist_centers": ((edges[:-1] + edges[1:]) / 2).tolist(), "hist_counts": counts.tolist(),
        "rounding_mse": err["rounding"] / n, "clipping_mse": err["clipping"] / n, "total_mse": total / n,
        "clip_fraction": err["clip_fraction"], "sqnr_db": math.inf if total == 0 else 10 * math.log10(signal / total),
        "count": n,
    }  # fmt: skip


def clip_curve(values: np.ndarray, bits: int, symmetric: bool, num: int = 100) -> dict[str, Any]:
    """MSE against the clipping ratio (range width / full width) from `lp_search` with p = 2.

    Computed on a 2048-bin histogram of the values; for asymmetric grids each width
    uses its best zero point.
    """
    x = torch.from_numpy(np.ascontiguousarray(values))
    signed = symmetric and float(x.min()) < 0
    points, counts = histogram_points(x)
    lo, hi, curve = lp_search(points, bits, symmetric, signed, p=2.0, num_candidates=num, return_curve=True,
                              weights=counts)  # fmt: skip
    best = int(curve["best_index"])
    return {"ratio": curve["ratio"].tolist(), "mse": curve["loss"].tolist(), "best_ratio": float(curve["ratio"][best]),
            "best_mse": float(curve["loss"][best]), "best_lo": float(lo), "best_hi": float(hi)}  # fmt: skip


def float_accuracy(model: nn.Module, bundle: DataBundle, limit: int | None) -> dict[str, float]:
    """Top-1/top-5 (%) of the float model on the first `limit` test images (all if None)."""
    try:
        return evaluate(model, make_loader(bundle.test, limit=limit), model_device(model))
    except PTQError:
        raise
    except (RuntimeError, ValueError) as exc:
        raise DataError(f"evaluation failed: {str(exc).splitlines()[0][:200]}") from None

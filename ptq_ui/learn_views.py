"""Torch-side computations of the Learn pages on AdaRound and QDrop (no Streamlit; `learn_bridge` caches them).

- `adaround_demo`: a few hundred steps of the core's layer-wise AdaRound on one real
  layer (`ptq_core.recon.reconstruct` with one unit), the rectified sigmoid h(V)
  during training, which weights ended up rounded up or down against
  round-to-nearest, and the loss history;
- `qdrop_demo` / `qdrop_mix_picture`: QDrop's element-wise mix of quantized and
  float activations at the input of a real block, and the block output error
  against the drop probability p.

Every result is plain lists / numbers / small numpy arrays, so it can be cached and drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ptq_core.blocks import Unit, reconstruction_units
from ptq_core.calibrate import calibrate_activations, calibrate_weights
from ptq_core.data import DataBundle, calibration_tensor
from ptq_core.errors import ConfigError
from ptq_core.methods.base import ProgressEvent
from ptq_core.modules import QuantLayer, set_quant_state
from ptq_core.prepare import QuantSpec, prepare
from ptq_core.primitives import bernoulli_mask
from ptq_core.qscheme import check_bits
from ptq_core.recon import AdaRoundQuantizer, ReconContext, ReconOptions, reconstruct, rectified_sigmoid
from ptq_core.recon.capture import capture_io
from ptq_core.recon.losses import reconstruction_loss
from ptq_core.recon.trainables import all_float

from .analysis import model_device, quantizable_layers

__all__ = ["H_BINS", "P_GRID", "block_names", "rectified_sigmoid_curve", "adaround_demo", "qdrop_demo",
           "qdrop_mix_picture"]  # fmt: skip

H_BINS = 20  # histogram bins of h(V) over [0, 1]
P_GRID = tuple(round(0.1 * i, 1) for i in range(11))  # drop probabilities of the QDrop curve
_SCATTER = 1500  # weights drawn in the AdaRound scatter
_MAX_ITERS = 2000


def _images(model: nn.Module, bundle: DataBundle, n: int) -> torch.Tensor:
    return calibration_tensor(bundle, n, seed=0).to(model_device(model))


def block_names(model: nn.Module, bundle: DataBundle) -> list[str]:
    """Names of the model's reconstruction blocks (units of kind "block"), in forward order."""
    qmodel, _ = prepare(model, QuantSpec(), _images(model, bundle, 8))
    return [u.name for u in reconstruction_units(qmodel, _images(model, bundle, 2)) if u.kind == "block"]


def rectified_sigmoid_curve(lo: float = -8.0, hi: float = 8.0, num: int = 161) -> dict[str, list[float]]:
    """h(V) of the core's `rectified_sigmoid` on a grid of V, beside the plain sigmoid."""
    v = torch.linspace(lo, hi, num)
    return {"v": v.tolist(), "h": rectified_sigmoid(v).tolist(), "sigmoid": torch.sigmoid(v).tolist()}


def check_quant_layer(qmodel: nn.Module, layer: str) -> QuantLayer:
    try:
        module = qmodel.get_submodule(layer)
    except AttributeError:
        raise ConfigError(f"the model has no layer {layer!r}") from None
    if not isinstance(module, QuantLayer):
        raise ConfigError(f"{layer!r} is not a quantizable (conv or linear) layer")
    return module


def _broadcast(q: torch.Tensor, like: torch.Tensor, axis: int | None) -> torch.Tensor:
    """Per-channel qparams shaped to broadcast along `axis` of `like` (per-tensor ones as they are)."""
    if axis is None or q.dim() == 0:
        return q
    shape = [1] * like.dim()
    shape[axis] = -1
    return q.reshape(shape)


def _h_hist(h: torch.Tensor) -> list[int]:
    return torch.histc(h.detach().float().cpu(), bins=H_BINS, min=0.0, max=1.0).long().tolist()


def adaround_demo(model: nn.Module, bundle: DataBundle, layer: str, bits: int, iters: int, round_weight: float,
                  n_images: int = 256, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Learn the rounding of one layer with the core's AdaRound and compare it with round-to-nearest.

    The layer's weights get a per-channel MSE grid at `bits` (activations float, so the
    rounding alone is at stake); its input is the float model's. The engine's layer pass
    (`reconstruct` with that single unit, lr 1e-2 as in the fast preset) learns V; a
    progress callback reads h(V) while it trains.

    Returns:
        Loss history, h(V) histograms over training, flipped-up/down counts, weight and
        output errors of both roundings, and a sample of (fractional part, final h, decision).
    """
    bits = check_bits(bits, allow_float=False)
    if not 1 <= iters <= _MAX_ITERS:
        raise ConfigError(f"AdaRound steps must be in 1..{_MAX_ITERS}, got {iters}")
    if round_weight < 0:
        raise ConfigError(f"the regulariser weight must be non-negative, got {round_weight}")
    images = _images(model, bundle, n_images)
    if layer not in quantizable_layers(model):
        raise ConfigError(f"{layer!r} is not a quantizable (conv or linear) layer of this model")
    only = {layer: {"wbits": bits, "abits": 32}}  # the other layers stay float: no grid to compute for them
    spec = QuantSpec(wbits=32, abits=32, w_observer="mse", first_last_bits=None, overrides=only)
    qmodel, _ = prepare(model, spec, images[:8])
    qlayer = check_quant_layer(qmodel, layer)
    calibrate_weights(qmodel)
    set_quant_state(qmodel, False, False)
    qmodel.requires_grad_(False)
    weight = qlayer.weight.detach()
    fq = qlayer.weight_quantizer
    s, z = _broadcast(fq.scale.detach(), weight, fq.axis), _broadcast(fq.zero_point.detach(), weight, fq.axis)
    scaled = weight / s
    nearest = (torch.round(scaled) + z).clamp(fq.scheme.qmin, fq.scheme.qmax)
    pick = torch.randperm(weight.numel(), generator=torch.Generator().manual_seed(seed))[:_SCATTER]
    snaps: list[dict[str, Any]] = []
    final_h: list[torch.Tensor] = []

    def watch(event: ProgressEvent) -> None:
        q = qmodel.get_submodule(layer).weight_quantizer
        if event.stage == "reconstruct" and isinstance(q, AdaRoundQuantizer) and not q.hardened:
            h = rectified_sigmoid(q.alpha.detach())
            snaps.append({"step": event.step, "hist": _h_hist(h),
                          "undecided": float(((h > 0.01) & (h < 0.99)).float().mean())})  # fmt: skip
            final_h[:] = [h.flatten()[pick.to(h.device)].cpu()]

    opts = ReconOptions(stage="weights", granularity="layer", iters=iters, batch_size=32, round_lr=1e-2,
                        round_weight=round_weight, quant_act=False, progress_every=max(1, iters // 20))  # fmt: skip
    with torch.random.fork_rng(devices=[images.device] if images.is_cuda else []):
        torch.manual_seed(seed)
        init_h = rectified_sigmoid(AdaRoundQuantizer(fq, weight).alpha.detach())
        ctx = ReconContext(qmodel, model, images, progress=watch, seed=seed)
        (record,) = reconstruct(ctx, opts, [Unit(layer, "layer", type(qlayer).__name__, [layer])])
    rounder = qlayer.weight_quantizer
    learned = rounder.integer_codes(weight) if isinstance(rounder, AdaRoundQuantizer) else nearest
    up, down = learned > nearest, learned < nearest
    w_near, w_ada = (nearest - z) * s, (learned - z) * s
    frac = (scaled - torch.floor(scaled)).flatten()[pick].cpu()
    decision = torch.where(up.flatten()[pick], 1, torch.where(down.flatten()[pick], -1, 0)).cpu()
    n = weight.numel()
    return {
        "layer": layer, "bits": bits, "iters": iters, "round_weight": round_weight, "weights": n,
        "channels": int(weight.shape[0]), "flipped_up": int(up.sum()), "flipped_down": int(down.sum()),
        "weight_mse_nearest": float((w_near - weight).square().mean()),
        "weight_mse_adaround": float((w_ada - weight).square().mean()),
        "output_error_nearest": record.error_before, "output_error_adaround": record.error_after,
        "history": record.history, "h_init": _h_hist(init_h), "snapshots": snaps,
        "scatter": {"frac": frac.tolist(), "h": (final_h[0] if final_h else frac).tolist(),
                    "decision": decision.tolist()},
    }  # fmt: skip


def _block_layers(unit: nn.Module) -> list[QuantLayer]:
    return [m for m in unit.modules() if isinstance(m, QuantLayer)]


def _set_dropping(layers: Sequence[QuantLayer], p: float) -> None:
    """QDrop inside the block: each activation quantizer keeps the float value with probability p."""
    for layer in layers:
        fq = layer.act_quantizer
        if not fq.scheme.is_float:
            fq.drop_prob = p
            fq.train(p > 0)


@torch.no_grad()
def qdrop_demo(model: nn.Module, bundle: DataBundle, block: str, bits: int, n_images: int = 64,
               draws: int = 3, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Block output error against QDrop's drop probability p on a real block.

    The whole model is quantized with round-to-nearest at W`bits`/A`bits` (MSE weight
    grid, min-max activation ranges on the calibration images). For each p in
    `P_GRID`, every element of the block input is the float model's value with
    probability p (the core's `bernoulli_mask`), else the quantized model's; the error
    is the block output's squared distance to the float block output (summed over
    channels, averaged over the rest), averaged over `draws` masks.

    Returns:
        Curves for three cases (float block, quantized block, quantized block with
        dropping inside it as in QDrop's training forward), the input distance, and one
        channel of one image (float and quantized input) for the picture.
    """
    bits = check_bits(bits, allow_float=False)
    if not 1 <= draws <= 20:
        raise ConfigError(f"mask draws must be in 1..20, got {draws}")
    images = _images(model, bundle, n_images)
    spec = QuantSpec(wbits=bits, abits=bits, w_observer="mse", a_observer="minmax", first_last_bits=8)
    qmodel, _ = prepare(model, spec, images[:8])
    if block not in {u.name for u in reconstruction_units(qmodel, images[:2])}:
        raise ConfigError(f"{block!r} is not a reconstruction block of this model")
    calibrate_weights(qmodel)
    calibrate_activations(qmodel, images, batch_size=64)
    set_quant_state(qmodel, True, True)
    x_q, _ = capture_io(qmodel, block, images, 64, False, images.device)
    with all_float(qmodel):
        x_fp, y_fp = capture_io(qmodel, block, images, 64, True, images.device)
    unit, layers = qmodel.get_submodule(block), _block_layers(qmodel.get_submodule(block))
    curves: dict[str, list[float]] = {"float block": [], "quantized block": [], "quantized block + in-block drop": [],
                                      "input distance": []}  # fmt: skip
    with torch.random.fork_rng(devices=[images.device] if images.is_cuda else []):
        torch.manual_seed(seed)
        for p in P_GRID:
            acc = dict.fromkeys(curves, 0.0)
            for _ in range(draws):
                keep = bernoulli_mask(x_q, p)  # 1: the float value
                x_mix = torch.addcmul(x_q * (1.0 - keep), x_fp, keep)
                acc["input distance"] += float(reconstruction_loss(x_mix, x_fp))
                with all_float(unit):
                    acc["float block"] += float(reconstruction_loss(unit(x_mix), y_fp))
                acc["quantized block"] += float(reconstruction_loss(unit(x_mix), y_fp))
                _set_dropping(layers, p)
                try:
                    acc["quantized block + in-block drop"] += float(reconstruction_loss(unit(x_mix), y_fp))
                finally:
                    _set_dropping(layers, 0.0)
            for k in curves:
                curves[k].append(acc[k] / draws)
    diff = (x_q[0] - x_fp[0]).flatten(1).square().sum(1) if x_q.dim() == 4 else None
    channel = int(diff.argmax()) if diff is not None else 0
    pic = (lambda t: t[0, channel]) if x_q.dim() == 4 else (lambda t: t[0])
    maps = {name: np.atleast_2d(pic(t).cpu().numpy()) for name, t in (("x_fp", x_fp), ("x_q", x_q))}
    return {"block": block, "bits": bits, "images": n_images, "draws": draws, "p": list(P_GRID), "curves": curves,
            "channel": channel, "shape": list(x_q.shape[1:]), **maps,
            "quantized_fraction": float((x_q != x_fp).float().mean())}  # fmt: skip


def qdrop_mix_picture(x_fp: np.ndarray, x_q: np.ndarray, p: float, seed: int = 0) -> dict[str, Any]:
    """One mask draw of QDrop's mixing on a 2-D map: mask (1 = float), mixed map, error maps."""
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"drop probability must be in [0, 1], got {p}")
    a, b = torch.from_numpy(np.ascontiguousarray(x_fp)), torch.from_numpy(np.ascontiguousarray(x_q))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        keep = bernoulli_mask(b, p)
    mixed = torch.addcmul(b * (1.0 - keep), a, keep)
    err_q, err_mix = float((b - a).square().mean()), float((mixed - a).square().mean())
    return {"mask": keep.numpy(), "mixed": mixed.numpy(), "kept_float": float(keep.mean()), "mse_quantized": err_q,
            "mse_mixed": err_mix, "expected_mse_mixed": (1.0 - p) * err_q,
            "snr_gain_db": 10 * math.log10(err_q / err_mix) if err_mix > 0 and err_q > 0 else math.inf}  # fmt: skip

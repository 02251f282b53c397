"""AdaRound on one real layer, as the Learn page on AdaRound shows it.

`adaround_demo` runs a few hundred steps of the core's layer-wise AdaRound
(`ptq_core.recon.reconstruct` with one unit) and reports the rectified sigmoid h(V)
during training, which weights ended up rounded up or down against round-to-nearest,
and the loss history. `rectified_sigmoid_curve` draws h(V) itself. Results are plain
lists and numbers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..blocks import Unit
from ..calibrate import calibrate_weights
from ..data import DataBundle
from ..errors import ConfigError
from ..modules import set_quant_state
from ..prepare import QuantSpec, prepare
from ..primitives import along
from ..progress import ProgressEvent
from ..qscheme import check_bits
from ..recon import AdaRoundQuantizer, ReconContext, ReconOptions, reconstruct, rectified_sigmoid
from .architecture import quant_layer, quantizable_layers
from .samples import calibration_images

__all__ = ["H_BINS", "rectified_sigmoid_curve", "adaround_demo"]

H_BINS = 20  # histogram bins of h(V) over [0, 1]
_SCATTER = 1500  # weights drawn in the AdaRound scatter
_MAX_ITERS = 2000


def rectified_sigmoid_curve(lo: float = -8.0, hi: float = 8.0, num: int = 161) -> dict[str, list[float]]:
    """h(V) of the core's `rectified_sigmoid` on a grid of V, beside the plain sigmoid."""
    v = torch.linspace(lo, hi, num)
    return {"v": v.tolist(), "h": rectified_sigmoid(v).tolist(), "sigmoid": torch.sigmoid(v).tolist()}


def _h_hist(h: torch.Tensor) -> list[int]:
    return torch.histc(h.detach().float().cpu(), bins=H_BINS, min=0.0, max=1.0).long().tolist()


def adaround_demo(
    model: nn.Module,
    bundle: DataBundle,
    layer: str,
    bits: int,
    iters: int,
    round_weight: float,
    n_images: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
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
    images = calibration_images(model, bundle, n_images)
    if layer not in quantizable_layers(model):
        raise ConfigError(f"{layer!r} is not a quantizable (conv or linear) layer of this model")
    only = {layer: {"wbits": bits, "abits": 32}}  # the other layers stay float: no grid to compute for them
    spec = QuantSpec(wbits=32, abits=32, w_observer="mse", first_last_bits=None, overrides=only)
    qmodel, _ = prepare(model, spec, images[:8])
    qlayer = quant_layer(qmodel, layer)
    calibrate_weights(qmodel)
    set_quant_state(qmodel, False, False)
    qmodel.requires_grad_(False)
    weight = qlayer.weight.detach()
    fq = qlayer.weight_quantizer
    s, z = along(fq.scale.detach(), weight.dim(), fq.axis), along(fq.zero_point.detach(), weight.dim(), fq.axis)
    scaled = weight / s
    nearest = (torch.round(scaled) + z).clamp(fq.scheme.qmin, fq.scheme.qmax)
    pick = torch.randperm(weight.numel(), generator=torch.Generator().manual_seed(seed))[:_SCATTER]
    snaps: list[dict[str, Any]] = []
    final_h: list[torch.Tensor] = []

    def watch(event: ProgressEvent) -> None:
        q = qmodel.get_submodule(layer).weight_quantizer
        if event.stage == "reconstruct" and isinstance(q, AdaRoundQuantizer) and not q.hardened:
            h = rectified_sigmoid(q.alpha.detach())
            snaps.append(
                {"step": event.step, "hist": _h_hist(h), "undecided": float(((h > 0.01) & (h < 0.99)).float().mean())}
            )
            final_h[:] = [h.flatten()[pick.to(h.device)].cpu()]

    opts = ReconOptions(
        stage="weights",
        granularity="layer",
        iters=iters,
        batch_size=32,
        round_lr=1e-2,
        round_weight=round_weight,
        quant_act=False,
        progress_every=max(1, iters // 20),
    )
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
        "layer": layer,
        "bits": bits,
        "iters": iters,
        "round_weight": round_weight,
        "weights": n,
        "channels": int(weight.shape[0]),
        "flipped_up": int(up.sum()),
        "flipped_down": int(down.sum()),
        "weight_mse_nearest": float((w_near - weight).square().mean()),
        "weight_mse_adaround": float((w_ada - weight).square().mean()),
        "output_error_nearest": record.error_before,
        "output_error_adaround": record.error_after,
        "history": record.history,
        "h_init": _h_hist(init_h),
        "snapshots": snaps,
        "scatter": {
            "frac": frac.tolist(),
            "h": (final_h[0] if final_h else frac).tolist(),
            "decision": decision.tolist(),
        },
    }

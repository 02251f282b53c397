"""QDrop's element-wise mix of quantized and float activations, on a real block (the Learn page on QDrop).

- `block_names`: the model's reconstruction blocks;
- `qdrop_demo`: the block output error against the drop probability p;
- `qdrop_mix_picture`: one mask draw on a 2-D map.

Results are plain lists, numbers and small numpy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..blocks import reconstruction_units
from ..calibrate import calibrate_activations, calibrate_weights
from ..data import DataBundle
from ..errors import ConfigError
from ..modules import QuantLayer, set_quant_state
from ..prepare import QuantSpec, prepare
from ..primitives import bernoulli_mask, qdrop_mix
from ..qscheme import check_bits
from ..recon import all_float, capture_io, reconstruction_loss
from .samples import calibration_images

__all__ = ["P_GRID", "block_names", "qdrop_demo", "qdrop_mix_picture"]

P_GRID = tuple(round(0.1 * i, 1) for i in range(11))  # drop probabilities of the QDrop curve


def block_names(model: nn.Module, bundle: DataBundle) -> list[str]:
    """Names of the model's reconstruction blocks (units of kind "block"), in forward order."""
    qmodel, _ = prepare(model, QuantSpec(), calibration_images(model, bundle, 8))
    return [u.name for u in reconstruction_units(qmodel, calibration_images(model, bundle, 2)) if u.kind == "block"]


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
def qdrop_demo(
    model: nn.Module, bundle: DataBundle, block: str, bits: int, n_images: int = 64, draws: int = 3, seed: int = 0
) -> dict[str, Any]:
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
    images = calibration_images(model, bundle, n_images)
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
    curves: dict[str, list[float]] = {
        "float block": [],
        "quantized block": [],
        "quantized block + in-block drop": [],
        "input distance": [],
    }
    with torch.random.fork_rng(devices=[images.device] if images.is_cuda else []):
        torch.manual_seed(seed)
        for p in P_GRID:
            acc = dict.fromkeys(curves, 0.0)
            for _ in range(draws):
                keep = bernoulli_mask(x_q, p)  # 1: the float value
                x_mix = qdrop_mix(x_q, x_fp, keep)
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
    return {
        "block": block,
        "bits": bits,
        "images": n_images,
        "draws": draws,
        "p": list(P_GRID),
        "curves": curves,
        "channel": channel,
        "shape": list(x_q.shape[1:]),
        **maps,
        "quantized_fraction": float((x_q != x_fp).float().mean()),
    }


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
    return {
        "mask": keep.numpy(),
        "mixed": mixed.numpy(),
        "kept_float": float(keep.mean()),
        "mse_quantized": err_q,
        "mse_mixed": err_mix,
        "expected_mse_mixed": (1.0 - p) * err_q,
        "snr_gain_db": 10 * math.log10(err_q / err_mix) if err_mix > 0 and err_q > 0 else math.inf,
    }

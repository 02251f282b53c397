"""Torch side of the Learn page on CAT (no Streamlit; `learn_bridge` caches it).

A small, real demonstration of CAT's stage 2 with the core's `ptq_core.cat`: the
model quantized with round-to-nearest, float and quantized logits on a fitting set
(calibration images after the ones RTN used) and on an evaluation set (test images),
then `fit_cat` (k-means on the quantized logits, closed-form scale and shift per
cluster and class) and `build_result` (clusters in 2-D, accuracy, fixes and breaks).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ptq_core.cat import CATOptions, build_result, fit_cat, fit_set, model_logits
from ptq_core.data import DataBundle, calibration_tensor
from ptq_core.errors import ConfigError
from ptq_core.methods import RTNConfig, quantize
from ptq_core.prepare import QuantSpec
from ptq_core.qscheme import check_bits

from .analysis import model_device

__all__ = ["CALIB", "cat_logits", "cat_demo"]

CALIB = 256  # RTN calibration images; the fitting set follows them


def cat_logits(model: nn.Module, bundle: DataBundle, bits: int, fit_size: int = 1024,
               eval_size: int = 1000) -> dict[str, np.ndarray]:  # fmt: skip
    """Float and RTN-quantized logits on the fitting and evaluation sets.

    RTN at W`bits`/A`bits` with 8-bit first/last layers, MSE weight grids and min-max
    activation ranges on `CALIB` images: a plainly quantized model whose logits CAT corrects.
    """
    bits = check_bits(bits, allow_float=False)
    device = model_device(model)
    calib = calibration_tensor(bundle, CALIB, seed=0).to(device)
    spec = QuantSpec(wbits=bits, abits=bits, w_observer="mse", a_observer="minmax")
    qmodel = quantize(model, calib, RTNConfig(quant=spec, calib=CALIB)).model
    fit = fit_set(bundle, CALIB, fit_size, seed=0)
    n = min(eval_size, len(bundle.test))
    test = [bundle.test[i] for i in range(n)]
    images = torch.stack([x for x, _ in test])
    labels = np.asarray([int(y) for _, y in test])
    out = {f"{part}_{kind}": model_logits(net, x).cpu().numpy() for part, x in (("fit", fit.images), ("eval", images))
           for kind, net in (("q", qmodel), ("f", model))}  # fmt: skip
    return {**out, "labels": labels, "fit_disjoint": np.asarray(fit.description["disjoint"])}


def cat_demo(logits: dict[str, np.ndarray], k: int, alpha: float) -> dict[str, Any]:
    """Fit CAT with `k` clusters (no PCA, as the paper's default) and measure it on the evaluation set at `alpha`."""
    if not 1 <= k <= len(logits["fit_q"]):
        raise ConfigError(f"clusters must be in 1..{len(logits['fit_q'])}, got {k}")
    zq, zf = torch.from_numpy(logits["fit_q"]), torch.from_numpy(logits["fit_f"])
    fit = fit_cat(zq, zf, CATOptions(k=k, alpha=alpha))
    res = build_result(fit, torch.from_numpy(logits["eval_q"]), torch.from_numpy(logits["eval_f"]),
                       torch.from_numpy(logits["labels"]), alpha, fit_zq=zq)  # fmt: skip
    out = res.to_dict()
    out["fit_assign"] = fit.assign.cpu().tolist()
    return out

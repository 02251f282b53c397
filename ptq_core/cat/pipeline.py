"""CAT inside a run: fit on calibration-split images the base method did not see, measure on the test split."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data import DataBundle
from ..methods.base import MethodConfig, QuantResult
from ..progress import ProgressEvent, ProgressFn, emit
from .apply import accuracy, apply_cat, eval_logits, fit_set, model_logits
from .module import CATCorrected
from .options import CATOptions
from .result import build_result

__all__ = ["attach_cat", "cat_overhead_bits"]


def attach_cat(fp_model: nn.Module, qres: QuantResult, bundle: DataBundle, config: MethodConfig,
               options: CATOptions, loader: DataLoader, device: torch.device,
               progress: ProgressFn | None = None) -> tuple[dict[str, float], dict[str, float]]:  # fmt: skip
    """Fit CAT after `qres`'s method, wrap `qres.model` with it, and evaluate base and corrected logits.

    `qres.model` becomes a `CATCorrected` around the base model; `qres.extras["cat"]`
    gets the `CATResult` summary (options, fitting and evaluation sets, sizes, fixes,
    breaks, overhead) and `qres.timings["cat_fit"]` the fitting time.

    Returns:
        ``(corrected metrics, base metrics)`` in the format of `metrics.evaluate`.
    """
    import time

    emit(progress, ProgressEvent("cat", 0, 2, message="CAT: fitting"))
    t0 = time.perf_counter()
    fs = fit_set(bundle, config.calib, options.fit_size, config.seed)
    images = fs.images.to(device)
    cat_model, fit = apply_cat(fp_model, qres.model, images, options)
    fit_seconds = time.perf_counter() - t0

    def on_batch(i: int, n: int) -> None:
        emit(progress, ProgressEvent("evaluate", i + 1, n, message="float, base and CAT accuracy"))

    ev = eval_logits(fp_model, qres.model, loader, device, on_batch)
    fit_zq = model_logits(qres.model, images)
    eval_desc = {"split": "test", "data": bundle.name, "size": len(ev.labels)}
    res = build_result(fit, ev.q, ev.fp, ev.labels, fit_zq=fit_zq, fit_set=fs.description, eval_set=eval_desc)
    corrected = cat_model.correct(ev.q.to(cat_model.gamma.device)).cpu()
    qres.model = cat_model
    qres.timings["cat_fit"] = fit_seconds
    qres.extras["cat"] = res.summary()
    emit(progress, ProgressEvent("cat", 2, 2, message="CAT: done"))
    return accuracy(corrected, ev.labels), accuracy(ev.q, ev.labels)


def cat_overhead_bits(model: nn.Module) -> int:
    """fp32 bits of a `CATCorrected`'s tables (0 for any other model)."""
    return 32 * model.overhead_floats() if isinstance(model, CATCorrected) else 0

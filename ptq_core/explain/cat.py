"""CAT (cluster-wise affine correction of the logits) on real logits: the Learn page on CAT and the
CAT corrections page.

The expensive step quantizes a model once and collects its float and quantized logits
on a fitting set (calibration images after the ones the quantizer used) and an
evaluation set (test images), as numpy arrays. Everything else refits CAT on those
arrays with the core's `ptq_core.cat` (`fit_cat`, `build_result`), which takes
milliseconds:

- `rtn_logits` / `cat_demo`: the Learn page (RTN base, fixed K and alpha);
- `correction_logits` / `correction_view` / `sample_logits` / `knob_sweep`: the CAT
  corrections page (any method as the base, every knob).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..cat import CATOptions, build_result, eval_logits, fit_cat, fit_set, model_logits
from ..data import DataBundle, make_loader
from ..errors import ConfigError
from ..methods import MethodConfig, RTNConfig, quantize
from ..metrics import model_size_bits
from ..prepare import QuantSpec
from ..qscheme import check_bits
from .device import model_device
from .samples import calibration_images

__all__ = [
    "CALIB",
    "K_CHOICES",
    "FIT_CHOICES",
    "ALPHA_GRID",
    "MAX_SHOWN",
    "rtn_logits",
    "cat_demo",
    "correction_logits",
    "correction_view",
    "sample_logits",
    "knob_sweep",
]

CALIB = 256  # RTN calibration images of the Learn page; the fitting set follows them
K_CHOICES = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128]
FIT_CHOICES = [128, 256, 512, 1024, 2048]
ALPHA_GRID = [round(0.05 * i, 2) for i in range(21)]
MAX_SHOWN = 2000  # per-sample points in a correction view
_LOGIT_KEYS = ("fit_q", "fit_f", "eval_q", "eval_f", "labels")


def rtn_logits(
    model: nn.Module, bundle: DataBundle, bits: int, fit_size: int = 1024, eval_size: int = 1000
) -> dict[str, np.ndarray]:
    """Float and RTN-quantized logits on the fitting and evaluation sets.

    RTN at W`bits`/A`bits` with 8-bit first/last layers, MSE weight grids and min-max
    activation ranges on `CALIB` images: a plainly quantized model whose logits CAT corrects.
    """
    bits = check_bits(bits, allow_float=False)
    calib = calibration_images(model, bundle, CALIB)
    spec = QuantSpec(wbits=bits, abits=bits, w_observer="mse", a_observer="minmax")
    qmodel = quantize(model, calib, RTNConfig(quant=spec, calib=CALIB)).model
    fit = fit_set(bundle, CALIB, fit_size, seed=0)
    n = min(eval_size, len(bundle.test))
    test = [bundle.test[i] for i in range(n)]
    images = torch.stack([x for x, _ in test])
    labels = np.asarray([int(y) for _, y in test])
    out = {
        f"{part}_{kind}": model_logits(net, x).cpu().numpy()
        for part, x in (("fit", fit.images), ("eval", images))
        for kind, net in (("q", qmodel), ("f", model))
    }
    return {**out, "labels": labels, "fit_disjoint": np.asarray(fit.description["disjoint"])}


def cat_demo(logits: dict[str, np.ndarray], k: int, alpha: float) -> dict[str, Any]:
    """Fit CAT with `k` clusters (no PCA, as the paper's default) and measure it on the evaluation set at `alpha`."""
    if not 1 <= k <= len(logits["fit_q"]):
        raise ConfigError(f"clusters must be in 1..{len(logits['fit_q'])}, got {k}")
    zq, zf = torch.from_numpy(logits["fit_q"]), torch.from_numpy(logits["fit_f"])
    fit = fit_cat(zq, zf, CATOptions(k=k, alpha=alpha))
    res = build_result(
        fit,
        torch.from_numpy(logits["eval_q"]),
        torch.from_numpy(logits["eval_f"]),
        torch.from_numpy(logits["labels"]),
        alpha,
        fit_zq=zq,
    )
    out = res.to_dict()
    out["fit_assign"] = fit.assign.cpu().tolist()
    return out


def correction_logits(
    model: nn.Module,
    bundle: DataBundle,
    config: MethodConfig,
    fit_max: int = FIT_CHOICES[-1],
    eval_limit: int | None = None,
) -> dict[str, Any]:
    """Quantize `model` with `config` and collect float / quantized logits on up to `fit_max` fitting images
    and the first `eval_limit` test images (all if None), with the sets' descriptions and the model size."""
    device = model_device(model)
    calib = calibration_images(model, bundle, config.calib, config.seed)
    qmodel = quantize(model, calib, config).model
    fs = fit_set(bundle, config.calib, fit_max, config.seed)
    images = fs.images.to(device)
    ev = eval_logits(model, qmodel, make_loader(bundle.test, limit=eval_limit), device)
    as_np = lambda t: t.detach().cpu().float().numpy()  # noqa: E731
    return {
        "fit_q": as_np(model_logits(qmodel, images)),
        "fit_f": as_np(model_logits(model, images)),
        "eval_q": as_np(ev.q),
        "eval_f": as_np(ev.fp),
        "labels": ev.labels.numpy(),
        "fit_set": fs.description,
        "eval_set": {"split": "test", "data": bundle.name, "size": len(ev.labels)},
        "size_bits": model_size_bits(qmodel),
        "classes": list(bundle.classes),
        "method": config.method,
    }


def _tensors(logits: dict[str, Any], fit_size: int) -> dict[str, Any]:
    """The logits as tensors, the fitting set cut to its first `fit_size` samples."""
    t = {k: torch.from_numpy(np.asarray(logits[k])) for k in _LOGIT_KEYS}
    n = min(fit_size, len(t["fit_q"]))
    t["fit_q"], t["fit_f"] = t["fit_q"][:n], t["fit_f"][:n]
    return t | {"fit_set": dict(logits["fit_set"], size=n), "eval_set": logits["eval_set"]}


def _fit(t: dict[str, Any], k: int, pca: int | None, alpha: float, fit_size: int):
    return fit_cat(t["fit_q"], t["fit_f"], CATOptions(k=k, pca=pca, alpha=alpha, fit_size=fit_size))


def correction_view(logits: dict[str, Any], k: int, pca: int | None, alpha: float, fit_size: int) -> dict[str, Any]:
    """`CATResult.to_dict()` for these knobs, plus an accuracy-vs-alpha curve and per-cluster mean logits.

    Per-sample lists (``points_2d``, ``assign``, ``labels``, ``status``) hold at most
    `MAX_SHOWN` evaluation samples, evenly spaced; ``shown_index`` gives their positions.
    """
    t = _tensors(logits, fit_size)
    fit = _fit(t, k, pca, alpha, fit_size)
    res = build_result(
        fit, t["eval_q"], t["eval_f"], t["labels"], fit_zq=t["fit_q"], fit_set=t["fit_set"], eval_set=t["eval_set"]
    ).to_dict()
    assign = fit.predict(t["eval_q"])
    right = []
    for a in ALPHA_GRID:  # accuracy against alpha with this fit (one assignment, many blends)
        z = (1 - a) * t["eval_q"] + a * (fit.gamma[assign] * t["eval_q"] + fit.beta[assign])
        right.append(100.0 * float((z.argmax(1) == t["labels"]).double().mean()))
    corrected = fit.correct(t["eval_q"], alpha)
    means = {}
    for name, z in (("float", t["eval_f"]), ("quantized", t["eval_q"]), ("corrected", corrected)):
        s = torch.zeros(fit.gamma.shape).index_add_(0, assign, z)
        means[name] = (s / torch.bincount(assign, minlength=k).clamp(min=1)[:, None]).tolist()
    if len(res["points_2d"]) > MAX_SHOWN:  # the scatter gets an even subsample
        keep = np.linspace(0, len(res["points_2d"]) - 1, MAX_SHOWN).astype(int).tolist()
        for name in ("points_2d", "assign", "labels", "status"):
            res[name] = [res[name][i] for i in keep]
        res["shown_index"] = keep
    else:
        res["shown_index"] = list(range(len(res["points_2d"])))
    return res | {"alpha_curve": {"alpha": ALPHA_GRID, "top1": right}, "cluster_means": means}


def sample_logits(
    logits: dict[str, Any], k: int, pca: int | None, alpha: float, fit_size: int, index: int
) -> dict[str, Any]:
    """Float, quantized and corrected logits of evaluation sample `index`, with its cluster and label."""
    t = _tensors(logits, fit_size)
    if not 0 <= index < len(t["labels"]):
        raise ConfigError(f"sample index must be in 0..{len(t['labels']) - 1}, got {index}")
    fit = _fit(t, k, pca, alpha, fit_size)
    zq, zf = t["eval_q"][index : index + 1], t["eval_f"][index : index + 1]
    return {
        "float": zf[0].tolist(),
        "quantized": zq[0].tolist(),
        "corrected": fit.correct(zq, alpha)[0].tolist(),
        "cluster": int(fit.predict(zq)[0]),
        "label": int(t["labels"][index]),
    }


def _top1(t: dict[str, Any], k: int, pca: int | None, alpha: float, fit_size: int) -> float:
    n = min(fit_size, len(t["fit_q"]))
    fit = fit_cat(t["fit_q"][:n], t["fit_f"][:n], CATOptions(k=min(k, n), pca=pca, alpha=alpha, fit_size=n))
    return 100.0 * float((fit.correct(t["eval_q"]).argmax(1) == t["labels"]).double().mean())


def knob_sweep(
    logits: dict[str, Any], knob: str, k: int, pca: int | None, alpha: float, fit_size: int
) -> dict[str, list[Any]]:
    """Evaluation top-1 as one knob ("k", "pca" or "fit_size") runs over its choices, the others fixed."""
    t = _tensors(logits, FIT_CHOICES[-1])
    classes = int(t["eval_q"].shape[1])
    choices = {"k": K_CHOICES, "pca": [0, *range(2, classes + 1)], "fit_size": FIT_CHOICES}
    if knob not in choices:
        raise ConfigError(f"knob must be one of {', '.join(choices)}, got {knob!r}")
    top1 = []
    for v in choices[knob]:
        knobs = {"k": k, "pca": pca, "alpha": alpha, "fit_size": fit_size} | {knob: v}
        knobs["pca"] = knobs["pca"] or None
        top1.append(_top1(t, **knobs))
    return {"values": choices[knob], "top1": top1}

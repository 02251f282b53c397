"""Cached doors from the "CAT corrections" page into `ptq_core.cat`.

The expensive part, quantizing once and collecting float / quantized logits on the
fitting and evaluation sets, is cached per (model, data, base config, sizes) with
`st.cache_data` as small numpy arrays. Everything the sliders change (K, PCA
dimensions, alpha, fitting-set size) refits CAT on those logits, which takes
milliseconds, and is cached too. Nothing here keeps a model or a tensor.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import streamlit as st
import torch

from ptq_core.cat import CATOptions, build_result, eval_logits, fit_cat, fit_set, model_logits
from ptq_core.data import calibration_tensor, make_loader
from ptq_core.methods import METHODS, config_from_dict, quantize
from ptq_core.metrics import model_size_bits

from . import bridge
from .state import Selection

__all__ = ["K_CHOICES", "FIT_CHOICES", "ALPHA_GRID", "base_choices", "logits_info", "cat_view", "sample_logits",
           "sweep"]  # fmt: skip

K_CHOICES = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128]
FIT_CHOICES = [128, 256, 512, 1024, 2048]
ALPHA_GRID = [round(0.05 * i, 2) for i in range(21)]
_MAX_POINTS = 2000  # scatter points sent to the browser


def base_choices(model: str, rtn_config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Label -> base method config (a dict): RTN with the Quantize page's settings, then saved runs of `model`.

    A saved run is re-quantized from its stored settings (same seed, same images); runs
    made with CAT offer their base method.
    """
    out = {"RTN with the Quantize page's settings": rtn_config}
    for rec in bridge.list_runs(status="done", model=model, limit=30):
        cfg = dict(rec.config)
        if cfg.get("method") in METHODS:
            out[f"{rec.method} {rec.bits_label} · run {rec.run_id}"] = cfg
    return out


@st.cache_data(max_entries=8, show_spinner="Quantizing and collecting the float and quantized logits…")
def _logits(key: tuple[str, str, str], data: str, config_json: str, fit_max: int,
            eval_limit: int | None) -> dict[str, Any]:  # fmt: skip
    loaded, bundle = bridge._resources(Selection(*key[:2], data, key[2]))
    model = loaded.model
    device = next(model.parameters()).device
    config = config_from_dict(json.loads(config_json))
    calib = calibration_tensor(bundle, config.calib, config.seed).to(device)
    qmodel = quantize(model, calib, config).model
    fs = fit_set(bundle, config.calib, fit_max, config.seed)
    images = fs.images.to(device)
    ev = eval_logits(model, qmodel, make_loader(bundle.test, limit=eval_limit), device)
    as_np = lambda t: t.detach().cpu().float().numpy()  # noqa: E731
    return {"fit_q": as_np(model_logits(qmodel, images)), "fit_f": as_np(model_logits(model, images)),
            "eval_q": as_np(ev.q), "eval_f": as_np(ev.fp), "labels": ev.labels.numpy(),
            "fit_set": fs.description, "eval_set": {"split": "test", "data": bundle.name, "size": len(ev.labels)},
            "size_bits": model_size_bits(qmodel), "classes": list(bundle.classes), "method": config.method}  # fmt: skip


def logits_info(sel: Selection, config: dict[str, Any], eval_limit: int | None) -> dict[str, Any]:
    """Sets, sizes and class names behind the page (quantizes on first use)."""
    d = _logits(sel.key, sel.data, json.dumps(config, sort_keys=True), FIT_CHOICES[-1], eval_limit)
    return {k: d[k] for k in ("fit_set", "eval_set", "size_bits", "classes", "method")} | {
        "fit_available": len(d["fit_q"])
    }


def _tensors(sel: Selection, config: dict[str, Any], eval_limit: int | None, fit_size: int) -> dict[str, Any]:
    d = _logits(sel.key, sel.data, json.dumps(config, sort_keys=True), FIT_CHOICES[-1], eval_limit)
    t = {k: torch.from_numpy(np.asarray(d[k])) for k in ("fit_q", "fit_f", "eval_q", "eval_f", "labels")}
    n = min(fit_size, len(t["fit_q"]))
    t["fit_q"], t["fit_f"] = t["fit_q"][:n], t["fit_f"][:n]
    fs = dict(d["fit_set"], size=n)
    return t | {"fit_set": fs, "eval_set": d["eval_set"]}


@st.cache_data(max_entries=64, show_spinner=False)
def _view(key: tuple[str, str, str], data: str, config_json: str, eval_limit: int | None, k: int, pca: int | None,
          alpha: float, fit_size: int) -> dict[str, Any]:  # fmt: skip
    t = _tensors(Selection(*key[:2], data, key[2]), json.loads(config_json), eval_limit, fit_size)
    fit = fit_cat(t["fit_q"], t["fit_f"], CATOptions(k=k, pca=pca, alpha=alpha, fit_size=fit_size))
    res = build_result(fit, t["eval_q"], t["eval_f"], t["labels"], fit_zq=t["fit_q"], fit_set=t["fit_set"],
                       eval_set=t["eval_set"]).to_dict()  # fmt: skip
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
    if len(res["points_2d"]) > _MAX_POINTS:  # the scatter gets an even subsample
        keep = np.linspace(0, len(res["points_2d"]) - 1, _MAX_POINTS).astype(int).tolist()
        for name in ("points_2d", "assign", "labels", "status"):
            res[name] = [res[name][i] for i in keep]
        res["shown_index"] = keep
    else:
        res["shown_index"] = list(range(len(res["points_2d"])))
    return res | {"alpha_curve": {"alpha": ALPHA_GRID, "top1": right}, "cluster_means": means}


def cat_view(sel: Selection, config: dict[str, Any], eval_limit: int | None, k: int, pca: int | None, alpha: float,
             fit_size: int) -> dict[str, Any]:  # fmt: skip
    """`CATResult.to_dict()` for these knobs, plus an accuracy-vs-alpha curve and per-cluster mean logits.

    Per-sample lists (``points_2d``, ``assign``, ``labels``, ``status``) hold at most
    2000 evaluation samples, evenly spaced; ``shown_index`` gives their positions.
    """
    return _view(sel.key, sel.data, json.dumps(config, sort_keys=True), eval_limit, k, pca, alpha, fit_size)


@st.cache_data(max_entries=256, show_spinner=False)
def _sample(key: tuple[str, str, str], data: str, config_json: str, eval_limit: int | None, k: int, pca: int | None,
            alpha: float, fit_size: int, index: int) -> dict[str, Any]:  # fmt: skip
    t = _tensors(Selection(*key[:2], data, key[2]), json.loads(config_json), eval_limit, fit_size)
    fit = fit_cat(t["fit_q"], t["fit_f"], CATOptions(k=k, pca=pca, alpha=alpha, fit_size=fit_size))
    zq, zf = t["eval_q"][index : index + 1], t["eval_f"][index : index + 1]
    return {"float": zf[0].tolist(), "quantized": zq[0].tolist(), "corrected": fit.correct(zq, alpha)[0].tolist(),
            "cluster": int(fit.predict(zq)[0]), "label": int(t["labels"][index])}  # fmt: skip


def sample_logits(sel: Selection, config: dict[str, Any], eval_limit: int | None, k: int, pca: int | None,
                  alpha: float, fit_size: int, index: int) -> dict[str, Any]:  # fmt: skip
    """Float, quantized and corrected logits of evaluation sample `index`, with its cluster and label."""
    cfg = json.dumps(config, sort_keys=True)
    return _sample(sel.key, sel.data, cfg, eval_limit, k, pca, alpha, fit_size, index)


def _top1(t: dict[str, Any], k: int, pca: int | None, alpha: float, fit_size: int) -> float:
    n = min(fit_size, len(t["fit_q"]))
    fit = fit_cat(t["fit_q"][:n], t["fit_f"][:n], CATOptions(k=min(k, n), pca=pca, alpha=alpha, fit_size=n))
    return 100.0 * float((fit.correct(t["eval_q"]).argmax(1) == t["labels"]).double().mean())


@st.cache_data(max_entries=64, show_spinner="Sweeping…")
def _sweep(key: tuple[str, str, str], data: str, config_json: str, eval_limit: int | None, knob: str, k: int,
           pca: int | None, alpha: float, fit_size: int) -> dict[str, list[Any]]:  # fmt: skip
    t = _tensors(Selection(*key[:2], data, key[2]), json.loads(config_json), eval_limit, FIT_CHOICES[-1])
    classes = int(t["eval_q"].shape[1])
    values: list[Any] = {"k": K_CHOICES, "pca": [0, *range(2, classes + 1)], "fit_size": FIT_CHOICES}[knob]
    top1 = []
    for v in values:
        knobs = {"k": k, "pca": pca, "alpha": alpha, "fit_size": fit_size} | {knob: v}
        knobs["pca"] = knobs["pca"] or None
        top1.append(_top1(t, **knobs))
    return {"values": values, "top1": top1}


def sweep(sel: Selection, config: dict[str, Any], eval_limit: int | None, knob: str, k: int, pca: int | None,
          alpha: float, fit_size: int) -> dict[str, list[Any]]:  # fmt: skip
    """Evaluation top-1 as one knob ("k", "pca" or "fit_size") runs over its choices, the others fixed."""
    return _sweep(sel.key, sel.data, json.dumps(config, sort_keys=True), eval_limit, knob, k, pca, alpha, fit_size)

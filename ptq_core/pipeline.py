"""One quantization run end to end: load, quantize, (fit CAT,) evaluate, record.

`run_quantization(spec)` is what the CLI, the app and the benchmarks call. What it
measures is a `RunResult`; what it returns is the stored `RunRecord` of the run,
the same object `runs show ID` prints and the app draws, so a number on the screen,
in `--json` and in the store is one number.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from .analysis.overfit import OVERFIT_IMAGES, overfit_check
from .cat import CATCorrected, CATOptions, accuracy, apply_cat, build_result, eval_logits, fit_set, model_logits
from .data import DataBundle, calibration_labels, calibration_tensor, load_data, make_loader
from .errors import ConfigError
from .methods import MethodConfig, ProgressEvent, ProgressFn, QuantResult, ReconMethodConfig, emit, quantize
from .metrics import evaluate, layer_errors, model_size_bits
from .models import LoadedModel, load_model, resolve_device
from .spec import RunSpec, bits_summary
from .store import RunRecord, RunStore

__all__ = ["RunResult", "run_quantization", "quantize_and_evaluate", "attach_cat", "cat_overhead_bits"]


@dataclass
class RunResult:
    """Everything a finished run measures (accuracies in percent, sizes in bits).

    `metrics` holds the scalars (fp_top1, top1, ..., eval_samples, w_bits_avg), `layers`
    the accumulated per-layer view and `layers_alone` each layer quantized on its own;
    `method_extras` is what the method itself recorded (kept apart from the run's fields).
    """

    metrics: dict[str, Any]
    label: str
    layers: list[dict[str, Any]] = field(default_factory=list)
    layers_alone: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    bits: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    method_extras: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    overfit: dict[str, Any] | None = None  # reconstruction methods: calibration vs test images

    def extras(self) -> dict[str, Any]:
        """What the store keeps beside metrics and layers; the method's own under "method", and for
        reconstruction methods the overfitting check under "overfit"."""
        d = asdict(self)
        keep = ("layers_alone", "report", "bits", "data", "device") + (("overfit",) if self.overfit else ())
        return {k: d[k] for k in keep} | {"method": self.method_extras}


def quantize_and_evaluate(
    spec: RunSpec,
    loaded: LoadedModel,
    bundle: DataBundle,
    device: torch.device,
    progress: ProgressFn | None = None,
) -> tuple[RunResult, QuantResult]:
    """Quantize `loaded.model` as `spec` says and measure it against the float model.

    With `spec.cat`, CAT's correction is fitted after the method: the returned model is the
    corrected one, `top1` its accuracy and `top1_base` the method's.
    """
    config = spec.method
    if config.calib > len(bundle.calib):
        raise ConfigError(
            f"the run asks for {config.calib} calibration images but {bundle.name} has "
            f"{len(bundle.calib)}: lower the calibration size"
        )
    t0 = time.perf_counter()
    model = loaded.model.to(device).eval()
    calib = calibration_tensor(bundle, config.calib, config.seed).to(device)
    loader = make_loader(bundle.test, limit=spec.eval_limit)

    def on_eval(tag: str):
        return lambda i, n: emit(progress, ProgressEvent("evaluate", i + 1, n, message=tag))

    fp = evaluate(model, loader, device, on_eval("float accuracy"))
    qres = quantize(model, calib, config, progress)
    base_model, q_base = qres.model, None
    if spec.cat is None:
        q = evaluate(qres.model, loader, device, on_eval("quantized accuracy"))
    else:
        q, q_base = attach_cat(model, qres, bundle, config, spec.cat, loader, device, progress)
    emit(progress, ProgressEvent("errors", 0, 1, message="per-layer errors"))
    x_err = next(iter(make_loader(bundle.test, batch_size=spec.error_samples)))[0].to(device)
    report = qres.report.to_dict()
    bits = bits_summary(report["layers"], config.quant)
    metrics = {
        "fp_top1": fp["top1"],
        "fp_top5": fp["top5"],
        "top1": q["top1"],
        "top5": q["top5"],
        "size_bits": model_size_bits(base_model) + cat_overhead_bits(qres.model),
        "fp_size_bits": sum(p.numel() for p in model.parameters()) * 32,
        "seconds": time.perf_counter() - t0,
        "eval_samples": int(q["samples"]),
        "calib_samples": len(calib),
        "w_bits_avg": bits.w_avg,
        "a_bits_avg": bits.a_avg,
    }
    if q_base is not None:
        metrics["top1_base"] = q_base["top1"]
    data = bundle.describe()
    if spec.cat is not None:
        data.update(cat_fit=qres.extras["cat"]["fit_set"], eval=qres.extras["cat"]["eval_set"])
    overfit = None
    if isinstance(config, ReconMethodConfig):
        emit(progress, ProgressEvent("errors", 0, 1, message="calibration vs test images (overfitting)"))
        n = min(OVERFIT_IMAGES, len(calib))
        x_t, y_t = next(iter(make_loader(bundle.test, batch_size=n)))
        labels = calibration_labels(bundle, config.calib, config.seed)[:n]
        overfit = overfit_check(base_model, (calib[:n], labels), (x_t.to(device), y_t))
    result = RunResult(
        metrics=metrics,
        label=bits.label,
        report=report,
        bits=bits.to_dict(),
        data=data,
        layers=[e.to_dict() for e in layer_errors(base_model, x_err, "accumulated")],
        layers_alone=[e.to_dict() for e in layer_errors(base_model, x_err, "alone")],
        timings=dict(qres.timings, method=qres.seconds),
        method_extras=qres.extras,
        device=str(device),
        overfit=overfit,
    )
    return result, qres


def attach_cat(
    fp_model: nn.Module,
    qres: QuantResult,
    bundle: DataBundle,
    config: MethodConfig,
    options: CATOptions,
    loader: DataLoader,
    device: torch.device,
    progress: ProgressFn | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """Fit CAT after `qres`'s method, wrap `qres.model` with it, and evaluate base and corrected logits.

    `qres.model` becomes a `CATCorrected` around the base model; `qres.extras["cat"]`
    gets the `CATResult` summary (options, fitting and evaluation sets, sizes, fixes,
    breaks, overhead) and `qres.timings["cat_fit"]` the fitting time.

    Returns:
        ``(corrected metrics, base metrics)`` in the format of `metrics.evaluate`.
    """
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


def run_quantization(
    spec: RunSpec,
    store: RunStore | None = None,
    progress: ProgressFn | None = None,
    resources: tuple[LoadedModel, DataBundle] | None = None,
    owner: str = "",
) -> tuple[RunRecord, QuantResult]:
    """Run `spec` and record it in `store` (the default store when None).

    Args:
        spec: The run's description; it is stored as given.
        store: Where the run is recorded.
        progress: Receives `ProgressEvent`s; may raise `RunCancelled`.
        resources: The already loaded model and data of `spec` (the app's cached ones);
            loaded from `spec` when None. They are only read.
        owner: Who starts the run (the app's user or session), kept with the record.

    Returns:
        The stored record (what `runs show ID` prints) and the method's `QuantResult`.
        A run that fails is recorded as failed; earlier runs are never touched.
    """
    store = store if store is not None else RunStore()
    q = spec.method.quant
    with store.run(
        spec.model, spec.label, q.wbits, q.abits, spec.method.to_dict(), spec=spec.to_dict(), owner=owner
    ) as handle:
        dev = resolve_device(spec.device)
        if resources is None:
            loaded = load_model(spec.model, spec.weights, dev)
            resources = loaded, load_data(spec.data, loaded.transform)
        result, qres = quantize_and_evaluate(spec, *resources, dev, progress)
        handle.finish(result.metrics, result.layers, result.timings, result.extras(), label=result.label)
    return store.get(handle.run_id), qres

"""One quantization run end to end: load, quantize, evaluate, record.

`run_quantization` is what the CLI and the app both call; its `RunResult` is
the one result object they both draw from, and it is saved in the run store.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .cat.options import CATOptions
from .cat.pipeline import attach_cat, cat_overhead_bits
from .data import DataBundle, calibration_tensor, load_data, make_loader
from .methods import MethodConfig, ProgressEvent, ProgressFn, QuantResult, emit, quantize
from .metrics import evaluate, layer_errors, model_size_bits
from .models import LoadedModel, load_model, resolve_device
from .store import RunStore

__all__ = ["RunResult", "run_quantization", "quantize_and_evaluate", "run_label"]


@dataclass
class RunResult:
    """Everything a finished run reports (accuracies in percent, sizes in bits)."""

    model: str
    method: str
    wbits: int
    abits: int
    fp_top1: float
    fp_top5: float
    top1: float
    top5: float
    size_bits: int
    fp_size_bits: int
    seconds: float
    eval_samples: int
    layers: list[dict[str, Any]] = field(default_factory=list)  # accumulated view
    layers_alone: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    run_id: str | None = None
    top1_base: float | None = None  # with CAT: the base method's top-1 (top1 is then the corrected one)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the CLI's `--json` output)."""
        return asdict(self)

    def metrics(self) -> dict[str, float]:
        """The scalar metrics, as stored in the run store."""
        keys = ("fp_top1", "fp_top5", "top1", "top5", "size_bits", "fp_size_bits", "seconds", "eval_samples")
        extra = {"top1_base": self.top1_base} if self.top1_base is not None else {}
        return {**{k: getattr(self, k) for k in keys}, **extra}


def quantize_and_evaluate(
    loaded: LoadedModel,
    bundle: DataBundle,
    config: MethodConfig,
    device: torch.device,
    progress: ProgressFn | None = None,
    eval_limit: int | None = None,
    error_samples: int = 256,
    cat: CATOptions | None = None,
) -> tuple[RunResult, QuantResult]:
    """Quantize `loaded.model` with `config` and measure it against the float model.

    With `cat`, CAT's correction is fitted after the method (`ptq_core.cat.pipeline.attach_cat`):
    the returned model is the corrected one, `top1` its accuracy and `top1_base` the method's.
    """
    t0 = time.perf_counter()
    model = loaded.model.to(device).eval()
    calib = calibration_tensor(bundle, config.calib, config.seed).to(device)
    loader = make_loader(bundle.test, limit=eval_limit)

    def on_eval(tag: str):
        return lambda i, n: emit(progress, ProgressEvent("evaluate", i + 1, n, message=tag))

    fp = evaluate(model, loader, device, on_eval("float accuracy"))
    qres = quantize(model, calib, config, progress)
    base_model, q_base = qres.model, None
    if cat is None:
        q = evaluate(qres.model, loader, device, on_eval("quantized accuracy"))
    else:
        q, q_base = attach_cat(model, qres, bundle, config, cat, loader, device, progress)
    emit(progress, ProgressEvent("errors", 0, 1, message="per-layer errors"))
    x_err = next(iter(make_loader(bundle.test, batch_size=error_samples)))[0].to(device)
    acc = [e.to_dict() for e in layer_errors(base_model, x_err, "accumulated")]
    alone = [e.to_dict() for e in layer_errors(base_model, x_err, "alone")]
    spec = config.quant
    result = RunResult(
        model=loaded.entry.name, method=run_label(config, cat), wbits=spec.wbits, abits=spec.abits,
        fp_top1=fp["top1"], fp_top5=fp["top5"], top1=q["top1"], top5=q["top5"],
        size_bits=model_size_bits(base_model) + cat_overhead_bits(qres.model),
        fp_size_bits=sum(p.numel() for p in model.parameters()) * 32,
        seconds=time.perf_counter() - t0, eval_samples=int(q["samples"]), layers=acc, layers_alone=alone,
        report=qres.report.to_dict(), config=config.to_dict(), data=bundle.describe(),
        timings=dict(qres.timings, method=qres.seconds), extras=qres.extras, device=str(device),
        top1_base=None if q_base is None else q_base["top1"],
    )  # fmt: skip
    if cat is not None:
        result.data.update(cat_fit=qres.extras["cat"]["fit_set"], eval=qres.extras["cat"]["eval_set"])
    return result, qres


def run_label(config: MethodConfig, cat: CATOptions | None = None) -> str:
    """The method name a run is recorded under ("pdquant", or "pdquant+cat" with CAT)."""
    return config.method if cat is None else f"{config.method}+cat"


def run_quantization(
    model: str,
    config: MethodConfig,
    data: str = "fmnist-sample",
    device: str = "auto",
    weights: str | None = None,
    store: RunStore | None = None,
    progress: ProgressFn | None = None,
    eval_limit: int | None = None,
    cat: CATOptions | None = None,
) -> tuple[RunResult, QuantResult]:
    """Load model and data by name, quantize, evaluate, and record the run in `store`.

    With `cat` (`ptq_core.cat.CATOptions`), CAT's correction follows the method.
    A run that fails is recorded as failed; earlier runs are never touched.
    """
    dev = resolve_device(device)
    store = store if store is not None else RunStore()
    spec = config.quant
    with store.run(model, run_label(config, cat), spec.wbits, spec.abits, config.to_dict()) as handle:
        loaded = load_model(model, weights, dev)
        bundle = load_data(data, loaded.transform)
        result, qres = quantize_and_evaluate(loaded, bundle, config, dev, progress, eval_limit, cat=cat)
        result.run_id = handle.run_id
        handle.finish(result.metrics(), result.layers, result.timings,
                      extras={"layers_alone": result.layers_alone, "report": result.report, "data": result.data,
                              "device": result.device, **result.extras})  # fmt: skip
    return result, qres

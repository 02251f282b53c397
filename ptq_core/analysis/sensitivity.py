"""One-layer-at-a-time sensitivity, and the accuracy split into weight-only and activation-only.

For each bit-width b the model is prepared with every layer at Wb/Ab (no first/last
exception, no overrides) and calibrated once with round-to-nearest; activation
ranges come from float activations, so they are exactly those the layer would get
if it were the only quantized one. Then one layer at a time is switched on:

- `sensitivity_proxy` (cheap): SQNR of the logits against the float logits on a few
  probe images; the relative error energy ``noise = 10^(-SQNR/10)`` is roughly additive
  over layers, which `mixed_precision` uses;
- `sensitivity_accuracy` (full): top-1 on a test loader, the drop against float.

`weight_act_split` evaluates one quantized model four ways: float, weights only,
activations only, both.

`sensitivity_accuracy(..., ray=RayOptions(...))` runs the same sweep as Ray tasks (a
bit-width and a share of the layers each), on this machine or a cluster, with the same rows.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..calibrate import iterate_batches
from ..distributed import RayOptions, TaskState, ray_map, ray_session
from ..errors import ConfigError
from ..methods import ProgressEvent, ProgressFn, QuantResult, emit, quantize
from ..methods.rtn import RTNConfig
from ..metrics import evaluate, sqnr_db
from ..modules import quant_layers, set_quant_state
from ..prepare import QuantSpec
from ..qscheme import FLOAT_BITS, check_bits

__all__ = [
    "DEFAULT_BITS",
    "VIEWS",
    "uniform_spec",
    "rtn_model",
    "logit_sqnr",
    "sensitivity_proxy",
    "sensitivity_accuracy",
    "weight_act_split",
    "parse_settings",
    "setting_label",
]

DEFAULT_BITS = (2, 4, 8)
# "only": only this layer quantized (its own damage); "all but": every layer quantized except this one
# (what the model gains back without it: AIMET's other view)
VIEWS = ("only", "all but")
Setting = tuple[int, int]  # (weight bits, activation bits); 32 keeps that side float


def uniform_spec(spec: QuantSpec, bits: int, abits: int | None = None) -> QuantSpec:
    """`spec` with every layer at W`bits`/A`abits` (A`bits` when None): no first/last exception, no overrides."""
    abits = bits if abits is None else abits
    check_bits(bits)
    check_bits(abits)
    if bits == FLOAT_BITS and abits == FLOAT_BITS:
        raise ConfigError("a sweep setting needs weights or activations quantized")
    return dataclasses.replace(spec, wbits=bits, abits=abits, first_last_bits=None, overrides={})


def setting_label(setting: Setting) -> str:
    """``W4A8``; ``A4`` for activations alone, ``W4`` for weights alone, ``4-bit`` for W4A4.

    >>> [setting_label(s) for s in [(4, 8), (32, 4), (2, 32), (4, 4)]]
    ['W4A8', 'A4', 'W2', '4-bit']
    """
    w, a = setting
    if w == a:
        return f"{w}-bit"
    if w == FLOAT_BITS:
        return f"A{a}"
    return f"W{w}" if a == FLOAT_BITS else f"W{w}A{a}"


def parse_settings(text: str) -> list[Setting]:
    """Sweep settings written as ``W4A8, W2A4, A4, W2, 4`` (A4: activation quantizers alone).

    >>> parse_settings("W4A8, A4, 2")
    [(4, 8), (32, 4), (2, 2)]
    """
    out: list[Setting] = []
    for item in text.replace(";", ",").split(","):
        t = item.strip().upper().replace(" ", "")
        if not t:
            continue
        w = a = None
        if t.isdigit():
            w = a = int(t)
        elif t.startswith("W") and "A" in t and t[1 : t.index("A")].isdigit() and t[t.index("A") + 1 :].isdigit():
            w, a = int(t[1 : t.index("A")]), int(t[t.index("A") + 1 :])
        elif t[:1] in "WA" and t[1:].isdigit():
            w, a = (int(t[1:]), FLOAT_BITS) if t[0] == "W" else (FLOAT_BITS, int(t[1:]))
        if w is None or a is None:
            raise ConfigError(f"sweep setting {item.strip()!r} must look like W4A8, A4, W2 or 4")
        uniform_spec(QuantSpec(), w, a)  # bit ranges
        out.append((w, a))
    return list(dict.fromkeys(out))


def rtn_model(
    model: nn.Module, calib: torch.Tensor, spec: QuantSpec, batch_size: int = 128, progress: ProgressFn | None = None
) -> QuantResult:
    """A round-to-nearest quantized copy of `model` under `spec` (quantization on)."""
    if len(calib) == 0:
        raise ConfigError("the calibration set is empty")
    config = RTNConfig(quant=spec, calib=len(calib), batch_size=batch_size)
    return quantize(model, calib, config, progress)


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model(xb).float() for xb in iterate_batches(x, batch_size)])


def logit_sqnr(ref: torch.Tensor, out: torch.Tensor) -> float:
    """SQNR (dB) of `out` against the reference logits `ref` (inf when equal)."""
    return sqnr_db(ref, float((out.double() - ref.double()).pow(2).sum()))


def _check_bits(bits: Sequence[int]) -> list[int]:
    if not bits:
        raise ConfigError("choose at least one bit-width")
    return sorted({check_bits(b, allow_float=False) for b in bits})


def _pick(names: list[str], layers: Sequence[str] | None) -> list[str]:
    if layers is None:
        return names
    unknown = [n for n in layers if n not in names]
    if unknown:
        raise ConfigError(f"not quantized layer(s): {', '.join(unknown[:5])}")
    return list(layers)


def _weight_count(layer: Any) -> int:
    return int(layer.weight.numel())


def _settings(bits: Sequence[int], settings: Sequence[Setting] | None) -> list[Setting]:
    if settings:
        for w, a in settings:
            uniform_spec(QuantSpec(), w, a)
        return list(dict.fromkeys((int(w), int(a)) for w, a in settings))
    return [(b, b) for b in _check_bits(bits)]


def _tick(progress: ProgressFn | None, stage: str, names: list[str], li: int, pairs: list, bi: int) -> None:
    """Progress of a per-layer pass: layer `li` of `names` under bit setting `bi` of `pairs`."""
    event = ProgressEvent(
        stage, li + 1, len(names), unit=setting_label(pairs[bi]), unit_index=bi, num_units=len(pairs), message=names[li]
    )
    emit(progress, event)


def _switch(qmodel: nn.Module, qlayers: dict[str, Any], name: str, view: str) -> None:
    """Quantize only `name` ("only") or every layer but `name` ("all but")."""
    if view not in VIEWS:
        raise ConfigError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    on = view == "only"
    set_quant_state(qmodel, not on, not on)
    qlayers[name].set_quant_state(on, on)


def _row(name: str, order: list[str], setting: Setting, view: str) -> dict[str, Any]:
    w, a = setting
    return {
        "layer": name,
        "index": order.index(name),
        "bits": w if w == a else None,
        "wbits": w,
        "abits": a,
        "setting": setting_label(setting),
        "view": view,
    }


def sensitivity_proxy(
    model: nn.Module,
    calib: torch.Tensor,
    probe: torch.Tensor,
    spec: QuantSpec,
    bits: Sequence[int] = DEFAULT_BITS,
    layers: Sequence[str] | None = None,
    progress: ProgressFn | None = None,
    batch_size: int = 128,
    settings: Sequence[Setting] | None = None,
    view: str = "only",
) -> list[dict[str, Any]]:
    """Logit SQNR with one layer at a time quantized (or left out) at each setting.

    Args:
        model: Float model; never modified.
        calib: Calibration images (ranges).
        probe: A few images on which the logits are compared.
        spec: Observers and granularity to use (its bit-widths are replaced).
        bits: Uniform bit-widths to try (W b / A b), when `settings` is not given.
        layers: Layers to sweep (default: all quantized layers).
        progress: Optional callback; may raise `RunCancelled`.
        batch_size: Forward batch size.
        settings: (weight bits, activation bits) pairs, e.g. ``[(4, 8), (32, 4)]`` (32: that side
            float, so ``(32, 4)`` sweeps the activation quantizers on their own).
        view: ``"only"`` (only this layer quantized) or ``"all but"`` (every layer but this one).

    Returns:
        Rows ``{layer, index, bits, wbits, abits, setting, view, sqnr_db, noise, weights}`` (index =
        execution order, bits = the bit-width when W = A else None, noise = relative error energy of
        the logits, weights = weight count).
    """
    pairs = _settings(bits, settings)
    rows: list[dict[str, Any]] = []
    for bi, (w, a) in enumerate(pairs):
        qmodel = rtn_model(model, calib, uniform_spec(spec, w, a), batch_size).model
        qlayers = dict(quant_layers(qmodel))
        order = list(qlayers)
        names = _pick(order, layers)
        set_quant_state(qmodel, False, False)
        ref = _logits(qmodel, probe, batch_size)
        for li, name in enumerate(names):
            _tick(progress, "sensitivity proxy", names, li, pairs, bi)
            _switch(qmodel, qlayers, name, view)
            s = logit_sqnr(ref, _logits(qmodel, probe, batch_size))
            rows.append(
                {
                    **_row(name, order, (w, a), view),
                    "sqnr_db": s,
                    "noise": 0.0 if math.isinf(s) else 10 ** (-s / 10),
                    "weights": _weight_count(qlayers[name]),
                }
            )
    return rows


def sensitivity_accuracy(
    model: nn.Module,
    calib: torch.Tensor,
    loader: DataLoader,
    spec: QuantSpec,
    bits: Sequence[int] = DEFAULT_BITS,
    layers: Sequence[str] | None = None,
    progress: ProgressFn | None = None,
    batch_size: int = 128,
    settings: Sequence[Setting] | None = None,
    view: str = "only",
    ray: RayOptions | None = None,
) -> list[dict[str, Any]]:
    """Top-1 with one layer at a time quantized (or left out) at each setting; the drop against float.

    Same sweep as `sensitivity_proxy`, measured by accuracy on `loader` (slow: one
    evaluation per layer and setting). Rows ``{layer, index, bits, wbits, abits, setting, view,
    top1, drop, fp_top1}``. With `ray`, the evaluations run as Ray tasks (see `_sensitivity_on_ray`;
    uniform bit-widths and the one-layer view only).
    """
    if ray is not None:
        if settings or view != "only":
            raise ConfigError("the sweep on Ray takes uniform bit-widths and the one-layer-only view")
        return _sensitivity_on_ray(model, calib, loader, spec, _check_bits(bits), layers, progress, batch_size, ray)
    pairs = _settings(bits, settings)
    device = next(model.parameters()).device
    rows: list[dict[str, Any]] = []
    fp_top1: float | None = None
    for bi, (w, a) in enumerate(pairs):
        qmodel = rtn_model(model, calib, uniform_spec(spec, w, a), batch_size).model
        qlayers = dict(quant_layers(qmodel))
        order = list(qlayers)
        names = _pick(order, layers)
        if fp_top1 is None:
            set_quant_state(qmodel, False, False)
            fp_top1 = evaluate(qmodel, loader, device)["top1"]
        for li, name in enumerate(names):
            _tick(progress, "sensitivity sweep", names, li, pairs, bi)
            _switch(qmodel, qlayers, name, view)
            top1 = evaluate(qmodel, loader, device)["top1"]
            rows.append({**_row(name, order, (w, a), view), "top1": top1, "drop": fp_top1 - top1, "fp_top1": fp_top1})
    return rows


def _sensitivity_on_ray(
    model: nn.Module,
    calib: torch.Tensor,
    loader: DataLoader,
    spec: QuantSpec,
    bits: list[int],
    layers: Sequence[str] | None,
    progress: ProgressFn | None,
    batch_size: int,
    options: RayOptions,
) -> list[dict[str, Any]]:
    """The accuracy sweep as Ray tasks: each bit-width's layers in `chunks` shares, one task each.

    Every task quantizes its own RTN copy (deterministic: the same ranges as one process) and
    evaluates its layers; the first also measures the float top-1. Rows come back in the
    order of the one-process sweep.
    """
    order = [n for n, _ in quant_layers(rtn_model(model, calib[:2], uniform_spec(spec, bits[0])).model)]
    names = _pick(order, layers)
    chunks = max(1, min(len(names), options.workers or 2))
    shares = [names[i::chunks] for i in range(chunks)]
    results: dict[tuple[int, int], dict[str, Any]] = {}

    def on_state(state: TaskState) -> None:
        emit(
            progress,
            ProgressEvent("sensitivity sweep", state.finished, state.total, message=f"on Ray: {state.running} running"),
        )

    with ray_session(options) as ray:
        cpu_model = model if next(model.parameters()).device.type == "cpu" else copy.deepcopy(model).cpu()
        refs = [ray.put(x) for x in (cpu_model, calib.cpu(), loader.dataset)]
        jobs = [(bi, ci) for bi in range(len(bits)) for ci in range(chunks)]
        args = [
            (*refs, loader.batch_size, spec.to_dict(), bits[bi], shares[ci], bi == ci == 0, batch_size)
            for bi, ci in jobs
        ]
        ray_map(_sensitivity_task, args, options, lambda i, r: results.__setitem__(jobs[i], r), on_state)
    failed = [r for r in results.values() if isinstance(r, BaseException)]
    if failed:
        raise ConfigError(f"a sensitivity task failed on Ray: {failed[0]}")
    fp_top1 = results[(0, 0)]["fp_top1"]
    rows = [
        _row(row["layer"], order, (row["bits"], row["bits"]), "only")
        | {"top1": row["top1"], "drop": fp_top1 - row["top1"], "fp_top1": fp_top1}
        for r in results.values()
        for row in r["rows"]
    ]  # same rows as one process
    return sorted(rows, key=lambda r: (r["bits"], r["index"]))


def _sensitivity_task(
    model: nn.Module,
    calib: torch.Tensor,
    dataset: Any,
    eval_batch: int,
    spec: dict[str, Any],
    bits: int,
    names: list[str],
    with_fp: bool,
    batch_size: int,
) -> dict[str, Any]:
    """One Ray task of `_sensitivity_on_ray`: `names` at `bits`, one at a time."""
    loader = DataLoader(dataset, batch_size=eval_batch, shuffle=False)
    qmodel = rtn_model(model, calib, uniform_spec(QuantSpec.from_dict(spec), bits), batch_size).model
    qlayers = dict(quant_layers(qmodel))
    order = list(qlayers)
    out: dict[str, Any] = {"rows": []}
    if with_fp:
        set_quant_state(qmodel, False, False)
        out["fp_top1"] = evaluate(qmodel, loader)["top1"]
    for name in names:
        set_quant_state(qmodel, False, False)
        qlayers[name].set_quant_state(True, True)
        out["rows"].append(
            {"layer": name, "index": order.index(name), "bits": bits, "top1": evaluate(qmodel, loader)["top1"]}
        )
    return out


def weight_act_split(
    model: nn.Module,
    calib: torch.Tensor,
    loader: DataLoader,
    spec: QuantSpec,
    progress: ProgressFn | None = None,
    batch_size: int = 128,
) -> dict[str, dict[str, float]]:
    """Accuracy of the RTN model under `spec` four ways: float, weights only, activations only, both.

    Returns:
        ``{"float" | "weights only" | "activations only" | "both": {"top1", "top5"}}``.
    """
    if spec.wbits == FLOAT_BITS and spec.abits == FLOAT_BITS:
        raise ConfigError("both weights and activations are float: nothing to split")
    qmodel = rtn_model(model, calib, spec, batch_size).model
    device = next(model.parameters()).device
    out = {}
    for i, (label, w, a) in enumerate(
        (
            ("float", False, False),
            ("weights only", True, False),
            ("activations only", False, True),
            ("both", True, True),
        )
    ):
        emit(progress, ProgressEvent("weight/activation split", i + 1, 4, message=label))
        set_quant_state(qmodel, w, a)
        res = evaluate(qmodel, loader, device)
        out[label] = {"top1": res["top1"], "top5": res["top5"]}
    return out

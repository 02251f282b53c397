"""A shareable report of one stored run: one self-contained HTML file.

`build_report(record)` rebuilds the run by re-running its stored description
(`RunSpec.from_dict(record.spec)`; same seed, same model), checks that the rebuilt
top-1 equals the stored one, and gathers: the spec, accuracy, per-layer errors (alone and
accumulated), the diagnosis with its statistics (and, when asked, the measured culprits),
every quantized layer's scales and zero points (`quantizer_params`), and histograms of
each layer's weights and input activations with the quantization grid. `render_html`
writes it as HTML with inline CSS and inline SVG charts: no script, no font, no network.
"""

from __future__ import annotations

import html
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .analysis import culprits as culprits_mod
from .analysis import diagnosis
from .analysis.ranges import capture_inputs
from .data import calibration_tensor, load_data, make_loader
from .errors import PTQError
from .methods import ProgressFn
from .models import load_model, resolve_device
from .modules import quant_layers
from .pipeline import quantize_and_evaluate
from .quantizer import AffineQuantizer, Quantizer
from .spec import RunSpec
from .store import RunRecord, RunStore, to_jsonable
from .svg import svg_histogram, svg_lines

__all__ = ["quantizer_params", "build_report", "render_html", "write_report", "HIST_BINS"]

HIST_BINS = 60
_PROBE = 64  # test images for the activation histograms and the diagnosis
_STATS = 128  # calibration images of the input-channel statistics (as on the Outlier channels page)


def _grid(fq: Quantizer) -> dict[str, Any] | None:
    if fq.scheme.is_float or not fq.is_calibrated:
        return None
    if not isinstance(fq, AffineQuantizer):  # e.g. multipoint: no single grid to show
        return {"bits": fq.bits, "form": type(fq).__name__, "per_channel": False}
    scale = fq.scale.detach().flatten().cpu().double().numpy()
    zp = fq.zero_point.detach().flatten().cpu().double().numpy()
    return {
        "bits": fq.bits,
        "qmin": int(fq.scheme.qmin),
        "qmax": int(fq.scheme.qmax),
        "signed": bool(fq.scheme.signed),
        "per_channel": bool(fq.scheme.per_channel),
        "observer": fq.observer_name,
        "scale": scale.tolist(),
        "zero_point": zp.tolist(),
    }


def quantizer_params(qmodel: nn.Module) -> list[dict[str, Any]]:
    """Every quantized layer's weight and input grids as the model uses them: bits, integer range,
    scale(s) and zero point(s) (one per output channel for per-channel weights); None for a float side."""
    return [
        {"layer": name, "weight": _grid(layer.weight_quantizer), "input": _grid(layer.act_quantizer)}
        for name, layer in quant_layers(qmodel)
    ]


def _levels(grid: dict[str, Any], channel: int) -> list[float]:
    s, z = grid["scale"][channel], grid["zero_point"][channel]
    return [s * (q - z) for q in range(grid["qmin"], grid["qmax"] + 1)]


def _histogram(values: torch.Tensor, grid: dict[str, Any] | None, channel: int = 0) -> dict[str, Any]:
    v = values.detach().flatten().float().cpu().numpy()
    levels = _levels(grid, channel) if grid and "scale" in grid else []
    lo, hi = float(min(v.min(), *levels[:1])), float(max(v.max(), *levels[-1:]))
    counts, edges = np.histogram(v, bins=HIST_BINS, range=(lo, hi if hi > lo else lo + 1e-6))
    return {"counts": counts.tolist(), "edges": edges.tolist(), "levels": levels, "channel": channel}


def _widest(grid: dict[str, Any] | None) -> int:
    if not grid or not grid["per_channel"]:
        return 0
    return int(np.argmax(grid["scale"]))


def _histograms(qmodel: nn.Module, float_model: nn.Module, probe: torch.Tensor) -> dict[str, dict[str, Any]]:
    layers = dict(quant_layers(qmodel))
    inputs = capture_inputs(float_model, probe, list(layers))
    out = {}
    for name, layer in layers.items():
        wg, ag = _grid(layer.weight_quantizer), _grid(layer.act_quantizer)
        c = _widest(wg)
        w = layer.weight[c] if wg and wg["per_channel"] else layer.weight
        out[name] = {"weight": _histogram(w, wg, c), "input": _histogram(inputs[name], ag)}
    return out


def _spec_of(record: RunRecord) -> RunSpec:
    if not record.spec:
        raise PTQError(f"run {record.run_id} was stored before runs kept their description: it cannot be rebuilt")
    return RunSpec.from_dict(record.spec)


def build_report(
    record: RunRecord,
    progress: ProgressFn | None = None,
    culprit_images: int | None = None,
    resources: tuple[Any, Any] | None = None,
) -> dict[str, Any]:
    """Rebuild `record`'s run from its spec and gather everything the report shows.

    Args:
        record: A finished stored run.
        progress: Receives the rebuild's `ProgressEvent`s; may raise `RunCancelled`.
        culprit_images: Also measure the culprits on this many test images (None: skip; it costs
            one evaluation per layer).
        resources: The run's already loaded (model, data bundle); loaded from the spec when None.
    """
    if record.status != "done":
        raise PTQError(f"run {record.run_id} is {record.status}: only finished runs have a report")
    spec = _spec_of(record)
    dev = resolve_device(spec.device)
    if resources is None:
        loaded = load_model(spec.model, spec.weights, dev)
        resources = loaded, load_data(spec.data, loaded.transform)
    loaded, bundle = resources
    result, qres = quantize_and_evaluate(spec, loaded, bundle, dev, progress)
    stored, rebuilt = record.metrics.get("top1"), result.metrics["top1"]
    probe = next(iter(make_loader(bundle.test, batch_size=_PROBE)))[0].to(dev)
    stats = calibration_tensor(bundle, _STATS, spec.seed).to(dev)
    diag = diagnosis.diagnose(qres.model, qres.report, loaded.model, probe, stats_images=stats, model_name=spec.model)
    measured = None
    if culprit_images:
        calib = calibration_tensor(bundle, spec.method.calib, spec.seed).to(dev)
        measured = culprits_mod.measured_culprits(
            loaded.model, calib, make_loader(bundle.test, limit=culprit_images), spec.method.quant, quantized=qres
        )
    return to_jsonable(
        {
            "run_id": record.run_id,
            "title": spec.title(),
            "label": record.bits_label,
            "spec": spec.to_dict(),
            "created": record.created,
            "metrics": record.metrics,
            "rebuilt_top1": rebuilt,
            "stored_top1": stored,
            "reproduced": isinstance(stored, (int, float)) and math.isclose(rebuilt, stored, abs_tol=1e-9),
            "layers": record.layers,
            "layers_alone": record.extras.get("layers_alone", []),
            "diagnosis": diag,
            "culprits": measured,
            "encodings": quantizer_params(qres.model),
            "histograms": _histograms(qres.model, loaded.model, probe),
            "overfit": record.extras.get("overfit"),
            "env": record.env,
        }
    )


# -- HTML ------------------------------------------------------------------------------------------

_CSS = """body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1100px;
color:#222;padding:0 16px}h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f4f4f4}.ok{color:#1a7f37}.bad{color:#c62828}code,pre{font:12px monospace}
pre{background:#f7f7f7;padding:8px;overflow:auto}.layer{display:inline-block;margin:4px 12px 12px 0}
svg text{font:10px sans-serif}details{margin:6px 0}"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _num(x: Any, fmt: str = ".2f") -> str:
    return format(x, fmt) if isinstance(x, (int, float)) and math.isfinite(x) else "n/a"


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _summary(r: dict[str, Any]) -> str:
    m = r["metrics"]
    repro = (
        f'<span class="ok">reproduced: the rebuilt top-1 {_num(r["rebuilt_top1"])}% equals the stored one</span>'
        if r["reproduced"]
        else f'<span class="bad">not reproduced: rebuilt top-1 {_num(r["rebuilt_top1"])}% '
        f"vs stored {_num(r['stored_top1'])}%</span>"
    )
    rows = [
        {"": "float", "top-1 %": _num(m.get("fp_top1")), "top-5 %": _num(m.get("fp_top5"))},
        {"": f"quantized ({r['label']})", "top-1 %": _num(m.get("top1")), "top-5 %": _num(m.get("top5"))},
    ]
    return (
        f"<p>{repro}. Evaluated on {_e(m.get('eval_samples'))} test images, calibrated on "
        f"{_e(m.get('calib_samples'))} images.</p>" + _table(rows, ["", "top-1 %", "top-5 %"])
    )


def _errors(r: dict[str, Any]) -> str:
    acc = {e["name"]: e for e in r["layers"]}
    alone = {e["name"]: e for e in r["layers_alone"]}
    names = list(acc) or list(alone)
    series = {
        "accumulated (all layers quantized)": [acc.get(n, {}).get("sqnr_db") for n in names],
        "alone (only this layer quantized)": [alone.get(n, {}).get("sqnr_db") for n in names],
    }
    wa = {n: acc.get(n, alone.get(n, {})) for n in names}
    rows = [
        {
            "layer": n,
            "W/A": f"{wa[n].get('wbits')}/{wa[n].get('abits')}",
            "SQNR alone dB": _num(alone.get(n, {}).get("sqnr_db")),
            "SQNR accumulated dB": _num(acc.get(n, {}).get("sqnr_db")),
            "MSE accumulated": _num(acc.get(n, {}).get("mse"), ".3e"),
        }
        for n in names
    ]
    return (
        svg_lines(series, names, "Output SQNR per layer (dB)")
        + "<details><summary>table</summary>"
        + _table(rows, ["layer", "W/A", "SQNR alone dB", "SQNR accumulated dB", "MSE accumulated"])
        + "</details>"
    )


def _diagnosis(r: dict[str, Any]) -> str:
    d = r["diagnosis"]
    out = f"<p>{_e(d['verdict']['text'])}</p>" if d["verdict"]["floor"] else ""
    out += (
        f"<p>Flag threshold {_num(d['threshold_db'], '.1f')} dB (the lower of the absolute threshold and the "
        f"median layer minus the spread). Kept at 8 bits by the policy: {_e(', '.join(d['kept']) or 'none')}.</p>"
    )
    rows = [
        {
            "layer": f["layer"],
            "status": f["severity"],
            "cause": f["cause"],
            "evidence": f["evidence"],
            "statistic": json.dumps(f["statistic"]),
            "fix": _fix(f["action"]),
        }
        for f in d["findings"]
    ]
    out += _table(rows, ["layer", "status", "cause", "statistic", "evidence", "fix"]) if rows else "<p>No finding.</p>"
    c = r.get("culprits")
    if c:
        rows = [
            {"layer": x["layer"], "side": x["side"], "bits": x["bits"], "recovered pts": _num(x["recovered"])}
            for x in c["candidates"][:10]
        ]
        out += (
            f"<h3>Measured culprits</h3><p>Quantized top-1 {_num(c['top1'])}% vs float {_num(c['fp_top1'])}% on "
            f"{c['samples']} test images; weights only lose {_num(c['split']['weights'])} pts, activations only "
            f"{_num(c['split']['activations'])} pts. Greedy set: {_e(c['overrides'] or 'none')} recovers "
            f"{_num(c['recovered'])} pts.</p>"
        )
        out += _table(rows, ["layer", "side", "bits", "recovered pts"])
    return out


def _fix(action: dict[str, Any] | None) -> str:
    if action is None:
        return "no quantizer setting to change"
    if action["kind"] == "override":
        return f"override {action['text']}"
    return ", ".join(f"{k} = {v}" for k, v in action["changes"].items())


def _overfit(r: dict[str, Any]) -> str:
    o = r.get("overfit")
    if not o:
        return "<p>Not a reconstruction run: no overfitting check.</p>"
    flag = '<span class="bad">diverge: overfitting</span>' if o["flagged"] else '<span class="ok">agree</span>'
    rows = [
        {
            "images": f"{s} ({o[s]['images']})",
            "float top-1": _num(o[s]["fp_top1"]),
            "quantized top-1": _num(o[s]["top1"]),
            "drop": _num(o[s]["drop"]),
        }
        for s in ("calib", "test")
    ]
    return (
        f"<p>Calibration vs held-out test images: {flag} (gap {_num(o['gap'])} pts, noise ±{_num(o['noise'])}); "
        f"layers better on the calibration images: {_e(', '.join(o['flagged_layers']) or 'none')}.</p>"
        + _table(rows, ["images", "float top-1", "quantized top-1", "drop"])
    )


def _grid_text(g: dict[str, Any] | None) -> str:
    if g is None:
        return "float"
    if "scale" not in g:
        return f"{g['bits']}-bit {g['form']}"
    s, z = g["scale"], g["zero_point"]
    head = f"{g['bits']}-bit [{g['qmin']}, {g['qmax']}] {g['observer']}"
    if len(s) == 1:
        return f"{head}, scale {s[0]:.6g}, zero point {z[0]:.0f}"
    return f"{head}, {len(s)} channels, scale {min(s):.4g}…{max(s):.4g}, zero points {min(z):.0f}…{max(z):.0f}"


def _layers(r: dict[str, Any]) -> str:
    out = []
    for enc in r["encodings"]:
        name, hist = enc["layer"], r["histograms"][enc["layer"]]
        w_title = (
            f"weights (channel {hist['weight']['channel']})" if (enc["weight"] or {}).get("per_channel") else "weights"
        )
        full = json.dumps({"weight": enc["weight"], "input": enc["input"]})
        out.append(
            f"<details open><summary><code>{_e(name)}</code>: weights {_e(_grid_text(enc['weight']))}; "
            f"input {_e(_grid_text(enc['input']))}</summary><div class='layer'>"
            f"{svg_histogram(hist['weight'], w_title)}</div><div class='layer'>"
            f"{svg_histogram(hist['input'], 'input activations')}</div><details><summary>all scales and "
            f"zero points</summary><pre>{_e(full)}</pre></details></details>"
        )
    return "".join(out)


def render_html(r: dict[str, Any]) -> str:
    """The report as one self-contained HTML page (inline CSS and SVG; no script, font or link to fetch)."""
    when = datetime.fromtimestamp(r["created"], timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "".join(
        [
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
            f"<title>{_e(r['title'])}: report</title><style>{_CSS}</style></head><body>",
            f"<h1>{_e(r['title'])} · {_e(r['label'])}</h1><p>Run <code>{_e(r['run_id'])}</code>, {when}.</p>",
            "<h2>Accuracy</h2>",
            _summary(r),
            "<h2>Per-layer error</h2>",
            _errors(r),
            "<h2>Diagnosis</h2>",
            _diagnosis(r),
            "<h2>Overfitting check</h2>",
            _overfit(r),
            "<h2>Quantized layers: scales, zero points, histograms with the grid</h2>",
            _layers(r),
            "<h2>Run description</h2><p>Re-run with <code>python -m ptq_core quantize --config spec.json</code>.</p>",
            f"<pre>{_e(json.dumps(r['spec'], indent=2))}</pre>",
            f"<h2>Environment</h2><pre>{_e(json.dumps(r['env'], indent=2))}</pre></body></html>",
        ]
    )


def write_report(
    run_id: str,
    path: str | Path,
    store: RunStore | None = None,
    progress: ProgressFn | None = None,
    culprit_images: int | None = None,
) -> dict[str, Any]:
    """Build the report of stored run `run_id` and write it to `path`; returns the report's data."""
    store = store if store is not None else RunStore()
    data = build_report(store.get(run_id), progress, culprit_images)
    Path(path).write_text(render_html(data), encoding="utf-8")
    return data

"""Automatic diagnosis: which layers quantize badly, the likely cause, and the fix to try.

A layer is *flagged* when its output SQNR with only that layer quantized is below a
threshold. Every layer is then checked for these causes (numbers as evidence):

- outlier channels: a channel whose largest magnitude has a robust z-score
  (`ranges.zscores`, median/MAD) above `z` among the channels of the layer's input
  (per-tensor activation grid), or of its weight when the weight grid is per-tensor;
- dead or near-constant channels in the input or the weight;
- range mismatch at a residual add feeding the layer: the two summed branches
  differ in magnitude by more than `residual_ratio` (found by tracing with torch.fx;
  skipped when the model cannot be traced);
- negative activations under an unsigned grid: the grid's lowest level is >= 0 while
  a share of the inputs above `negative_share` is negative (they all become 0);
- a low-bit final layer (below 8 bits), which writes straight into the logits.

A flagged layer without a known cause gets "no single cause found"; a layer with a
cause but a good SQNR is listed as "watch".
"""

from __future__ import annotations

import copy
import math
import operator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..calibrate import iterate_batches
from ..errors import ConfigError
from ..metrics import layer_errors
from ..modules import QuantLayer, quant_layers, set_quant_state
from ..prepare import PrepareReport
from .ranges import DEAD_EPS, input_channel_axis, weight_channel_stats, zscores

__all__ = ["DiagnosisConfig", "Finding", "FIXES", "diagnose", "input_stats", "residual_mismatches", "layer_causes"]

FIXES = {
    "outlier channels (activations)": "switch the activation observer to mse or percentile (clips the few "
    "outliers), or keep this layer at 8 bits",
    "outlier channels (weights)": "go per-channel for the weights",
    "dead or near-constant channels": "go per-channel for the weights and use an mse observer; the dead "
    "channels can be pruned",
    "range mismatch at a residual add": "keep this layer at 8 bits, or try a stronger (block-reconstruction) "
    "method such as BRECQ or QDrop",
    "negative activations under an unsigned quantizer": "use an asymmetric or signed (symmetric) activation "
    "grid for this layer, or a min-max/percentile observer that keeps the negative range",
    "low-bit final layer": "keep the final layer at 8 bits (First/last layer: 8-bit)",
    "no single cause found": "try a stronger method (AdaRound, BRECQ, QDrop) or keep this layer at 8 bits",
}  # fmt: skip


@dataclass
class DiagnosisConfig:
    """Thresholds of the diagnosis.

    Attributes:
        sqnr_db: Layers whose alone-SQNR (dB) is below this are flagged.
        z: z-score above which a channel counts as an outlier.
        residual_ratio: Branch magnitude ratio above which a residual add is mismatched.
        negative_share: Share of negative inputs above which an unsigned grid is a problem.
    """

    sqnr_db: float = 20.0
    z: float = 3.5
    residual_ratio: float = 8.0
    negative_share: float = 0.01

    def __post_init__(self) -> None:
        for name in ("sqnr_db", "z", "residual_ratio", "negative_share"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"diagnosis threshold {name} must be a finite number, got {v!r}")
        if self.z <= 0 or self.residual_ratio <= 1 or not 0 <= self.negative_share < 1:
            raise ConfigError("diagnosis thresholds: z > 0, residual_ratio > 1, 0 <= negative_share < 1")


@dataclass
class Finding:
    """One cause found at one layer."""

    layer: str
    severity: str  # "flagged" (error over threshold) or "watch"
    cause: str
    evidence: str
    fix: str
    sqnr_alone: float
    sqnr_accumulated: float
    wbits: int
    abits: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@torch.no_grad()
def input_stats(qmodel: nn.Module, images: torch.Tensor, batch_size: int = 64) -> dict[str, dict[str, Any]]:
    """Per quantized layer, statistics of its float input: per-channel |max| and std, share of negatives."""
    model = copy.deepcopy(qmodel).eval()
    set_quant_state(model, False, False)
    acc: dict[str, dict[str, Any]] = {}

    def hook(name: str, module: nn.Module):
        def fn(_m: nn.Module, inp: tuple) -> None:
            x = inp[0].detach().float()
            rows = x.movedim(input_channel_axis(module, x), 0).reshape(x.shape[input_channel_axis(module, x)], -1)
            a = acc.setdefault(name, {"absmax": torch.zeros(rows.shape[0]), "s1": torch.zeros(rows.shape[0],
                               dtype=torch.float64), "s2": torch.zeros(rows.shape[0], dtype=torch.float64),
                               "n": 0, "neg": 0, "total": 0})  # fmt: skip
            if a["absmax"].shape[0] != rows.shape[0]:
                return  # a module called twice with different shapes: keep the first
            a["absmax"] = torch.maximum(a["absmax"], rows.abs().amax(1).cpu())
            a["s1"] += rows.double().sum(1).cpu()
            a["s2"] += rows.double().square().sum(1).cpu()
            a["n"] += rows.shape[1]
            a["neg"] += int((x < 0).sum())
            a["total"] += x.numel()

        return fn

    handles = [m.register_forward_pre_hook(hook(n, m)) for n, m in quant_layers(model)]
    try:
        for xb in iterate_batches(images, batch_size):
            model(xb)
    finally:
        for h in handles:
            h.remove()
    out = {}
    for name, a in acc.items():
        mean = a["s1"] / max(a["n"], 1)
        std = (a["s2"] / max(a["n"], 1) - mean.square()).clamp(min=0).sqrt()
        out[name] = {"absmax": a["absmax"].numpy(), "std": std.float().numpy(),
                     "negative_share": a["neg"] / max(a["total"], 1)}  # fmt: skip
    return out


_ADDS = {operator.add, operator.iadd, torch.add}


def _is_add(node: Any) -> bool:
    return (node.op == "call_function" and node.target in _ADDS) or (
        node.op == "call_method" and node.target in ("add", "add_"))  # fmt: skip


def _consumers(node: Any, quantizable: set[str]) -> list[str]:
    """Quantizable modules reached from `node` through non-quantizable nodes."""
    found, seen, todo = [], set(), list(node.users)
    while todo:
        n = todo.pop(0)
        if n in seen:
            continue
        seen.add(n)
        if n.op == "call_module" and n.target in quantizable:
            found.append(n.target)
        else:
            todo += list(n.users)
    return found


@torch.no_grad()
def residual_mismatches(model: nn.Module, images: torch.Tensor) -> list[dict[str, Any]] | None:
    """Every tensor+tensor add of the float model: its branch magnitudes and the layers it feeds.

    Returns None when the model cannot be traced with torch.fx.
    """
    import torch.fx as fx

    try:
        gm = fx.symbolic_trace(copy.deepcopy(model).eval())
    except Exception:  # noqa: BLE001 - tracing is best effort; the rule is then skipped
        return None
    quantizable = {n for n, m in gm.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    seen: dict[Any, list[float]] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            if _is_add(n):
                args = [self.env[a] if isinstance(a, fx.Node) else a for a in n.args[:2]]
                if len(args) == 2 and all(isinstance(a, torch.Tensor) and a.is_floating_point() for a in args):
                    mags = [float(a.detach().abs().max()) for a in args]
                    old = seen.get(n, [0.0, 0.0])
                    seen[n] = [max(o, m) for o, m in zip(old, mags, strict=True)]
            return super().run_node(n)

    try:
        for xb in iterate_batches(images, 64):
            Recorder(gm).run(xb)
    except Exception:  # noqa: BLE001
        return None
    out = []
    for node, (a, b) in seen.items():
        small, big = sorted((a, b))
        ratio = math.inf if small == 0 and big > 0 else (big / small if small > 0 else 1.0)
        out.append({"add": node.name, "branches": (a, b), "ratio": ratio, "feeds": _consumers(node, quantizable)})
    return out


def _lowest_level(layer: QuantLayer) -> float | None:
    fq = layer.act_quantizer
    if fq.scheme.is_float or not fq.is_calibrated:
        return None
    return float(((fq.scheme.qmin - fq.zero_point.flatten()[0]) * fq.scale.flatten()[0]).item())


def layer_causes(name: str, layer: QuantLayer, role: str, stats: dict[str, Any] | None,
                 residual: list[dict[str, Any]], cfg: DiagnosisConfig) -> list[tuple[str, str]]:  # fmt: skip
    """(cause, evidence) pairs found at one layer."""
    causes: list[tuple[str, str]] = []
    if stats is not None and not layer.act_quantizer.scheme.is_float:
        z = zscores(stats["absmax"])
        if z.size > 1 and z.max() > cfg.z:
            top = np.argsort(-z)[:3]
            causes.append(("outlier channels (activations)", f"input channel(s) {', '.join(map(str, top))} reach "
                           f"|x| = {stats['absmax'][top[0]]:.3g} (z = {z[top[0]]:.1f}) while the median channel "
                           f"reaches {np.median(stats['absmax']):.3g}"))  # fmt: skip
    w = weight_channel_stats(layer.weight)
    wq = layer.weight_quantizer
    if not wq.scheme.is_float and not wq.scheme.per_channel and w.z.size > 1 and w.z.max() > cfg.z:
        c = int(np.argmax(w.z))
        causes.append(("outlier channels (weights)", f"output channel {c} reaches |w| = {w.absmax[c]:.3g} "
                       f"(z = {w.z[c]:.1f}) under a per-tensor weight grid"))  # fmt: skip
    dead_in = []
    const_in: list[int] = []
    if stats is not None:
        dead_in = [int(i) for i in np.nonzero(stats["absmax"] <= DEAD_EPS)[0]]
        live = stats["std"][stats["absmax"] > DEAD_EPS]
        ref = float(np.median(live)) if live.size else 0.0
        if ref > 0:
            const_in = [int(i) for i in np.nonzero((stats["std"] <= 1e-3 * ref) & (stats["absmax"] > DEAD_EPS))[0]]
    if dead_in or const_in or w.dead:
        parts = []
        if dead_in:
            parts.append(f"{len(dead_in)} dead input channel(s) (e.g. {dead_in[:5]})")
        if const_in:
            parts.append(f"{len(const_in)} near-constant input channel(s) (e.g. {const_in[:5]})")
        if w.dead:
            parts.append(f"{len(w.dead)} all-zero weight channel(s) (e.g. {w.dead[:5]})")
        causes.append(("dead or near-constant channels", "; ".join(parts)))
    for r in residual:
        if name in r["feeds"] and r["ratio"] > cfg.residual_ratio and not layer.act_quantizer.scheme.is_float:
            a, b = r["branches"]
            causes.append(("range mismatch at a residual add", f"add `{r['add']}` sums branches reaching "
                           f"{a:.3g} and {b:.3g} ({r['ratio']:.1f}x)"))  # fmt: skip
    lowest = _lowest_level(layer)
    if stats is not None and lowest is not None and lowest >= 0 and stats["negative_share"] > cfg.negative_share:
        causes.append(("negative activations under an unsigned quantizer", f"{100 * stats['negative_share']:.1f}% "
                       f"of the inputs are negative but the grid starts at {lowest:.3g}"))  # fmt: skip
    if role == "last" and min(layer.wbits, layer.abits) < 8:
        causes.append(("low-bit final layer", f"the final layer runs at W{layer.wbits}/A{layer.abits}"))
    return causes


def diagnose(qmodel: nn.Module, report: PrepareReport, float_model: nn.Module, images: torch.Tensor,
             config: DiagnosisConfig | None = None) -> dict[str, Any]:  # fmt: skip
    """Flag layers over the error threshold and name likely causes with the fix to try.

    Args:
        qmodel: A calibrated prepared model (e.g. RTN); copied, never changed.
        report: Its `PrepareReport` (for the final layer's role).
        float_model: The original float model (traced for residual adds).
        images: A few probe images on the model's device.
        config: Thresholds.

    Returns:
        ``{"findings": [Finding dict], "layers": [per-layer rows], "residual_checked": bool}``.
    """
    cfg = config or DiagnosisConfig()
    model = copy.deepcopy(qmodel).eval()
    alone = {e.name: e for e in layer_errors(model, images, "alone")}
    acc = {e.name: e for e in layer_errors(model, images, "accumulated")}
    stats = input_stats(model, images)
    residual = residual_mismatches(float_model, images)
    roles = {info.name: info.role for info in report.layers}
    findings, rows = [], []
    for name, layer in quant_layers(model):
        a, c = alone.get(name), acc.get(name)
        s_alone = a.sqnr_db if a else math.nan
        s_acc = c.sqnr_db if c else math.nan
        flagged = s_alone < cfg.sqnr_db
        causes = layer_causes(name, layer, roles.get(name, ""), stats.get(name), residual or [], cfg)
        if flagged and not causes:
            causes = [("no single cause found", f"output SQNR {s_alone:.1f} dB with only this layer quantized")]
        for cause, evidence in causes:
            findings.append(Finding(name, "flagged" if flagged else "watch", cause, evidence, FIXES[cause], s_alone,
                                    s_acc, layer.wbits, layer.abits))  # fmt: skip
        rows.append({"layer": name, "wbits": layer.wbits, "abits": layer.abits, "sqnr_alone": s_alone,
                     "sqnr_accumulated": s_acc, "flagged": flagged, "causes": len(causes)})  # fmt: skip
    findings.sort(key=lambda f: (f.severity != "flagged", f.sqnr_alone))
    return {"findings": [f.to_dict() for f in findings], "layers": rows, "residual_checked": residual is not None}

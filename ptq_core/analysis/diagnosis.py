"""Automatic diagnosis: which layers stand out, the cause measured at each, and a fix not already in effect.

Thresholds are relative to the model's own spread: a layer is *flagged* when its
output SQNR with only that layer quantized is below ``min(sqnr_db, median - spread_db)``
(the median over the layers the policy does not keep at 8 bits). When the median layer
itself is below `sqnr_db`, every layer is near the floor of its bit-width: the verdict
says so and points to a reconstruction method instead of flagging twenty layers.
Layers the first/last policy keeps at 8 bits are listed as kept, never flagged (a cause
found there is listed as *watch*).

Every layer is checked for these causes, one statistic each:

- outlier channels: the robust z-score (`ranges.zscores`) of a channel's largest
  magnitude among the layer's input channels, measured by `ranges.input_channel_stats`
  on the float model (the Outlier channels page reads the same function on the same
  images), or among the weight's output channels when the weight grid is per-tensor;
- dead or near-constant channels in the input or the weight (`ChannelStats.dead`,
  `ChannelStats.constant`);
- range mismatch at a residual add feeding the layer: the two summed branches differ
  in magnitude by more than `residual_ratio` (torch.fx; skipped when not traceable);
- negative activations under an unsigned grid: the grid's lowest level is >= 0 while
  `ChannelStats.negative_share` of the inputs is above `negative_share`;
- a low-bit final layer (below 8 bits).

Each finding carries a fix *action* (settings to change, or an override line) chosen
so that it is not already in effect for that layer (`fix_in_effect` checks it).
"""

from __future__ import annotations

import copy
import math
import operator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..calibrate import iterate_batches
from ..errors import ConfigError
from ..metrics import layer_errors
from ..modules import QuantLayer, quant_layers
from ..prepare import PrepareReport
from .fixes import (
    RECONSTRUCTION_METHODS,
    REPAIR_BITS,
    apply_fix,
    fix_in_effect,
    override_action,
    reconstruction_measurement,
    settings_action,
)
from .ranges import ChannelStats, input_channel_stats, weight_channel_stats

__all__ = [
    "DiagnosisConfig",
    "Finding",
    "FIXES",
    "CAUSES",
    "diagnose",
    "residual_mismatches",
    "layer_causes",
    "fix_in_effect",
    "floor_verdict",
    "apply_fix",
    "reconstruction_measurement",
    "RECONSTRUCTION_METHODS",
]

CAUSES = (
    "outlier channels (activations)",
    "outlier channels (weights)",
    "dead or near-constant channels",
    "range mismatch at a residual add",
    "negative activations under an unsigned quantizer",
    "low-bit final layer",
    "no single cause found",
)
FIXES = {
    "outlier channels (activations)": "a clipping observer (percentile) for the activations, or, when one is "
    "already in use, this layer's input at 8 bits",
    "outlier channels (weights)": "per-channel weight grids",
    "dead or near-constant channels": "per-channel weight grids when the weights are per-tensor; otherwise no "
    "quantizer setting to change (the channels can be pruned)",
    "range mismatch at a residual add": "this layer's input at 8 bits, or a block-reconstruction method (BRECQ, QDrop)",
    "negative activations under an unsigned quantizer": "a signed (symmetric) activation grid, or this layer's "
    "input at 8 bits when it is already signed",
    "low-bit final layer": "the final layer at 8 bits (First/last layer: 8-bit)",
    "no single cause found": "this layer at 8 bits if the measured culprits say it pays, or a reconstruction method",
}


@dataclass
class DiagnosisConfig:
    """Thresholds of the diagnosis.

    Attributes:
        sqnr_db: Alone-SQNR (dB) below which a layer is bad in absolute terms; when the median
            layer is below it, the model is at its bit-width's floor.
        z: z-score above which a channel counts as an outlier.
        residual_ratio: Branch magnitude ratio above which a residual add is mismatched.
        negative_share: Share of negative inputs above which an unsigned grid is a problem.
        spread_db: A layer is flagged only this far below the median layer (6 dB is about a bit).
    """

    sqnr_db: float = 20.0
    z: float = 3.5
    residual_ratio: float = 8.0
    negative_share: float = 0.01
    spread_db: float = 6.0

    def __post_init__(self) -> None:
        for name in ("sqnr_db", "z", "residual_ratio", "negative_share", "spread_db"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"diagnosis threshold {name} must be a finite number, got {v!r}")
        if self.z <= 0 or self.residual_ratio <= 1 or not 0 <= self.negative_share < 1 or self.spread_db < 0:
            raise ConfigError(
                "diagnosis thresholds: z > 0, residual_ratio > 1, 0 <= negative_share < 1, spread_db >= 0"
            )


@dataclass
class Finding:
    """One cause found at one layer, with the statistic that shows it and a fix not already in effect.

    `action` is ``{"kind": "settings", "changes": {QuantSpec field: value}}``,
    ``{"kind": "override", "text": "layer=W/A"}``, or None when no quantizer setting helps.
    """

    layer: str
    severity: str  # "flagged" (stands out) or "watch" (a cause at a layer that is fine)
    cause: str
    evidence: str
    fix: str
    sqnr_alone: float
    sqnr_accumulated: float
    wbits: int
    abits: int
    action: dict[str, Any] | None = None
    statistic: dict[str, Any] = field(default_factory=dict)  # the number behind the cause, by name

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


_ADDS = {operator.add, operator.iadd, torch.add}


def _is_add(node: Any) -> bool:
    return (node.op == "call_function" and node.target in _ADDS) or (
        node.op == "call_method" and node.target in ("add", "add_")
    )


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


def _act_fix(name: str, layer: QuantLayer) -> dict[str, Any] | None:
    if layer.act_quantizer.observer_name == "minmax":
        return settings_action(a_observer="percentile")
    return override_action(name, layer, abits=REPAIR_BITS) if layer.abits < REPAIR_BITS else None


def _outliers(name: str, layer: QuantLayer, stats: ChannelStats | None, cfg: DiagnosisConfig) -> list[tuple]:
    out = []
    if stats is not None and not layer.act_quantizer.scheme.is_float and stats.z.size > 1 and stats.z.max() > cfg.z:
        top = np.argsort(-stats.z)[:3]
        out.append(
            (
                "outlier channels (activations)",
                f"input channel(s) {', '.join(map(str, top))} reach |x| = "
                f"{stats.absmax[top[0]]:.3g} (z = {stats.z[top[0]]:.2f}) while the median channel reaches "
                f"{np.median(stats.absmax):.3g}",
                _act_fix(name, layer),
                {"z": float(stats.z[top[0]]), "channel": int(top[0]), "source": "activations"},
            )
        )
    w = weight_channel_stats(layer.weight)
    wq = layer.weight_quantizer
    if not wq.scheme.is_float and not wq.scheme.per_channel and w.z.size > 1 and w.z.max() > cfg.z:
        c = int(np.argmax(w.z))
        out.append(
            (
                "outlier channels (weights)",
                f"output channel {c} reaches |w| = {w.absmax[c]:.3g} (z = {w.z[c]:.2f}) under a per-tensor weight grid",
                settings_action(w_per_channel=True),
                {"z": float(w.z[c]), "channel": c, "source": "weights"},
            )
        )
    return out


def _dead(layer: QuantLayer, stats: ChannelStats | None) -> list[tuple]:
    w = weight_channel_stats(layer.weight)
    dead_in = stats.dead if stats is not None else []
    const_in = stats.constant if stats is not None else []
    if not (dead_in or const_in or w.dead):
        return []
    parts = []
    if dead_in:
        parts.append(f"{len(dead_in)} dead input channel(s) (e.g. {dead_in[:5]})")
    if const_in:
        parts.append(f"{len(const_in)} near-constant input channel(s) (e.g. {const_in[:5]})")
    if w.dead:
        parts.append(f"{len(w.dead)} all-zero weight channel(s) (e.g. {w.dead[:5]})")
    per_tensor = not layer.weight_quantizer.scheme.per_channel and not layer.weight_quantizer.scheme.is_float
    action = settings_action(w_per_channel=True) if per_tensor else None
    return [
        (
            "dead or near-constant channels",
            "; ".join(parts),
            action,
            {"dead_inputs": len(dead_in), "constant_inputs": len(const_in), "dead_weights": len(w.dead)},
        )
    ]


def layer_causes(
    name: str,
    layer: QuantLayer,
    role: str,
    stats: ChannelStats | None,
    residual: list[dict[str, Any]],
    cfg: DiagnosisConfig,
) -> list[tuple]:
    """(cause, evidence, action, statistic) tuples found at one layer; no action already in effect."""
    causes = _outliers(name, layer, stats, cfg) + _dead(layer, stats)
    act_quantized = not layer.act_quantizer.scheme.is_float
    for r in residual:
        if name in r["feeds"] and r["ratio"] > cfg.residual_ratio and act_quantized and layer.abits < REPAIR_BITS:
            a, b = r["branches"]
            causes.append(
                (
                    "range mismatch at a residual add",
                    f"add `{r['add']}` sums branches reaching {a:.3g} and {b:.3g} ({r['ratio']:.1f}x)",
                    override_action(name, layer, abits=REPAIR_BITS),
                    {"ratio": float(r["ratio"])},
                )
            )
    lowest = _lowest_level(layer)
    if stats is not None and lowest is not None and lowest >= 0 and stats.negative_share > cfg.negative_share:
        fix = (
            settings_action(a_symmetric=True)
            if not layer.act_quantizer.scheme.symmetric
            else override_action(name, layer, abits=REPAIR_BITS)
        )
        causes.append(
            (
                "negative activations under an unsigned quantizer",
                f"{100 * stats.negative_share:.1f}% of the inputs are negative but the grid starts at {lowest:.3g}",
                fix,
                {"negative_share": stats.negative_share, "lowest_level": lowest},
            )
        )
    if role == "last" and min(layer.wbits, layer.abits) < REPAIR_BITS:
        causes.append(
            (
                "low-bit final layer",
                f"the final layer runs at W{layer.wbits}/A{layer.abits}",
                settings_action(first_last_bits=REPAIR_BITS),
                {"bits": min(layer.wbits, layer.abits)},
            )
        )
    return [c for c in causes if not fix_in_effect(c[2], layer)]


def _kept(layer: QuantLayer, role: str) -> bool:
    return bool(role) and min(layer.wbits, layer.abits) >= REPAIR_BITS


def floor_verdict(
    median_db: float,
    bits: int,
    cfg: DiagnosisConfig,
    reconstruction: dict[str, Any] | None,
    model_name: str = "MODEL",
    wbits: int | None = None,
    abits: int | None = None,
) -> dict[str, Any]:
    """Whether the typical layer is at its bit-width's floor, and what to do then.

    `reconstruction` is a stored measurement ``{"method", "points", "top1", "rtn_top1", "run_id"}``
    of a reconstruction method on this model at these bits, or None (then the text says how
    to measure it).
    """
    floor = math.isfinite(median_db) and median_db < cfg.sqnr_db
    if not floor:
        return {"floor": False, "median_sqnr": median_db, "bits": bits, "text": ""}
    if reconstruction:
        how = (
            f"measured: {reconstruction['method']} recovers {reconstruction['points']:+.1f} points on this model "
            f"(run {reconstruction['run_id']})"
        )
    else:
        how = (
            f"not measured yet: run `python -m ptq_core quantize --model {model_name} --method pdquant "
            f"--wbits {wbits or bits} --abits {abits or bits}` and compare it with RTN"
        )
    text = (
        f"every layer is near the {bits}-bit floor (median layer {median_db:.1f} dB alone): use a reconstruction "
        f"method ({how})"
    )
    return {"floor": True, "median_sqnr": median_db, "bits": bits, "text": text}


def diagnose(
    qmodel: nn.Module,
    report: PrepareReport,
    float_model: nn.Module,
    images: torch.Tensor,
    config: DiagnosisConfig | None = None,
    stats_images: torch.Tensor | None = None,
    reconstruction: dict[str, Any] | None = None,
    model_name: str = "MODEL",
) -> dict[str, Any]:
    """Flag the layers that stand out, name the measured cause and a fix not already in effect.

    Args:
        qmodel: A calibrated prepared model (e.g. RTN); copied, never changed.
        report: Its `PrepareReport` (roles of the first and last layer).
        float_model: The original float model (input statistics, traced for residual adds).
        images: Probe images for the per-layer errors.
        config: Thresholds.
        stats_images: Images of the input-channel statistics (default `images`); pass the
            Outlier channels page's calibration images to get its very numbers.
        reconstruction: A stored reconstruction measurement for the floor verdict (see `floor_verdict`).
        model_name: For the command the floor verdict suggests.

    Returns:
        ``{"findings": [Finding dict], "layers": [per-layer rows], "residual_checked": bool,
        "verdict": floor_verdict dict, "kept": [layers the policy keeps at 8 bits]}``.
    """
    cfg = config or DiagnosisConfig()
    model = copy.deepcopy(qmodel).eval()
    alone = {e.name: e for e in layer_errors(model, images, "alone")}
    acc = {e.name: e for e in layer_errors(model, images, "accumulated")}
    layers = dict(quant_layers(model))
    stats = input_channel_stats(float_model, images if stats_images is None else stats_images, list(layers))
    residual = residual_mismatches(float_model, images)
    roles = {info.name: info.role for info in report.layers}
    kept = [n for n, q in layers.items() if _kept(q, roles.get(n, ""))]
    s_alone = {n: (alone[n].sqnr_db if n in alone else math.nan) for n in layers}
    live = [s_alone[n] for n in layers if n not in kept and math.isfinite(s_alone[n])]
    median = float(np.median(live)) if live else math.nan
    limit = min(cfg.sqnr_db, median - cfg.spread_db) if live else cfg.sqnr_db
    low = [q for n, q in layers.items() if n not in kept]
    bits = min((min(q.wbits, q.abits) for q in low), default=REPAIR_BITS)
    verdict = floor_verdict(
        median,
        bits,
        cfg,
        reconstruction,
        model_name,
        min((q.wbits for q in low), default=None),
        min((q.abits for q in low), default=None),
    )
    findings, rows = [], []
    for name, layer in layers.items():
        s_acc = acc[name].sqnr_db if name in acc else math.nan
        is_kept = name in kept
        flagged = not is_kept and s_alone[name] < limit
        causes = layer_causes(name, layer, roles.get(name, ""), stats.get(name), residual or [], cfg)
        if flagged and not causes:
            causes = [
                (
                    "no single cause found",
                    f"output SQNR {s_alone[name]:.1f} dB with only this layer "
                    f"quantized; the median layer has {median:.1f} dB",
                    override_action(name, layer, REPAIR_BITS, REPAIR_BITS),
                    {"sqnr_alone": s_alone[name], "median": median},
                )
            ]
        for cause, evidence, action, stat in causes:
            findings.append(
                Finding(
                    name,
                    "flagged" if flagged else "watch",
                    cause,
                    evidence,
                    FIXES[cause],
                    s_alone[name],
                    s_acc,
                    layer.wbits,
                    layer.abits,
                    action,
                    stat,
                )
            )
        rows.append(
            {
                "layer": name,
                "wbits": layer.wbits,
                "abits": layer.abits,
                "sqnr_alone": s_alone[name],
                "sqnr_accumulated": s_acc,
                "flagged": flagged,
                "kept": is_kept,
                "causes": len(causes),
            }
        )
    findings.sort(key=lambda f: (f.severity != "flagged", f.sqnr_alone))
    return {
        "findings": [f.to_dict() for f in findings],
        "layers": rows,
        "residual_checked": residual is not None,
        "verdict": verdict,
        "kept": kept,
        "threshold_db": limit,
    }

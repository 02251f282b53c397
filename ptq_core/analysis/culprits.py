"""Measured culprits: the few layers whose repair to 8 bits recovers the most accuracy.

Nothing here is guessed from statistics. The model is quantized with round-to-nearest
under the run's own `QuantSpec` (first/last policy and overrides included), and again
with every quantized side at 8 bits; both are calibrated on float activations, so
swapping one layer's quantizer from the 8-bit copy into the low-bit model is exactly
the model that override would give. Then:

1. the weights-vs-activations split (weights only, activations only) says which side
   costs the accuracy; that side is searched first, the other only when its own loss
   is at least `other_side_share` of the larger one (or `sides="both"`);
2. each candidate (layer, side) is raised to 8 bits alone and evaluated: its
   *recovered points* are its top-1 minus the low-bit top-1;
3. greedily: the best repair first, then at each step the next `lookahead` ranked repairs
   are measured on top of the set and the best joins it (even when it adds nothing yet:
   repairs interact), until the set recovers `target_share` of the loss or `max_set`
   repairs are in it; the chosen set is the shortest prefix with the best measured top-1.

Layers the policy already keeps at 8 bits on a side are listed as such, never as
candidates. The result's `overrides` text (``layer=W/A``) applies the chosen set on the
Quantize page or with ``--overrides``; applied, it gives the last measured top-1.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..errors import ConfigError
from ..methods import ProgressEvent, ProgressFn, QuantResult, emit
from ..metrics import evaluate
from ..modules import QuantLayer, quant_layers, set_quant_state
from ..overrides import format_overrides
from ..prepare import QuantSpec
from ..qscheme import FLOAT_BITS
from .sensitivity import rtn_model

__all__ = ["CulpritConfig", "SIDES", "measured_culprits", "repair_overrides", "eight_bit_spec"]

SIDES = ("weights", "activations")
REPAIR_BITS = 8


@dataclass
class CulpritConfig:
    """How far the search goes.

    Attributes:
        target_share: Share of the accuracy loss the chosen set must recover (0-1].
        max_set: Most layers in the chosen set.
        sides: ``"auto"`` (the split decides), ``"both"``, ``"weights"`` or ``"activations"``.
        other_side_share: With ``"auto"``, the smaller side is searched too when its loss is
            at least this share of the larger one.
        lookahead: After the first pick, how many of the next-ranked repairs are re-measured on
            top of the set at each greedy step.
    """

    target_share: float = 0.5
    max_set: int = 5
    sides: str = "auto"
    other_side_share: float = 0.25
    lookahead: int = 3

    def __post_init__(self) -> None:
        if not 0 < self.target_share <= 1:
            raise ConfigError(f"target_share must be in (0, 1], got {self.target_share}")
        if not isinstance(self.max_set, int) or self.max_set < 1:
            raise ConfigError(f"max_set must be a positive integer, got {self.max_set!r}")
        if self.sides not in ("auto", "both", *SIDES):
            raise ConfigError(f"sides must be auto, both, weights or activations, got {self.sides!r}")


def eight_bit_spec(spec: QuantSpec) -> QuantSpec:
    """`spec` with every quantized side at 8 bits (float sides stay float)."""
    up = lambda b: b if b == FLOAT_BITS else REPAIR_BITS  # noqa: E731
    return dataclasses.replace(spec, wbits=up(spec.wbits), abits=up(spec.abits), overrides={}, first_last_bits=None)


def _bits(layer: QuantLayer, side: str) -> int:
    return layer.wbits if side == "weights" else layer.abits


def _quantizer(side: str) -> str:
    return "weight_quantizer" if side == "weights" else "act_quantizer"


class _Repairs:
    """Swap 8-bit quantizers into the low-bit model, one (layer, side) at a time, and undo."""

    def __init__(self, low: nn.Module, high: nn.Module) -> None:
        self.low, self.high = dict(quant_layers(low)), dict(quant_layers(high))
        self.saved: dict[tuple[str, str], nn.Module] = {}

    def apply(self, layer: str, side: str) -> None:
        attr = _quantizer(side)
        self.saved[layer, side] = getattr(self.low[layer], attr)
        setattr(self.low[layer], attr, getattr(self.high[layer], attr))

    def undo(self, layer: str, side: str) -> None:
        setattr(self.low[layer], _quantizer(side), self.saved.pop((layer, side)))

    def undo_all(self) -> None:
        for (layer, side), fq in self.saved.items():
            setattr(self.low[layer], _quantizer(side), fq)
        self.saved.clear()


def _sides(split: dict[str, float], cfg: CulpritConfig) -> list[str]:
    if cfg.sides == "both":
        return list(SIDES)
    if cfg.sides in SIDES:
        return [cfg.sides]
    order = sorted(SIDES, key=lambda s: -split[s])
    big, small = split[order[0]], split[order[1]]
    return order if big <= 0 or small >= cfg.other_side_share * big else order[:1]


def repair_overrides(picks: Sequence[dict[str, Any]], layer_bits: dict[str, tuple[int, int]]) -> str:
    """``layer=W/A`` lines that raise each picked (layer, side) to 8 bits and keep the layer's other side."""
    bits = {name: list(wa) for name, wa in layer_bits.items()}
    for p in picks:
        bits[p["layer"]][SIDES.index(p["side"])] = REPAIR_BITS
    chosen = list(dict.fromkeys(p["layer"] for p in picks))
    return format_overrides({n: {"wbits": bits[n][0], "abits": bits[n][1]} for n in chosen})


def _policy_rows(report: Any, layers: dict[str, QuantLayer]) -> list[dict[str, Any]]:
    roles = {info.name: info.role for info in report.layers}
    return [
        {"layer": n, "role": roles.get(n, ""), "wbits": q.wbits, "abits": q.abits}
        for n, q in layers.items()
        if roles.get(n) and min(q.wbits, q.abits) >= REPAIR_BITS
    ]


@torch.no_grad()
def measured_culprits(
    model: nn.Module,
    calib: torch.Tensor,
    loader: DataLoader,
    spec: QuantSpec,
    config: CulpritConfig | None = None,
    progress: ProgressFn | None = None,
    batch_size: int = 128,
    quantized: QuantResult | None = None,
) -> dict[str, Any]:
    """Rank (layer, side) repairs by measured recovered top-1 and pick the smallest set reaching the target.

    Args:
        model: Float model; never modified.
        calib: Calibration images (ranges of both RTN copies).
        loader: Test images every top-1 is measured on.
        spec: The run's quantization settings (policy and overrides as they are).
        config: Search limits.
        progress: Optional callback; may raise `RunCancelled`.
        batch_size: Calibration batch size.
        quantized: The low-bit model to examine (e.g. a stored run's rebuilt model); it is
            copied, never changed. Default: RTN of `model` under `spec`.

    Returns:
        ``{"fp_top1", "top1", "loss", "split": {"weights", "activations"} (points lost with
        only that side quantized), "sides" (searched, in order), "candidates": [{layer, side,
        bits, top1, recovered}] best first, "chosen": [{... , "cumulative_top1",
        "cumulative_recovered"}], "recovered", "target", "reached", "overrides", "kept":
        [layers the policy keeps at 8 bits], "evaluations", "samples"}``.
    """
    cfg = config or CulpritConfig()
    device = next(model.parameters()).device
    if quantized is None:
        low = rtn_model(model, calib, spec, batch_size)
    else:
        low = dataclasses.replace(quantized, model=copy.deepcopy(quantized.model))
    high = rtn_model(model, calib, eight_bit_spec(spec), batch_size).model
    qmodel = low.model
    layers = dict(quant_layers(qmodel))
    count = {"n": 0, "planned": 4 + len(layers) + (cfg.max_set - 1) * cfg.lookahead}

    def top1(stage: str, message: str) -> float:
        # one global step count over all stages, so a progress bar (and its time left) is about the whole job
        count["n"] += 1
        count["planned"] = max(count["planned"], count["n"])
        emit(progress, ProgressEvent(stage, count["n"], count["planned"], message=message))
        res = evaluate(qmodel, loader, device)
        count["samples"] = int(res["samples"])
        return float(res["top1"])

    set_quant_state(qmodel, False, False)
    fp = top1("split", "float")
    set_quant_state(qmodel, True, False)
    w_only = top1("split", "weights only")
    set_quant_state(qmodel, False, True)
    a_only = top1("split", "activations only")
    set_quant_state(qmodel, True, True)
    base = top1("split", "both")
    split = {"weights": fp - w_only, "activations": fp - a_only}
    sides = _sides(split, cfg)
    todo = [(n, s) for s in sides for n, q in layers.items() if _bits(q, s) < REPAIR_BITS]
    count["planned"] = 4 + len(todo) + (cfg.max_set - 1) * cfg.lookahead
    repairs = _Repairs(qmodel, high)
    candidates = []
    for i, (name, side) in enumerate(todo):
        repairs.apply(name, side)
        t = top1("measure each repair", f"{i + 1}/{len(todo)}: {name} {side} to 8 bits")
        repairs.undo_all()
        candidates.append(
            {"layer": name, "side": side, "bits": _bits(layers[name], side), "top1": t, "recovered": t - base}
        )
    candidates.sort(key=lambda c: -c["recovered"])
    loss = fp - base
    chosen, best = [], base
    pool = list(candidates) if candidates and candidates[0]["recovered"] > 0 else []
    while pool and len(chosen) < cfg.max_set and best - base < cfg.target_share * loss:
        if not chosen:
            pick, t = pool[0], pool[0]["top1"]
        else:  # re-measure the next few on top of the set: repairs interact, so solo ranks are only a guide
            tried = []
            for c in pool[: cfg.lookahead]:
                repairs.apply(c["layer"], c["side"])
                tried.append((top1("greedy set", f"set + {c['layer']} {c['side']}"), c))
                repairs.undo(c["layer"], c["side"])
            t, pick = max(tried, key=lambda tc: tc[0])
        repairs.apply(pick["layer"], pick["side"])  # kept even when it adds nothing yet: a pair can pay
        pool.remove(pick)
        chosen.append({**pick, "cumulative_top1": t, "cumulative_recovered": t - base})
        best = max(best, t)
    repairs.undo_all()
    if chosen:  # the smallest prefix that reaches the best measured top-1
        chosen = chosen[: 1 + max(range(len(chosen)), key=lambda i: (chosen[i]["cumulative_top1"], -i))]
    layer_bits = {n: (q.wbits, q.abits) for n, q in layers.items()}
    return {
        "fp_top1": fp,
        "top1": base,
        "loss": loss,
        "split": split,
        "sides": sides,
        "candidates": candidates,
        "chosen": chosen,
        "recovered": best - base,
        "target": cfg.target_share * loss,
        "reached": best - base >= cfg.target_share * loss,
        "overrides": repair_overrides(chosen, layer_bits),
        "kept": _policy_rows(low.report, layers),
        "evaluations": count["n"],
        "samples": count.get("samples", 0),
    }

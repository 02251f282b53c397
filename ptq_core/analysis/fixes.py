"""Fix actions of the diagnosis: what a fix changes, whether it is already in effect, applying it.

An action is ``{"kind": "settings", "changes": {QuantSpec field: value}}`` (e.g. a clipping
activation observer) or ``{"kind": "override", "text": "layer=W/A"}`` (one layer's bits).
`fix_in_effect` reads the quantized layer itself, so a fix is never suggested for what the
layer already runs with; `apply_fix` turns an action into the `QuantSpec` to run next.
`reconstruction_measurement` finds what a stored reconstruction run recovered over RTN.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..modules import QuantLayer
from ..overrides import parse_overrides
from ..prepare import QuantSpec

__all__ = [
    "REPAIR_BITS",
    "RECONSTRUCTION_METHODS",
    "override_action",
    "settings_action",
    "fix_in_effect",
    "apply_fix",
    "reconstruction_measurement",
]

REPAIR_BITS = 8


def override_action(name: str, layer: QuantLayer, wbits: int | None = None, abits: int | None = None) -> dict[str, Any]:
    """An override line for `name`: the given sides changed, the others at the layer's own bits."""
    return {"kind": "override", "text": f"{name}={wbits or layer.wbits}/{abits or layer.abits}"}


def settings_action(**changes: Any) -> dict[str, Any]:
    """Settings of the Quantize page to change."""
    return {"kind": "settings", "changes": changes}


def fix_in_effect(action: dict[str, Any] | None, layer: QuantLayer) -> bool:
    """Whether `action` is already what `layer` runs with (a fix to suggest must never be)."""
    if action is None:
        return False
    if action["kind"] == "override":
        w, a = (int(b) for b in action["text"].rpartition("=")[2].split("/"))
        return (layer.wbits, layer.abits) == (w, a)
    wq, aq = layer.weight_quantizer, layer.act_quantizer
    state = {
        "a_observer": aq.observer_name,
        "w_observer": wq.observer_name,
        "w_per_channel": wq.scheme.per_channel,
        "a_symmetric": aq.scheme.symmetric,
        "w_symmetric": wq.scheme.symmetric,
        "first_last_bits": min(layer.wbits, layer.abits),
    }
    changes = action["changes"]
    if "first_last_bits" in changes:
        return state["first_last_bits"] >= changes["first_last_bits"]
    return all(state[k] == v for k, v in changes.items())


def apply_fix(spec: QuantSpec, action: dict[str, Any]) -> QuantSpec:
    """`spec` with a finding's fix applied (settings changed, or the override line added last)."""
    if action["kind"] == "override":
        return dataclasses.replace(spec, overrides={**spec.overrides, **parse_overrides(action["text"])})
    return dataclasses.replace(spec, **action["changes"])


RECONSTRUCTION_METHODS = ("pdquant", "qdrop", "brecq", "adaround")  # preferred first


def reconstruction_measurement(
    records: list[Any], model: str, wbits: int, abits: int, data: str | None = None
) -> dict[str, Any] | None:
    """What a stored reconstruction run recovered over a stored RTN run of the same model, bits and data.

    Args:
        records: Stored `RunRecord`s (any; filtered here).
        model, wbits, abits, data: What must match (data: the spec's data set, when given).

    Returns:
        ``{"method", "points", "top1", "rtn_top1", "run_id", "rtn_run_id"}`` for the preferred
        method (PD-Quant first) with the best top-1, or None when either run is missing.
    """

    def match(r: Any, method: str) -> bool:
        same_data = data is None or (r.spec or {}).get("data", data) == data
        return (
            r.status == "done"
            and r.model == model
            and r.method == method
            and (r.wbits, r.abits) == (wbits, abits)
            and same_data
            and isinstance(r.metrics.get("top1"), (int, float))
        )

    rtn = [r for r in records if match(r, "rtn")]
    if not rtn:
        return None
    base = rtn[0]
    for method in RECONSTRUCTION_METHODS:
        runs = [r for r in records if match(r, method)]
        if runs:
            best = max(runs, key=lambda r: r.metrics["top1"])
            return {
                "method": method,
                "points": best.metrics["top1"] - base.metrics["top1"],
                "top1": best.metrics["top1"],
                "rtn_top1": base.metrics["top1"],
                "run_id": best.run_id,
                "rtn_run_id": base.run_id,
            }
    return None

"""How a stored run is described on every page: what its numbers are and what decided them."""

from __future__ import annotations

from ptq_core.store import RunRecord

__all__ = ["describe_run"]


def describe_run(rec: RunRecord) -> str:
    """One line that says what a run's numbers are: method, effective bits, model, data, subset, seed."""
    m, spec = rec.metrics, rec.spec or {}
    method = spec.get("method", rec.config)
    quant = method.get("quant", {})
    data = rec.extras.get("data", {}).get("name") or spec.get("data", "?")
    parts = [f"{rec.method} {rec.bits_label} on {rec.model}", f"data {data}"]
    if m.get("eval_samples"):
        parts.append(f"top-1 on the first {int(m['eval_samples']):,} test images")
    if m.get("calib_samples") or method.get("calib"):
        parts.append(f"{int(m.get('calib_samples') or method['calib']):,} calibration images")
    if quant:
        parts.append(f"observers {quant.get('w_observer')}/{quant.get('a_observer')}")
    if "preset" in method:
        parts.append(f"preset {method['preset']}, {method.get('iters')} steps per unit")
    parts.append(f"seed {method.get('seed', '?')}")
    return " · ".join(parts)

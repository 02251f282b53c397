"""Mixed precision: per-layer bit-widths under a weight-size budget, from the sensitivity proxy.

Model: quantizing layer l at b bits adds a relative logit error energy
``noise[l, b]`` (measured one layer at a time by `sensitivity.sensitivity_proxy`);
errors of different layers are treated as independent, so the model's noise is
their sum and its predicted logit SQNR is ``-10 log10(sum)``. The budget is the
average weight bit-width, i.e. a size of ``budget * (weights of the swept layers)``
bits. `allocate` solves the resulting multiple-choice knapsack (minimise total noise,
size within budget) by dynamic programming over sizes rounded *up* to a grid, so
every answer it returns fits the budget exactly; the uniform allocations that fit
are candidates too, so the answer is never worse than the best of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["Allocation", "allocate", "overrides_for", "predicted_sqnr_db"]

_GRID = 4000  # size buckets of the dynamic programme


@dataclass
class Allocation:
    """Chosen bits per layer and what they cost and predict."""

    bits: dict[str, int]
    size_bits: int  # weights of the swept layers at their chosen bit-widths
    budget_bits: int
    noise: float
    predicted_sqnr_db: float
    uniform: list[dict[str, Any]] = field(default_factory=list)  # each bit-width: size, noise, sqnr, fits

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dict(self.__dict__)


def predicted_sqnr_db(noise: float) -> float:
    """Logit SQNR (dB) predicted from a total relative noise energy."""
    return math.inf if noise <= 0 else -10.0 * math.log10(noise)


def _table(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[int], np.ndarray, np.ndarray]:
    """(layers in order, bit-widths, noise[L, B], weights[L]) from sensitivity rows."""
    if not rows:
        raise ConfigError("the sensitivity table is empty: run the proxy first")
    layers = [r["layer"] for r in sorted(rows, key=lambda r: r["index"])]
    layers = list(dict.fromkeys(layers))
    bits = sorted({int(r["bits"]) for r in rows})
    noise = np.full((len(layers), len(bits)), np.nan)
    weights = np.zeros(len(layers), dtype=np.int64)
    for r in rows:
        i, j = layers.index(r["layer"]), bits.index(int(r["bits"]))
        noise[i, j] = float(r["noise"])
        weights[i] = int(r["weights"])
    if np.isnan(noise).any():
        raise ConfigError("the sensitivity table is incomplete: every layer needs every bit-width")
    return layers, bits, noise, weights


def _knapsack(cost: np.ndarray, noise: np.ndarray, capacity: int) -> list[int] | None:
    """Choice per layer minimising total noise with sum of integer costs <= capacity (None if impossible)."""
    n_layers, n_opts = cost.shape
    best = np.full(capacity + 1, np.inf)
    best[0] = 0.0
    choice = np.zeros((n_layers, capacity + 1), dtype=np.int16)
    for i in range(n_layers):
        new = np.full(capacity + 1, np.inf)
        for j in range(n_opts):
            c = int(cost[i, j])
            if c > capacity:
                continue
            cand = np.full(capacity + 1, np.inf)
            cand[c:] = best[: capacity + 1 - c] + noise[i, j]
            better = cand < new
            new[better] = cand[better]
            choice[i, better] = j
        best = new
    end = int(np.argmin(best))
    if not np.isfinite(best[end]):
        return None
    picks = []
    for i in range(n_layers - 1, -1, -1):
        j = int(choice[i, end])
        picks.append(j)
        end -= int(cost[i, j])
    return picks[::-1]


def allocate(rows: Sequence[dict[str, Any]], budget: float) -> Allocation:
    """Bits per layer minimising the predicted logit noise with average weight bits <= `budget`.

    Args:
        rows: `sensitivity_proxy` rows (every layer at every bit-width).
        budget: Average bits per weight over the swept layers.

    Raises:
        ConfigError: When even the smallest bit-width everywhere does not fit.
    """
    layers, bits, noise, weights = _table(rows)
    total = int(weights.sum())
    if not math.isfinite(budget) or budget <= 0:
        raise ConfigError(f"the bit budget must be a positive number, got {budget}")
    budget_bits = int(math.floor(budget * total))
    if min(bits) * total > budget_bits:
        raise ConfigError(f"a budget of {budget:g} bits per weight is below the smallest bit-width ({min(bits)})")
    size = weights[:, None] * np.asarray(bits)[None, :]
    unit = max(1, math.ceil(budget_bits / _GRID))
    picks = _knapsack(-(-size // unit), noise, budget_bits // unit)  # sizes rounded up: answers always fit
    candidates = [] if picks is None else [picks]
    uniform = []
    for j, b in enumerate(bits):
        fits = int(size[:, j].sum()) <= budget_bits
        total_noise = float(noise[:, j].sum())
        uniform.append(
            {
                "bits": b,
                "size_bits": int(size[:, j].sum()),
                "noise": total_noise,
                "predicted_sqnr_db": predicted_sqnr_db(total_noise),
                "fits": fits,
            }
        )
        if fits:
            candidates.append([j] * len(layers))
    best = min(candidates, key=lambda p: float(noise[np.arange(len(layers)), p].sum()))
    total_noise = float(noise[np.arange(len(layers)), best].sum())
    return Allocation(
        bits={name: bits[j] for name, j in zip(layers, best, strict=True)},
        size_bits=int(size[np.arange(len(layers)), best].sum()),
        budget_bits=budget_bits,
        noise=total_noise,
        predicted_sqnr_db=predicted_sqnr_db(total_noise),
        uniform=uniform,
    )


def overrides_for(bits: dict[str, int]) -> dict[str, dict[str, int]]:
    """`QuantSpec.overrides` that set each layer (exact name) to its chosen W/A bits."""
    return {name: {"wbits": b, "abits": b} for name, b in bits.items()}

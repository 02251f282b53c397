"""Multipoint quantization (Liu et al., AAAI 2021; docs/methods.md): greedy sums of b-bit vectors.

Each output channel ``w`` (d inputs) is approximated by ``a_1 v_1 + ... + a_n v_n``
with integer vectors ``v`` on a b-bit grid and float coefficients ``a``. Point i
fits the residual ``r = w - sum_{p<i} a_p v_p``: for a fixed ``a`` the best ``v`` is
``clamp(round(r / a))``, so the step is a one-dimensional search over ``a``
(log-spaced candidates around ``||r||_inf / level_max``, both signs when the grid is
not symmetric), then a few alternations of the least-squares ``a = <r, v> / <v, v>``
and re-rounding ``v`` (kept only when they lower the error). ``a = ||r||_inf`` is
always a candidate, which puts the largest entry exactly on the grid and rounds
every other entry no further than it was, so ``||r||`` shrinks with every point.

How many points each channel gets is decided from its *output* error
``e_c = r_cᵀ H r_c`` on calibration inputs (`allocate_points`).

Grids: ``"signed"``: all 2^b codes ``[-2^(b-1), 2^(b-1) - 1]``; ``"symmetric"``: the
2^b - 1 codes ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` of the third-party re-implementation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..qscheme import int_range

__all__ = ["GRIDS", "SELECTIONS", "grid_levels", "greedy_point", "greedy_points", "allocate_points"]

GRIDS = ("signed", "symmetric")
SELECTIONS = ("error", "random")
_CHUNK_ELEMENTS = 2**23
_REFINE_STEPS = 3


def grid_levels(bits: int, grid: str) -> tuple[int, int]:
    """Integer range of a point's vector, e.g. (-8, 7) for 4-bit signed, (-7, 7) symmetric."""
    lo, hi = int_range(bits, signed=True)
    return (lo if grid == "signed" else -hi), hi


def _fit(r: Tensor, a: Tensor, lo: int, hi: int) -> tuple[Tensor, Tensor]:
    """Codes ``clamp(round(r / a))`` and squared errors for coefficients ``a`` (``[K, R]``)."""
    safe = torch.where(a == 0, torch.ones_like(a), a)
    v = torch.round(r[None] / safe[..., None]).clamp_(lo, hi)  # [K, R, d]
    v = torch.where((a == 0)[..., None], torch.zeros_like(v), v)
    return v, (r[None] - a[..., None] * v).square().sum(-1)


def _candidates(r: Tensor, hi: int, count: int, signed: bool) -> Tensor:
    """``[K, R]`` coefficients: log-spaced over ``[0.3, 1.2 * hi] * ||r||_inf / hi`` plus the exact ends."""
    m = r.abs().amax(1)  # [R]
    f = torch.logspace(math.log10(0.3), math.log10(1.2 * hi), count, device=r.device, dtype=r.dtype)
    f = torch.cat([f, torch.tensor([1.0, float(hi)], device=r.device, dtype=r.dtype)]) / hi  # ends: a = m/hi, m
    a = f[:, None] * m[None, :]
    return torch.cat([a, -a]) if signed else a


@torch.no_grad()
def greedy_point(r: Tensor, bits: int, grid: str = "signed", count: int = 128) -> tuple[Tensor, Tensor]:
    """Best ``(a, v)`` for the residuals ``r`` (``[R, d]``): coefficients ``[R]``, codes ``[R, d]``."""
    lo, hi = grid_levels(bits, grid)
    cand = _candidates(r, hi, count, grid == "signed" and lo != -hi)
    best_err = torch.full((r.shape[0],), math.inf, dtype=r.dtype, device=r.device)
    best_a = torch.zeros_like(best_err)
    step = max(1, _CHUNK_ELEMENTS // max(1, r.numel()))
    for k in range(0, cand.shape[0], step):
        _, err = _fit(r, cand[k : k + step], lo, hi)
        e, i = err.min(0)
        better = e < best_err
        best_err = torch.where(better, e, best_err)
        best_a = torch.where(better, cand[k : k + step].gather(0, i[None])[0], best_a)
    v, best_err = (t[0] for t in _fit(r, best_a[None], lo, hi))
    for _ in range(_REFINE_STEPS):  # least-squares coefficient, then re-round: keep what helps
        vv = v.square().sum(1)
        a_ls = torch.where(vv > 0, (r * v).sum(1) / vv.clamp(min=1e-30), best_a)
        v_new, err = (t[0] for t in _fit(r, a_ls[None], lo, hi))
        better = err < best_err
        best_a, best_err = torch.where(better, a_ls, best_a), torch.where(better, err, best_err)
        v = torch.where(better[:, None], v_new, v)
    return best_a, v


def greedy_points(w: Tensor, n: int, bits: int, grid: str = "signed", count: int = 128) -> tuple[Tensor, Tensor]:
    """The first ``n`` greedy points of every row of ``w`` (``[R, d]``).

    Returns:
        Coefficients ``[n, R]`` and codes ``[n, R, d]``.
    """
    r, coeffs, codes = w.clone(), [], []
    for _ in range(n):
        a, v = greedy_point(r, bits, grid, count)
        r = r - a[:, None] * v
        coeffs.append(a)
        codes.append(v)
    return torch.stack(coeffs), torch.stack(codes)


def allocate_points(
    errors: Tensor,
    extra: int | None,
    threshold: float | None,
    reference: Tensor,
    selection: str = "error",
    generator: torch.Generator | None = None,
) -> Tensor:
    """How many points each channel gets.

    Every channel starts with one point. While the budget lasts, one more point goes to
    the channel with the largest current output error (``selection="error"``) or to a
    random channel (``"random"``, the paper's ablation), among the channels below
    ``n_max`` whose relative error ``e_c / reference_c`` is above `threshold` (when set).

    Args:
        errors: ``[n_max, C]`` output error of each channel with 1..n_max points.
        extra: Extra points allowed (None: no limit).
        threshold: Relative output error at which a channel stops getting points (None: off).
        reference: ``[C]`` output energy ``w_cᵀ H w_c`` the threshold is relative to.
        selection: ``"error"`` or ``"random"``.
        generator: Random source for ``"random"``.

    Returns:
        ``[C]`` point counts in ``1..n_max``.
    """
    n_max, channels = errors.shape
    points = torch.ones(channels, dtype=torch.long)
    errors, reference = errors.double().cpu(), reference.double().cpu()
    budget = math.inf if extra is None else extra
    idx = torch.arange(channels)
    while budget > 0:
        current = errors[points - 1, idx]
        eligible = points < n_max
        if threshold is not None:
            eligible &= current > threshold * reference
        if not bool(eligible.any()):
            break
        if selection == "random":
            pool = idx[eligible]
            c = int(pool[torch.randint(len(pool), (1,), generator=generator)])
        else:
            c = int(torch.where(eligible, current, torch.full_like(current, -math.inf)).argmax())
        points[c] += 1
        budget -= 1
    return points

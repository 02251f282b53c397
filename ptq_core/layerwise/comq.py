"""COMQ's solver: exact coordinate descent on integer codes, in the Gram form (docs/methods.md).

For every output row r the layer error is ``(w_r - q_r)ᵀ H (w_r - q_r)`` with
``q_r = s_r (c_r - z_r)`` and integer codes c. Holding every other coordinate
fixed, the best real value for coordinate j is ``q_rj + e_rj / H_jj`` where
``e_r = H (w_r - q_r)``; the best code is that value rounded onto the row's grid
(this also clips), so each step is an exact one-dimensional minimisation and the
error never rises. All rows step together, each at its own j (the greedy order
sorts j by ``|W_rj| * ||x_j||``, largest first), with no Python loop over rows;
``e`` is recomputed with one matrix product per sweep and updated after each step.

Start ``"float"`` is the reference code's (``Q = W``: the first sweep quantizes each
coordinate given the earlier ones, the unvisited ones still exact); start
``"nearest"`` begins at round-to-nearest, so the whole run is monotone from there.
After each sweep the per-row scale can take its one-dimensional least-squares value
``s_r = (u_rᵀ H w_r) / (u_rᵀ H u_r)`` with ``u_r = c_r - z_r`` (codes fixed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["ORDERS", "STARTS", "ComqSolution", "visiting_order", "comq_solve"]

ORDERS = ("greedy", "natural", "random")
STARTS = ("float", "nearest")


@dataclass
class ComqSolution:
    """Codes, scales and the record of one COMQ run on a layer (rows = output channels)."""

    codes: Tensor  # [R, d] integers
    scale: Tensor  # [R]
    start_error: float
    rtn_error: float
    error: float
    curve: Tensor  # layer error after every single-coordinate step (and each scale update), float64
    order: Tensor  # [R, d] visiting order per row
    scale_steps: list[int] = field(default_factory=list)  # curve positions of the scale updates


def visiting_order(w: Tensor, hdiag: Tensor, order: str, seed: int = 0) -> Tensor:
    """Per-row permutation of the input coordinates.

    Args:
        w: ``[R, d]`` float weights.
        hdiag: ``[R, d]`` diagonal of each row's H (``||x_j||^2 / N``).
        order: ``"greedy"`` (by ``|w| * ||x_j||``, largest first), ``"natural"`` or ``"random"``.
    """
    if order == "greedy":
        return torch.argsort(w.abs() * hdiag.clamp(min=0).sqrt(), dim=1, descending=True, stable=True)
    if order == "natural":
        return torch.arange(w.shape[1], device=w.device).expand_as(w).contiguous()
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(w.shape[1], generator=g) for _ in range(w.shape[0])]).to(w.device)


def _grid(t: Tensor, sinv: Tensor, z: Tensor, qmin: int, qmax: int) -> Tensor:
    """Nearest code of `t` on each row's grid (as `fake_quantize` rounds)."""
    return torch.round(t * sinv).add_(z).clamp_(qmin, qmax)


def _per_row(t: Tensor, rows: int) -> Tensor:
    return t.reshape(-1).expand(rows).clone() if t.numel() == 1 else t.reshape(rows).clone()


def _matmul(x: Tensor, h: Tensor, groups: int) -> Tensor:
    """Row-wise ``x_r H_{g(r)}`` for ``[R, d]`` rows grouped ``[G, m, d]``."""
    return torch.bmm(x.reshape(groups, -1, x.shape[1]), h).reshape(x.shape)


def _sweep(
    w: Tensor,
    q: Tensor,
    codes: Tensor,
    h: Tensor,
    perm: Tensor,
    grp: Tensor,
    sinv: Tensor,
    s: Tensor,
    z: Tensor,
    qmin: int,
    qmax: int,
) -> Tensor:
    """One pass over every coordinate (updates q and codes in place); returns the error change of each step.

    Step t visits coordinate ``perm[r, t]`` of every row r at once: it reads that
    coordinate's ``e`` and value, rounds the best real value onto the grid, and
    subtracts ``dq * H[j_r, :]`` from ``e_r`` (one gathered row of H per output row).
    """
    rows, d = w.shape
    groups = h.shape[0]
    h_rows = h.reshape(groups * d, d)  # row j of group g is row g*d + j
    pos = (perm + torch.arange(rows, device=w.device)[:, None] * d).t().contiguous()  # [d, R] into flat [R, d]
    sel = (perm + grp[:, None] * d).t().contiguous()  # [d, R] rows of h_rows
    hb = h.diagonal(dim1=1, dim2=2).reshape(-1)[sel]  # [d, R] H_jj of each step
    hinv = torch.where(hb > 0, hb.reciprocal(), torch.zeros_like(hb))  # a dead input keeps nearest rounding
    e = _matmul(w - q, h, groups)  # e_r = H (w_r - q_r)
    e_flat, q_flat = e.view(-1), q.view(-1)
    e_used, dq = torch.empty_like(hb), torch.empty_like(hb)  # [d, R]
    for t in range(d):
        torch.index_select(e_flat, 0, pos[t], out=e_used[t])
        q_old = q_flat[pos[t]]
        new = torch.addcmul(q_old, e_used[t], hinv[t])  # best real value of this coordinate
        new.mul_(sinv).round_().add_(z).clamp_(qmin, qmax).sub_(z).mul_(s)  # nearest grid value
        torch.sub(new, q_old, out=dq[t])
        q_flat[pos[t]] = new
        e.addcmul_(h_rows.index_select(0, sel[t]), dq[t][:, None], value=-1.0)  # the residual changed by -dq
    codes.copy_(torch.round(q * sinv[:, None]).add_(z[:, None]))
    return (dq.double() * (dq.double() * hb.double() - 2.0 * e_used.double())).reshape(-1)  # step-major, then row


def _rescale(w: Tensor, codes: Tensor, h: Tensor, s: Tensor, z: Tensor, per_channel: bool) -> Tensor:
    """Least-squares scale with the codes fixed (kept where the fit is degenerate)."""
    u = codes - z[:, None]
    uh = _matmul(u, h, h.shape[0])
    num, den = (uh * w).sum(1).double(), (uh * u).sum(1).double()
    if not per_channel:
        num, den = num.sum().expand_as(num), den.sum().expand_as(den)
    ok = (den > 0) & (num > 0)
    return torch.where(ok, num / den.clamp(min=1e-30), s.double()).to(s.dtype)


def _error(w: Tensor, q: Tensor, h: Tensor) -> float:
    diff = (w - q).double()
    return float((_matmul(diff, h.double(), h.shape[0]) * diff).sum())


@torch.no_grad()
def comq_solve(
    w: Tensor,
    h: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    qmin: int,
    qmax: int,
    *,
    sweeps: int = 1,
    order: str = "greedy",
    start: str = "float",
    update_scale: bool = True,
    per_channel: bool = True,
    seed: int = 0,
) -> ComqSolution:
    """Quantize one layer's weights by coordinate descent on their integer codes.

    Args:
        w: ``[G, m, d]`` float weights (G groups of m output channels, d inputs each).
        h: ``[G, d, d]`` Gram matrices of the inputs.
        scale, zero_point: The grid: ``[G*m]`` per channel, or one element per tensor.
        qmin, qmax: Integer code range.
        sweeps: Passes over all coordinates (K, 1 in the paper).
        order: Visiting order, one of `ORDERS`.
        start: ``"float"`` (reference code) or ``"nearest"``.
        update_scale: Least-squares scale update after each sweep.
        per_channel: Whether the scale is per channel (else one scale for all rows).
        seed: For the random order.
    """
    groups, m, d = w.shape
    rows = groups * m
    wf, h = w.reshape(rows, d).float(), h.float()
    grp = torch.arange(groups, device=w.device).repeat_interleave(m)  # [R] group of each row
    s, z = _per_row(scale.float(), rows).to(w.device), _per_row(zero_point.float(), rows).to(w.device)
    sinv = s.reciprocal()
    hdiag = h.diagonal(dim1=1, dim2=2)[grp]  # [R, d]
    perm = visiting_order(wf, hdiag, order, seed)
    nearest = _grid(wf, sinv[:, None], z[:, None], qmin, qmax)
    rtn_error = _error(wf, (nearest - z[:, None]) * s[:, None], h)
    q = wf.clone() if start == "float" else (nearest - z[:, None]) * s[:, None]
    codes = nearest.clone()
    start_error = 0.0 if start == "float" else rtn_error
    pieces, scale_steps, err = [], [], start_error
    for _ in range(sweeps):
        pieces.append(_sweep(wf, q, codes, h, perm, grp, sinv, s, z, qmin, qmax))
        if update_scale:
            s = _rescale(wf, codes, h, s, z, per_channel)
            sinv = s.reciprocal()
            q_new = (codes - z[:, None]) * s[:, None]
            before = err + float(torch.cat(pieces).sum())
            pieces.append(torch.tensor([_error(wf, q_new, h) - before], dtype=torch.float64, device=w.device))
            scale_steps.append(sum(len(p) for p in pieces))
            q = q_new
    curve = start_error + torch.cat(pieces).cumsum(0) if pieces else torch.zeros(0, dtype=torch.float64)
    return ComqSolution(codes, s, start_error, rtn_error, _error(wf, q, h), curve.cpu(), perm, scale_steps)

"""GPTQ (Frantar et al., 2022): column-by-column rounding with second-order error feedback.

Columns are quantized in order (or by decreasing ``H_jj`` with act-order); the
rounding error of column j is spread over the columns not yet quantized through
the inverse Hessian, ``W[:, j:] -= (w_j - q_j) / U_jj * U[j, j:]`` with U the
upper Cholesky factor of ``H⁻¹``. Updates are applied lazily in blocks of 128
columns. ``H = XᵀX`` gets 1 % of its mean diagonal as damping; inputs never seen
(``H_jj = 0``) get their weights zeroed, as in the reference code. Groups of a
grouped conv are solved as a batch, each with its own H.

`gptq_reference` is the slow textbook form (explicit inverse, one column at a
time, the inverse shrunk by one row and column each step) used to check the
fast one.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["gptq_solve", "gptq_reference"]


def _damped(w: Tensor, h: Tensor, percdamp: float) -> tuple[Tensor, Tensor]:
    """Zero dead inputs' weights, set their H_jj to 1, add the damping."""
    h, w = h.clone(), w.clone()
    diag = h.diagonal(dim1=1, dim2=2)  # a view: writes go into h
    dead = diag == 0  # [G, d]
    diag[dead] = 1.0
    w.masked_fill_(dead[:, None, :], 0.0)
    damp = percdamp * diag.mean(1)  # [G]
    diag += damp[:, None]
    return w, h


def _quant(x: Tensor, s: Tensor, sinv: Tensor, z: Tensor, qmin: int, qmax: int) -> tuple[Tensor, Tensor]:
    code = torch.round(x * sinv).add_(z).clamp_(qmin, qmax)
    return code, (code - z) * s


@torch.no_grad()
def gptq_solve(
    w: Tensor,
    h: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    qmin: int,
    qmax: int,
    *,
    percdamp: float = 0.01,
    block: int = 128,
    act_order: bool = False,
) -> Tensor:
    """Integer codes for one layer by GPTQ.

    Args:
        w: ``[G, m, d]`` float weights.
        h: ``[G, d, d]`` Gram matrices of the inputs.
        scale, zero_point: The grid, ``[G*m]`` per channel or one element.
        qmin, qmax: Integer code range.
        percdamp: Damping as a fraction of the mean diagonal of H.
        block: Columns per lazy-update block.
        act_order: Visit columns by decreasing ``H_jj``.

    Returns:
        ``[G, m, d]`` codes.
    """
    groups, m, d = w.shape
    dtype = torch.float64 if w.dtype == torch.float64 else torch.float32
    w, h = _damped(w.to(dtype), h.to(dtype), percdamp)
    s = scale.to(dtype).reshape(-1).expand(groups * m).reshape(groups, m).to(w.device)
    z = zero_point.to(dtype).reshape(-1).expand(groups * m).reshape(groups, m).to(w.device)
    sinv = s.reciprocal()
    perm = None
    if act_order:
        perm = torch.argsort(h.diagonal(dim1=1, dim2=2), dim=1, descending=True)  # [G, d]
        w = w.gather(2, perm[:, None, :].expand(-1, m, -1))
        h = h.gather(1, perm[:, :, None].expand(-1, -1, d)).gather(2, perm[:, None, :].expand(-1, d, -1))
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)  # [G, d, d]
    codes = torch.zeros_like(w)
    for i1 in range(0, d, block):
        i2 = min(i1 + block, d)
        w1, u1 = w[:, :, i1:i2].clone(), hinv[:, i1:i2, i1:i2]
        err1 = torch.zeros_like(w1)
        for i in range(i2 - i1):
            code, q = _quant(w1[:, :, i], s, sinv, z, qmin, qmax)
            codes[:, :, i1 + i] = code
            err = (w1[:, :, i] - q) / u1[:, i, i][:, None]  # [G, m]
            w1[:, :, i:] -= err[:, :, None] * u1[:, i, i:][:, None, :]
            err1[:, :, i] = err
        w[:, :, i2:] -= torch.bmm(err1, hinv[:, i1:i2, i2:])
    if perm is not None:
        codes = codes.gather(2, torch.argsort(perm, dim=1)[:, None, :].expand(-1, m, -1))
    return codes


@torch.no_grad()
def gptq_reference(
    w: Tensor, h: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, percdamp: float = 0.01
) -> Tensor:
    """The same codes as `gptq_solve` (natural order), the slow way, in float64. ``[G, m, d]``."""
    groups, m, d = w.shape
    w, h = _damped(w.double(), h.double(), percdamp)
    s = scale.double().reshape(-1).expand(groups * m).reshape(groups, m)
    z = zero_point.double().reshape(-1).expand(groups * m).reshape(groups, m)
    codes = torch.zeros_like(w)
    for g in range(groups):
        hinv, wg = torch.linalg.inv(h[g]), w[g].clone()
        for j in range(d):
            code, q = _quant(wg[:, j], s[g], s[g].reciprocal(), z[g], qmin, qmax)
            codes[g, :, j] = code
            wg[:, j:] -= ((wg[:, j] - q) / hinv[j, j])[:, None] * hinv[j, j:][None, :]
            hinv = hinv - torch.outer(hinv[:, j], hinv[j, :]) / hinv[j, j]
    return codes

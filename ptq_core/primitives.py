"""Pure quantization math: tensors in, tensors out, no module state.

The uniform affine fake-quantizer (docs/methods.md) is
``Q(x) = s * (clamp(round(x / s) + z, qmin, qmax) - z)`` with scale ``s > 0`` and
integer zero point ``z``. ``x / s`` is computed as ``x * (1 / s)`` and rounding is
half-to-even (``torch.round``), exactly as ``torch.fake_quantize_per_*_affine`` do, so
results agree with torch bit for bit. Zero points are float tensors holding integers,
so they can be made learnable.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ptq_core.errors import ConfigError, DataError, NonFiniteError
from ptq_core.qscheme import int_range

__all__ = [
    "along",
    "clamp_inclusive",
    "quant_range",
    "channel_rows",
    "compute_qparams",
    "round_ste",
    "quantize",
    "dequantize",
    "fake_quantize",
    "fake_quantize_fused",
    "bernoulli_mask",
    "qdrop_mix",
    "error_parts",
    "quantization_error",
    "lp_loss",
    "histogram_points",
    "lp_search",
]

_CHUNK_ELEMENTS = 2**22  # elements per temporary [candidates, C, N] block in lp_search
_Search = tuple[Tensor, Tensor, Tensor, Tensor]  # best lo, best hi [C]; loss per width, width [K, C]


def _check_finite(t: Tensor, what: str) -> None:
    """Raise NonFiniteError if ``t`` holds NaN or inf."""
    if not bool(torch.isfinite(t).all()):
        raise NonFiniteError(f"{what} contains NaN or infinite values")


def along(t: Tensor, ndim: int, axis: int | None) -> Tensor:
    """Reshape a 1-D per-channel tensor so it broadcasts along ``axis`` of an ``ndim``-D tensor.

    A per-channel scale ``[C]`` of a conv weight ``[C, K, kh, kw]`` becomes ``[C, 1, 1, 1]``
    (``axis=0``); of an activation ``[N, C, H, W]``, ``[1, C, 1, 1]`` (``axis=1``). With
    ``axis=None`` (per-tensor) ``t`` is returned as it is.
    """
    if axis is None:
        return t
    shape = [1] * ndim
    shape[axis] = -1
    return t.reshape(shape)


def channel_rows(x: Tensor, axis: int | None) -> Tensor:
    """View ``x`` as ``[C, N]`` rows: one row per channel along ``axis``, everything else flattened.

    ``axis=None`` gives one row ``[1, N]`` (per-tensor). A weight ``[C_out, C_in, k, k]``
    with ``axis=0`` gives ``[C_out, C_in * k * k]``, the same as ``w.reshape(C_out, -1)``.

    Args:
        x: Any tensor (at least 1-D when ``axis`` is given).
        axis: Channel axis, or None.

    Returns:
        ``[C, N]`` (a view when the layout allows, as ``reshape`` does).

    Raises:
        DataError: If ``axis`` is given for a 0-d tensor.
    """
    if axis is None:
        return x.reshape(1, -1)  # [1, N]
    if x.dim() == 0:
        raise DataError("a scalar has no channels")
    return x.movedim(axis, 0).reshape(x.shape[axis], -1)  # [C, N]


def clamp_inclusive(q: Tensor, qmin: int, qmax: int) -> Tensor:
    """Clamp ``q`` to ``[qmin, qmax]`` with gradient 1 on the closed range and 0 outside it.

    torch's fake-quant ops mask their gradient this way; ``torch.clamp``'s gradient is 0
    at the two ends, which would stop learning of values sitting exactly on the grid's ends.
    """
    inside = (q >= qmin) & (q <= qmax)
    return torch.where(inside, q, q.detach().clamp(qmin, qmax))


quant_range = int_range
"""Integer grid ``(qmin, qmax)`` of a bit-width: :func:`ptq_core.qscheme.int_range` under the name
the math in this module has always used."""


def compute_qparams(
    min_val: Tensor | float, max_val: Tensor | float, bits: int, symmetric: bool, signed: bool, eps: float = 1e-8
) -> tuple[Tensor, Tensor]:
    """Scale and zero point covering ``[min_val, max_val]`` (elementwise; vectors give per-channel).

    The range is first widened to include 0, so 0 is always exactly representable.
    Asymmetric: ``s = (hi - lo) / (qmax - qmin)``, ``z = clamp(qmin - round(lo / s))``.
    Symmetric signed: ``s = max(|lo|, hi) / ((qmax - qmin) / 2)`` (torch.ao's convention,
    e.g. ``absmax / 127.5`` at 8 bits), ``z = 0``. Symmetric unsigned: ``s = hi / qmax``, ``z = 0``.
    Example: 8-bit signed symmetric on ``[-1, 0.5]`` gives ``s = 1 / 127.5``, ``z = 0``.

    Args:
        min_val: Observed minimum (scalar or tensor).
        max_val: Observed maximum, same shape as ``min_val``.
        bits: Bit-width, 2-8.
        symmetric: Force ``z = 0``.
        signed: Use the signed integer grid.
        eps: Lower bound on the scale.

    Returns:
        ``(scale, zero_point)``, both float tensors of the input shape; ``zero_point``
        holds integers.

        >>> scale, zp = compute_qparams(-1.0, 0.5, 8, symmetric=False, signed=False)
        >>> round(scale.item(), 6), zp.item()  # 1.5 / 255 per step; 0.0 sits on code 170
        (0.005882, 170.0)
    """
    lo_in, hi_in = torch.as_tensor(min_val), torch.as_tensor(max_val)
    dtype = lo_in.dtype if lo_in.is_floating_point() else torch.get_default_dtype()
    lo_in, hi_in = lo_in.to(dtype), hi_in.to(dtype=dtype, device=lo_in.device)
    _check_finite(lo_in, "min_val")
    _check_finite(hi_in, "max_val")
    qmin, qmax = quant_range(bits, signed)
    lo, hi = lo_in.clamp(max=0), hi_in.clamp(min=0)
    if symmetric:
        scale = torch.maximum(-lo, hi) / ((qmax - qmin) / 2) if signed else hi / qmax
        scale = scale.clamp(min=eps)
        return scale, torch.zeros_like(scale)
    scale = ((hi - lo) / (qmax - qmin)).clamp(min=eps)
    zero_point = (qmin - torch.round(lo / scale)).clamp(qmin, qmax)
    return scale, zero_point


def round_ste(x: Tensor) -> Tensor:
    """Round half-to-even in the forward pass; identity gradient (straight-through).

    Args:
        x: Any float tensor.

    Returns:
        ``torch.round(x)`` whose gradient with respect to ``x`` is 1.
    """
    return torch.round(x).detach() + (x - x.detach())  # x - x.detach() is exactly 0: exact integers


def quantize(x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, axis: int | None = None) -> Tensor:
    """Map real values to grid integers ``clamp(round(x / s) + z, qmin, qmax)``.

    Args:
        x: Input tensor.
        scale: Scalar, or 1-D of length ``x.shape[axis]`` when ``axis`` is given.
        zero_point: Same shape as ``scale``, integer-valued.
        qmin, qmax: Integer grid bounds.
        axis: Channel axis for per-channel qparams, or None.

    Returns:
        Integer-valued float tensor shaped like ``x`` (gradients pass straight through).
    """
    s, z = along(scale, x.dim(), axis), along(zero_point, x.dim(), axis)
    return clamp_inclusive(round_ste(x * s.reciprocal()) + z, qmin, qmax)


def dequantize(q: Tensor, scale: Tensor, zero_point: Tensor, axis: int | None = None) -> Tensor:
    """Map grid integers back to real values ``(q - z) * s``.

    Args:
        q: Integer-valued tensor from :func:`quantize`.
        scale: Scalar, or 1-D along ``axis``.
        zero_point: Same shape as ``scale``.
        axis: Channel axis for per-channel qparams, or None.

    Returns:
        Float tensor shaped like ``q``.
    """
    s, z = along(scale, q.dim(), axis), along(zero_point, q.dim(), axis)
    return (q - z) * s


def fake_quantize(
    x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, axis: int | None = None
) -> Tensor:
    """Quantize then dequantize: ``s * (clamp(round(x / s) + z, qmin, qmax) - z)``.

    Gradients: 1 to ``x`` inside the grid, 0 where clamped; to ``scale`` the LSQ
    gradient ``round(x/s) - x/s`` inside and ``qmin - z`` / ``qmax - z`` outside.

    Args:
        x: Input tensor.
        scale: Scalar, or 1-D along ``axis``.
        zero_point: Same shape as ``scale``, integer-valued.
        qmin, qmax: Integer grid bounds.
        axis: Channel axis for per-channel qparams, or None.

    Returns:
        Tensor shaped like ``x`` holding values on the quantization grid.

        >>> x = torch.tensor([0.26, -3.0, 9.0])
        >>> fake_quantize(x, torch.tensor(0.5), torch.tensor(0.0), -8, 7).tolist()  # 9.0 clips to 7 * 0.5
        [0.5, -3.0, 3.5]
    """
    return dequantize(quantize(x, scale, zero_point, qmin, qmax, axis), scale, zero_point, axis)


def bernoulli_mask(like: Tensor, p: float) -> Tensor:
    """A float 0/1 tensor shaped like `like`, each element 1 with probability `p`.

    On the CPU the mask is made from 8 random bits per element when ``256 p`` is an
    integer (exact), else 16 (resolution 2^-16), several times faster than
    ``rand_like(x) < p`` there; on CUDA it is exactly that.

    Args:
        like: Tensor giving shape, dtype and device.
        p: Probability of a 1.

    Returns:
        Tensor of 0.0 and 1.0 shaped like `like`.
    """
    if like.is_cuda:
        return (torch.rand_like(like) < p).to(like.dtype)
    n = like.numel()
    byte_exact = float(p * 256).is_integer()  # e.g. p = 0.5: 8 random bits per element suffice
    per_draw, view, offset = (8, torch.uint8, 0) if byte_exact else (4, torch.int16, -32768)
    bits = torch.randint(-(2**63), 2**63 - 1, (-(-n // per_draw),), dtype=torch.int64, device=like.device)
    r = bits.view(view)[:n].reshape(like.shape).to(like.dtype)  # uniform integers
    levels = 256 if byte_exact else 65536
    return r.neg_().add_(round(p * levels) + offset).clamp_(0.0, 1.0)  # 1 where r < threshold


class _FakeQuantizeFn(torch.autograd.Function):
    """`fake_quantize` (plus optional float pass-through) with a hand-written backward.

    Same values as `fake_quantize`; gradients: 1 to ``x`` inside the grid and where the
    value is kept in float, 0 where clamped; to ``scale`` the LSQ gradient (see
    `fake_quantize`), 0 where kept in float. Only float arithmetic (no bool masks or
    `where`, which are slow on the CPU), and two saved tensors instead of an autograd
    graph of a dozen elementwise ops.
    """

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax, axis, keep):  # type: ignore[override]
        s, z = along(scale, x.dim(), axis), along(zero_point, x.dim(), axis)
        z_is_0 = not x.is_cuda and not bool(zero_point.any())  # (a GPU would have to sync to know)
        v = x * s.reciprocal()
        q = torch.round(v) if z_is_0 else torch.round(v).add_(z)  # [*x]
        qc = q.clamp(qmin, qmax)
        inside = q.sub_(qc).abs_().clamp_(max=1.0).neg_().add_(1.0)  # 1 inside the grid, 0 where clamped
        if not z_is_0:
            qc.sub_(z)  # integer offsets from the zero point
        ds = torch.addcmul(qc, v, inside, value=-1.0) if ctx.needs_input_grad[1] else None  # d out / d scale
        out = qc.mul_(s)
        need_x = ctx.needs_input_grad[0]
        if keep is not None:
            out = qdrop_mix(out, x, keep, inplace=True)  # exact: x where kept, the quantized value elsewhere
            inside = torch.maximum(inside, keep) if need_x else inside
            if ds is not None:
                ds.mul_(1.0 - keep)
        ctx.save_for_backward(inside if need_x else None, ds)
        ctx.axis, ctx.scale_shape = axis, scale.shape
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        inside, ds = ctx.saved_tensors
        gx = grad * inside if ctx.needs_input_grad[0] else None
        gs = None
        if ds is not None:
            prod = grad * ds
            gs = prod.sum() if ctx.axis is None else channel_rows(prod, ctx.axis).sum(1)
            gs = gs.reshape(ctx.scale_shape)
        return gx, gs, None, None, None, None, None


def qdrop_mix(quant: Tensor, float_value: Tensor, keep_float: Tensor | None, *, inplace: bool = False) -> Tensor:
    """QDrop's mix: the float value where ``keep_float`` is 1, the quantized value where it is 0.

    Computed as ``quant * (1 - keep) + float_value * keep``, which is exact for a 0/1 mask
    (each element is one of its two inputs, bit for bit).

    Args:
        quant: Quantized (or quantized-input) tensor.
        float_value: Float tensor of the same shape.
        keep_float: 0/1 float mask shaped like ``quant`` (see `bernoulli_mask`), or None (no mix).
        inplace: Write the result into ``quant`` (which must not need its old value for autograd).

    Returns:
        The mixed tensor (``quant`` itself when ``keep_float`` is None or ``inplace``).
    """
    if keep_float is None:
        return quant
    if inplace:
        return quant.mul_(1.0 - keep_float).addcmul_(float_value, keep_float)
    return torch.addcmul(quant * (1.0 - keep_float), float_value, keep_float)


def fake_quantize_fused(
    x: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    qmin: int,
    qmax: int,
    axis: int | None = None,
    keep_float: Tensor | None = None,
) -> Tensor:
    """`fake_quantize` with the same values and gradients, in fewer passes over memory.

    Used in training loops (reconstruction), where the dozen elementwise ops of the
    composed version and their backward dominate small blocks. The zero point is
    treated as a constant (use `fake_quantize` to learn it).

    Args:
        x: Input tensor.
        scale: Scalar, or 1-D along ``axis``.
        zero_point: Same shape as ``scale``, integer-valued.
        qmin, qmax: Integer grid bounds.
        axis: Channel axis for per-channel qparams, or None.
        keep_float: Optional 0/1 float mask shaped like ``x`` (see `bernoulli_mask`):
            where 1 the float value passes through unquantized (QDrop).

    Returns:
        Tensor shaped like ``x``.
    """
    if keep_float is not None and keep_float.dtype != x.dtype:
        keep_float = keep_float.to(x.dtype)
    if zero_point.requires_grad:
        return qdrop_mix(fake_quantize(x, scale, zero_point, qmin, qmax, axis), x, keep_float)
    if torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad):
        return _FakeQuantizeFn.apply(x, scale, zero_point, qmin, qmax, axis, keep_float)
    with torch.no_grad():
        s, z = along(scale, x.dim(), axis), along(zero_point, x.dim(), axis)
        out = torch.round(x * s.reciprocal()).add_(z).clamp_(qmin, qmax).sub_(z).mul_(s)
        return qdrop_mix(out, x, keep_float)


def error_parts(
    x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, axis: int | None = None
) -> tuple[Tensor, Tensor]:
    """Squared error of `fake_quantize` per element, and which elements are clipped.

    An element is *clipped* when ``round(x / s) + z`` (``x / s`` computed as ``x * (1 / s)``,
    as `quantize` does) falls outside ``[qmin, qmax]``; the others only suffer rounding.

    Args:
        x: Input tensor.
        scale: Scalar, or 1-D along ``axis``.
        zero_point: Same shape as ``scale``.
        qmin, qmax: Integer grid bounds.
        axis: Channel axis for per-channel qparams, or None.

    Returns:
        ``(squared_error, clipped)``, both shaped like ``x`` (float and bool), without gradients.
    """
    with torch.no_grad():
        s, z = along(scale, x.dim(), axis), along(zero_point, x.dim(), axis)
        q_raw = torch.round(x * s.reciprocal()) + z
        clipped = (q_raw < qmin) | (q_raw > qmax)
        sq_err = (x - fake_quantize(x, scale, zero_point, qmin, qmax, axis)).square()
    return sq_err, clipped


def quantization_error(
    x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, axis: int | None = None
) -> dict[str, float]:
    """Split the squared quantization error into clipping and rounding parts.

    Takes the arguments of `error_parts` and sums its two parts.

    Returns:
        ``{"clipping", "rounding", "total"}`` sums of squared error and ``clip_fraction``,
        the share of elements clipped, all Python floats.
    """
    sq_err, clipped = error_parts(x, scale, zero_point, qmin, qmax, axis)
    clipping = float(sq_err[clipped].sum())
    rounding = float(sq_err[~clipped].sum())
    frac = float(clipped.float().mean()) if x.numel() else 0.0
    return {"clipping": clipping, "rounding": rounding, "total": clipping + rounding, "clip_fraction": frac}


def lp_loss(x: Tensor, xq: Tensor, p: float, axis: int | None = None) -> Tensor:
    """Mean ``|x - xq|^p``, over everything or per channel.

    Args:
        x: Reference tensor.
        xq: Approximation, same shape.
        p: Exponent (2.4 in BRECQ/QDrop/PD-Quant, 2 for MSE, 1 for MAE).
        axis: Channel axis; if given the mean is taken over all other dims.

    Returns:
        0-d tensor, or ``[C]`` with ``C = x.shape[axis]``.
    """
    err = (x - xq).abs().pow(p)
    return err.mean() if axis is None else channel_rows(err, axis).mean(1)


def _candidate_losses(
    rows: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, p: float, weights: Tensor | None = None
) -> Tensor:
    """Lp loss of every candidate (scale, zp) [K, C] on rows [C, N]; chunked over K -> [K, C].

    With `weights` [C, N] (histogram counts), the loss is the weighted mean.
    """
    chunk = max(1, _CHUNK_ELEMENTS // max(1, rows.numel()))
    out = []
    for k0 in range(0, scale.shape[0], chunk):
        s = scale[k0 : k0 + chunk, :, None]  # [k, C, 1]
        z = zero_point[k0 : k0 + chunk, :, None]  # [k, C, 1]
        xq = (rows * s.reciprocal()).round_().add_(z).clamp_(qmin, qmax).sub_(z).mul_(s)  # [k, C, N]
        err = xq.sub_(rows).abs_().pow_(p)  # [k, C, N]
        out.append(err.mean(-1) if weights is None else (err * weights).sum(-1) / weights.sum(-1))  # [k, C]
    return torch.cat(out)


def _validate_search(p: float, num_candidates: int, axis: int | None, return_curve: bool) -> None:
    if not p > 0:
        raise ConfigError(f"p must be positive, got {p}")
    if not isinstance(num_candidates, int) or num_candidates < 1:
        raise ConfigError(f"num_candidates must be a positive integer, got {num_candidates!r}")
    if return_curve and axis is not None:
        raise ConfigError("the search curve is available for per-tensor searches only (axis=None)")


def _search_1d(
    rows: Tensor, ratio: Tensor, bits: int, symmetric: bool, signed: bool, p: float, weights: Tensor | None
) -> _Search:
    """Candidates ``[-thr, thr]`` (``thr = ratio * max|x|``), or ``[0, thr]`` (``thr = ratio * max x``)."""
    xmin, xmax = rows.amin(1), rows.amax(1)  # [C]
    one_sided = bool(xmin.min() >= 0) or not signed
    bound = xmax.clamp(min=0) if one_sided else torch.maximum(xmin.abs(), xmax.abs())  # [C]
    hi = ratio[:, None] * bound  # [K, C]
    lo = torch.zeros_like(hi) if one_sided else -hi
    scale, zp = compute_qparams(lo, hi, bits, symmetric, signed)  # [K, C]
    loss = _candidate_losses(rows, scale, zp, *quant_range(bits, signed), p, weights)  # [K, C]
    best = loss.argmin(0)  # [C]
    ch = torch.arange(rows.shape[0], device=rows.device)  # [C]
    return lo[best, ch], hi[best, ch], loss, hi - lo


_MAX_ZP_EXHAUSTIVE = 16  # zero-point positions searched exhaustively; above this, coarse-to-fine


def _zp_losses(
    rows: Tensor, w: Tensor, zps: Tensor, nz: int, qmin: int, qmax: int, p: float, weights: Tensor | None
) -> Tensor:
    """Loss of widths w [G, C] at zero-point positions zps [G, Z, C] (offsets from qmin) -> [G, Z, C]."""
    g, z, c = zps.shape
    step = (w / (nz - 1)).clamp(min=1e-8)[:, None, :].expand(g, z, c)  # [G, Z, C]
    loss = _candidate_losses(rows, step.reshape(-1, c), (qmin + zps).reshape(-1, c), qmin, qmax, p, weights)
    return loss.reshape(g, z, c)


def _best_zp(
    rows: Tensor, w: Tensor, nz: int, qmin: int, qmax: int, p: float, weights: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Best zero-point offset and its loss for each width in w [G, C] -> ([G, C], [G, C]).

    Up to 16 positions are tried exhaustively (every grid at 2-4 bits). Above that the
    search is coarse-to-fine: 16 evenly spaced positions, then every position within
    one coarse stride of the best of them.
    """
    g, c = w.shape
    if nz <= _MAX_ZP_EXHAUSTIVE:
        zps = torch.arange(nz, device=rows.device, dtype=rows.dtype)[None, :, None].expand(g, nz, c)
        loss, idx = _zp_losses(rows, w, zps, nz, qmin, qmax, p, weights).min(1)
        return idx.to(rows.dtype), loss
    stride = -(-nz // _MAX_ZP_EXHAUSTIVE)  # ceil
    coarse = torch.arange(0, nz, stride, device=rows.device, dtype=rows.dtype)[None, :, None].expand(g, -1, c)
    best = coarse.gather(1, _zp_losses(rows, w, coarse, nz, qmin, qmax, p, weights).argmin(1, keepdim=True))
    offsets = torch.arange(-stride + 1, stride, device=rows.device, dtype=rows.dtype)[None, :, None]
    fine = (best + offsets).clamp(0, nz - 1)  # [G, 2*stride-1, C]
    loss, idx = _zp_losses(rows, w, fine, nz, qmin, qmax, p, weights).min(1)
    return fine.gather(1, idx[:, None, :]).squeeze(1), loss


def _search_2d(rows: Tensor, ratio: Tensor, bits: int, signed: bool, p: float, weights: Tensor | None) -> _Search:
    """Candidates ``[-z*step, width - z*step]`` for every width and zero-point position z."""
    qmin, qmax = quant_range(bits, signed)
    c, nz = rows.shape[0], qmax - qmin + 1
    width = ratio[:, None] * (rows.amax(1).clamp(min=0) - rows.amin(1).clamp(max=0))  # [K, C]; range holds 0
    group = max(1, _CHUNK_ELEMENTS // (min(nz, 2 * _MAX_ZP_EXHAUSTIVE) * rows.numel()))  # widths per pass
    width_loss, width_z = [], []
    for w in width.split(group):  # [G, C]
        z_w, loss_w = _best_zp(rows, w, nz, qmin, qmax, p, weights)
        width_loss.append(loss_w)
        width_z.append(z_w)
    width_loss, z_best = torch.cat(width_loss), torch.cat(width_z)  # [K, C]
    ch = torch.arange(c, device=rows.device)  # [C]
    k_best = width_loss.argmin(0)  # [C]
    step_best = (width[k_best, ch] / (nz - 1)).clamp(min=1e-8)  # [C]
    lo = -z_best[k_best, ch] * step_best  # [C]
    return lo, lo + width[k_best, ch], width_loss, width


def lp_search(
    x: Tensor,
    bits: int,
    symmetric: bool,
    signed: bool,
    p: float = 2.4,
    num_candidates: int = 100,
    axis: int | None = None,
    return_curve: bool = False,
    weights: Tensor | None = None,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Range search minimising the Lp quantization error (docs/methods.md, BRECQ/QDrop/PD-Quant).

    Symmetric grids and nonnegative data (judged over the whole tensor, as PD-Quant does)
    use a 1-D search over ``thr = i/n * max|x|``: range ``[-thr, thr]``, or ``[0, thr]`` for
    nonnegative data or unsigned grids (negatives clip to 0 there, so ``max x`` is used).
    Asymmetric grids on two-sided data use a 2-D search over widths ``i/n * (max - min)``
    and every zero-point position ``z`` in ``0..2^b-1`` (range ``[-z*step, width - z*step]``;
    coarse-to-fine above 16 positions, see `_best_zp`).
    Cost is O(candidates * numel) with candidates = n (1-D) or n * 2^b (2-D); candidates
    are evaluated in chunks so memory stays bounded.

    Args:
        x: Data to quantize.
        bits: Bit-width, 2-8.
        symmetric: Symmetric grid (zero point 0).
        signed: Signed integer grid.
        p: Loss exponent (2.4 default; 2 = MSE; 1 = MAE).
        num_candidates: Number of range widths ``n``.
        axis: Channel axis for a per-channel search (each channel picks its own best).
        return_curve: Also return the loss per candidate width (per-tensor only).
        weights: Optional non-negative weight per element of `x` (same shape), e.g.
            histogram counts when `x` holds bin centres; the loss becomes a weighted mean.

    Returns:
        ``(min_val, max_val)`` of the best range (0-d, or ``[C]`` per channel), plus with
        ``return_curve`` a dict of CPU tensors ``ratio`` (i/n), ``width`` (range width),
        ``loss`` (each ``[n]``; in 2-D the best loss over zero points) and ``best_index``.
    """
    _validate_search(p, num_candidates, axis, return_curve)
    _check_finite(x, "lp_search input")
    quant_range(bits, signed)
    with torch.no_grad():
        rows = channel_rows(x.detach().float(), axis)  # [C, N]
        wrows = None if weights is None else channel_rows(weights.detach().float(), axis)  # [C, N]
        ratio = torch.arange(1, num_candidates + 1, device=rows.device, dtype=rows.dtype) / num_candidates  # [K]
        if symmetric or bool(rows.min() >= 0):
            min_val, max_val, width_loss, width = _search_1d(rows, ratio, bits, symmetric, signed, p, wrows)
        else:
            min_val, max_val, width_loss, width = _search_2d(rows, ratio, bits, signed, p, wrows)
    if axis is None:
        min_val, max_val = min_val[0], max_val[0]  # []
    if not return_curve:
        return min_val, max_val
    curve = {
        "ratio": ratio.cpu(),
        "width": width[:, 0].cpu(),
        "loss": width_loss[:, 0].cpu(),
        "best_index": width_loss[:, 0].argmin().cpu(),
    }
    return min_val, max_val, curve


def histogram_points(x: Tensor, bins: int = 2048) -> tuple[Tensor, Tensor]:
    """Compress a large tensor into bin centres and counts for a weighted `lp_search`.

    The exact minimum and maximum are kept as points of their own, so the search
    range and the one-/two-sided decision are unchanged. With 2048 bins an 8-bit
    grid step spans at least 8 bins, so rounding errors are still resolved.

    Args:
        x: Values (any shape; flattened).
        bins: Number of equal-width bins over [min, max].

    Returns:
        (points [bins + 2], counts [bins + 2]) on x's device.
    """
    _check_finite(x, "histogram input")
    flat = x.detach().float().flatten()
    lo, hi = flat.min(), flat.max()
    counts = torch.histc(flat, bins, float(lo), float(hi))  # [B]
    width = (hi - lo) / bins
    centres = lo + width * (torch.arange(bins, device=flat.device, dtype=flat.dtype) + 0.5)  # [B]
    ones = torch.ones(2, device=flat.device)
    return torch.cat([centres, lo.reshape(1), hi.reshape(1)]), torch.cat([counts, ones])

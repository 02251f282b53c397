"""Build one unit's cache: quantized and float inputs, float outputs, DC targets, Fisher weights,
float stage outputs, and the values that cross the unit's cut (for the KL tail).

Distribution correction runs on every unit whose float counterpart has BatchNorm
(`float_unit`): a block of any class, or a layer whose BatchNorm was folded into it
(the float layer followed by that BatchNorm). A unit without one is recorded and
announced as "no BatchNorm in this unit: no correction".
"""

from __future__ import annotations

import math
import time

from torch import nn

from ..blocks import Unit
from ..modules import quant_state
from ..progress import ProgressEvent, emit
from .cache import UnitCache, choose_store
from .capture import capture_io, probe_io
from .context import ReconContext
from .correction import bn_layers, correct_distribution
from .options import ReconOptions
from .remainder import fisher_weights
from .spill import TieredStore
from .stage import enclosing_stage

__all__ = ["build_unit_cache", "float_block", "float_unit", "NO_BN"]

NO_BN = "no BatchNorm in this unit: no correction"


def float_block(fp_model: nn.Module, name: str) -> nn.Module | None:
    """The caller's float module of the same name, if it has BatchNorm layers to correct toward."""
    try:
        block = fp_model.get_submodule(name)
    except AttributeError:
        return None
    return block if bn_layers(block) else None


def float_unit(fp_model: nn.Module, name: str, folded: dict[str, str]) -> nn.Module | None:
    """The caller's float counterpart of unit `name` when it has BatchNorm layers to correct toward.

    Args:
        fp_model: The caller's float model (BatchNorm kept).
        name: The unit's module name.
        folded: Layer name -> name of the BatchNorm folded into it (`PrepareReport.folded`).

    Returns:
        The float module of that name if it holds BatchNorm layers, else the float layer
        followed by its folded BatchNorm, else None.
    """
    block = float_block(fp_model, name)
    if block is not None or name not in folded:
        return block
    try:
        return nn.Sequential(fp_model.get_submodule(name), fp_model.get_submodule(folded[name]))
    except AttributeError:
        return None


def _estimate_bytes(ctx: ReconContext, unit: Unit, opts: ReconOptions) -> int:
    with quant_state(ctx.qmodel, False, False):
        in_shape, out_shape = probe_io(ctx.qmodel, unit.name, ctx.images)
    n_in = 2 + int(opts.dc)  # x_q, x_fp (+ x_dc)
    n_out = 1 + int(opts.dc) + int(opts.rec_loss == "fisher")  # y_fp (+ y_dc, grad)
    per_sample = n_in * math.prod(in_shape) + n_out * math.prod(out_shape)
    stage = enclosing_stage(ctx.qmodel, unit.name) if opts.stage_weight > 0 else None
    if stage is not None:
        with quant_state(ctx.qmodel, False, False):
            per_sample += math.prod(probe_io(ctx.qmodel, stage, ctx.images)[1])  # y_stage
    return per_sample * len(ctx.images) * ctx.images.element_size()


def _correct(
    ctx: ReconContext, unit: Unit, index: int, n_units: int, cache: UnitCache, opts: ReconOptions, store: TieredStore
) -> float:
    block = float_unit(ctx.fp_model, unit.name, ctx.folded)
    if block is None or opts.dc_steps == 0:
        cache.notes["dc"] = NO_BN if block is None else "dc_steps is 0: no correction"
        emit(
            ctx.progress,
            ProgressEvent("correct", 1, 1, unit.name, index, n_units, message=f"{opts.stage}: {cache.notes['dc']}"),
        )
        return 0.0
    cache.notes["dc"] = f"corrected toward {len(bn_layers(block))} BatchNorm layer(s)"
    t0 = time.perf_counter()
    every = max(1, opts.dc_steps // 20)

    def on_step(done: int, total: int) -> None:
        if done % every == 0 or done == total:
            emit(
                ctx.progress,
                ProgressEvent(
                    "correct", done, total, unit.name, index, n_units, message=f"{opts.stage}: distribution correction"
                ),
            )

    x_dc, y_dc = correct_distribution(
        block,
        cache["x_fp"],
        opts.dc_lambda,
        opts.dc_steps,
        opts.dc_lr,
        opts.dc_group,
        opts.dc_chunk,
        device=ctx.device,
        on_step=on_step,
    )
    cache.put("x_dc", store.hold(x_dc))
    cache.put("y_dc", store.hold(y_dc))
    return time.perf_counter() - t0


def _cache_skips(ctx: ReconContext, unit: Unit, cache: UnitCache, store: TieredStore) -> None:
    """The values crossing the unit's cut, for its KL tail (nothing cached: the full forward runs)."""
    skips = ctx.tails.capture_skips(unit.name, ctx.images, ctx.forward_batch, store.empty)
    if skips is None:
        return
    for k, t in enumerate(skips):
        cache.put(f"skip_{k}", t)
    cache.skips = [f"skip_{k}" for k in range(len(skips))]


def build_unit_cache(
    ctx: ReconContext, unit: Unit, index: int, n_units: int, opts: ReconOptions
) -> tuple[UnitCache, float]:
    """Cache everything unit `unit` trains on; returns (cache, seconds spent on DC).

    The quantized-model input comes from the model in its current state (finished
    units quantized); the float input/output from the same model with quantization
    off (BatchNorm folded, so it matches the float model). Tensors are placed by a
    `TieredStore` (kept as ``cache.placement``) under `opts.cache_budget_mb`; values never
    depend on where they live.
    """
    home = choose_store(ctx.device, _estimate_bytes(ctx, unit, opts), opts.cache)
    store = TieredStore(ctx.device, home, int(opts.cache_budget_mb * 2**20), ctx.spill)
    cache = UnitCache(ctx.device, home=home, placement=store)
    with quant_state(ctx.qmodel, False, False):
        x_fp, y_fp = capture_io(ctx.qmodel, unit.name, ctx.images, ctx.forward_batch, True, store.empty)
    x_q, _ = capture_io(ctx.qmodel, unit.name, ctx.images, ctx.forward_batch, False, store.empty)
    cache.put("x_q", x_q)
    cache.put("x_fp", x_fp)
    cache.put("y_fp", y_fp)
    stage = enclosing_stage(ctx.qmodel, unit.name) if opts.stage_weight > 0 else None
    if stage is not None:  # RepAPQ's stage term: the float output of the enclosing stage
        with quant_state(ctx.qmodel, False, False):
            _, y_stage = capture_io(ctx.qmodel, stage, ctx.images, ctx.forward_batch, True, store.empty)
        cache.put("y_stage", y_stage)
    if opts.uses_remainder and ctx.tails is not None:
        _cache_skips(ctx, unit, cache, store)
    dc_seconds = _correct(ctx, unit, index, n_units, cache, opts, store) if opts.dc else 0.0
    if opts.rec_loss == "fisher":
        if ctx.fp_logits is None:
            raise ValueError("the Fisher loss needs the float logits in the context")
        skips = [cache[n] for n in cache.skips] if cache.skips is not None else None
        grad = fisher_weights(ctx.qmodel, unit.name, x_fp, ctx.images, ctx.fp_logits, opts.batch_size, ctx.tails, skips)
        cache.put("grad", store.hold(grad))
    return cache, dc_seconds

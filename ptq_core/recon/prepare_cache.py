"""Build one unit's cache: quantized and float inputs, float outputs, DC targets, Fisher weights,
float stage outputs."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from torch import nn

from ..blocks import Unit
from ..progress import ProgressEvent, emit
from .cache import UnitCache, choose_store
from .capture import capture_io, probe_io
from .correction import bn_layers, correct_distribution
from .options import ReconOptions
from .remainder import fisher_weights
from .stage import enclosing_stage
from .trainables import all_float

if TYPE_CHECKING:
    from .engine import ReconContext

__all__ = ["build_unit_cache", "float_block"]


def float_block(fp_model: nn.Module, name: str) -> nn.Module | None:
    """The caller's float module of the same name, if it has BatchNorm layers to correct toward."""
    try:
        block = fp_model.get_submodule(name)
    except AttributeError:
        return None
    return block if bn_layers(block) else None


def _estimate_bytes(ctx: ReconContext, unit: Unit, opts: ReconOptions) -> int:
    with all_float(ctx.qmodel):
        in_shape, out_shape = probe_io(ctx.qmodel, unit.name, ctx.images)
    n_in = 2 + int(opts.dc)  # x_q, x_fp (+ x_dc)
    n_out = 1 + int(opts.dc) + int(opts.rec_loss == "fisher")  # y_fp (+ y_dc, grad)
    per_sample = n_in * math.prod(in_shape) + n_out * math.prod(out_shape)
    stage = enclosing_stage(ctx.qmodel, unit.name) if opts.stage_weight > 0 else None
    if stage is not None:
        with all_float(ctx.qmodel):
            per_sample += math.prod(probe_io(ctx.qmodel, stage, ctx.images)[1])  # y_stage
    return per_sample * len(ctx.images) * ctx.images.element_size()


def _correct(ctx: ReconContext, unit: Unit, index: int, n_units: int, cache: UnitCache, opts: ReconOptions) -> float:
    block = float_block(ctx.fp_model, unit.name)
    if block is None or opts.dc_steps == 0:
        return 0.0
    t0 = time.perf_counter()
    every = max(1, opts.dc_steps // 20)

    def on_step(done: int, total: int) -> None:
        if done % every == 0 or done == total:
            emit(ctx.progress, ProgressEvent("correct", done, total, unit.name, index, n_units,
                                             message=f"{opts.stage}: distribution correction"))  # fmt: skip

    x_dc, y_dc = correct_distribution(block, cache["x_fp"], opts.dc_lambda, opts.dc_steps, opts.dc_lr,
                                      opts.dc_group, opts.dc_chunk, device=ctx.device, on_step=on_step)  # fmt: skip
    cache.put("x_dc", x_dc)
    cache.put("y_dc", y_dc)
    return time.perf_counter() - t0


def build_unit_cache(ctx: ReconContext, unit: Unit, index: int, n_units: int,
                     opts: ReconOptions) -> tuple[UnitCache, float]:  # fmt: skip
    """Cache everything unit `unit` trains on; returns (cache, seconds spent on DC).

    The quantized-model input comes from the model in its current state (finished
    units quantized); the float input/output from the same model with quantization
    off (BatchNorm folded, so it matches the float model).
    """
    store = choose_store(ctx.device, _estimate_bytes(ctx, unit, opts), opts.cache)
    cache = UnitCache(ctx.device)
    with all_float(ctx.qmodel):
        x_fp, y_fp = capture_io(ctx.qmodel, unit.name, ctx.images, ctx.forward_batch, True, store)
    x_q, _ = capture_io(ctx.qmodel, unit.name, ctx.images, ctx.forward_batch, False, store)
    cache.put("x_q", x_q)
    cache.put("x_fp", x_fp)
    cache.put("y_fp", y_fp)
    stage = enclosing_stage(ctx.qmodel, unit.name) if opts.stage_weight > 0 else None
    if stage is not None:  # RepAPQ's stage term: the float output of the enclosing stage
        with all_float(ctx.qmodel):
            _, y_stage = capture_io(ctx.qmodel, stage, ctx.images, ctx.forward_batch, True, store)
        cache.put("y_stage", y_stage)
    dc_seconds = _correct(ctx, unit, index, n_units, cache, opts) if opts.dc else 0.0
    if opts.rec_loss == "fisher":
        if ctx.fp_logits is None:
            raise ValueError("the Fisher loss needs the float logits in the context")
        grad = fisher_weights(ctx.qmodel, unit.name, x_fp, ctx.images, ctx.fp_logits, opts.batch_size, ctx.tails)
        cache.put("grad", grad)
    if store.type == "cpu" and ctx.device.type == "cuda":
        for name, t in cache.tensors.items():
            if not t.is_pinned():
                cache.tensors[name] = t.pin_memory()
    return cache, dc_seconds

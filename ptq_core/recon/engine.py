"""The reconstruction engine: units in forward order, each cached, trained and hardened.

For every unit: cache its inputs/outputs (`build_unit_cache`), optionally correct the
float targets (PD-Quant) and compute Fisher weights (BRECQ), re-observe its
activation ranges if asked, install its trainables, run the optimisation loop
(`train_unit`), then harden (and fold RepAPQ's affine) and switch the unit on for
the units after it. Progress events carry the unit, the step and each loss term; a
callback that raises `RunCancelled` stops the run between steps.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..blocks import Unit, reconstruction_units
from ..modules import QuantLayer, quant_layers
from ..progress import ProgressEvent, emit
from .cache import UnitCache
from .context import ReconContext
from .losses import reconstruction_loss
from .options import ReconOptions
from .prepare_cache import build_unit_cache
from .rounding import RoundingSchedule
from .stage import stage_rest
from .step import StepInputs, step_losses
from .trainables import UnitTrainables, init_unit_act_ranges, unit_trainables

__all__ = ["ReconContext", "UnitRecord", "UnitTrainer", "units_for", "reconstruct", "train_unit", "unit_output_error"]


@dataclass
class UnitRecord:
    """What happened to one unit: timings, cache, loss history, output error before/after, DC and KL path.

    `cache_store` says where the cache lived ("cuda:0", "cpu", "cpu+disk", ...), `spilled_mb`
    how much of it went below its home tier under the memory budget, `disk_mb` how much to disk.

    `dc` says what distribution correction did ("" when off); `kl_path` which way the
    rest of the network ran ("tail", "tail + N skip inputs" or "full forward: why"; ""
    when the pass does not run it).
    """

    name: str
    kind: str
    stage: str
    iters: int
    seconds: float = 0.0
    dc_seconds: float = 0.0
    cache_mb: float = 0.0
    cache_store: str = ""
    spilled_mb: float = 0.0  # beyond the memory budget: host memory (from CUDA) and disk
    disk_mb: float = 0.0
    error_before: float = float("nan")
    error_after: float = float("nan")
    history: list[dict[str, float]] = field(default_factory=list)
    affine: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # layer -> folded g, h
    dc: str = ""
    kl_path: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def units_for(qmodel: nn.Module, example: Tensor, granularity: str, source: str = "graph") -> list[Unit]:
    """Blocks (`reconstruction_units` from `source`), or one unit per quantized layer."""
    units = reconstruction_units(qmodel, example, source)
    if granularity == "block":
        return units
    return [Unit(name, "layer", type(qmodel.get_submodule(name)).__name__, [name]) for u in units for name in u.layers]


@torch.no_grad()
def unit_output_error(
    unit: nn.Module, cache: UnitCache, target: str = "y_fp", samples: int = 256, batch_size: int = 32
) -> float:
    """Output MSE (summed over channels) of the unit on its first `samples` cached quantized inputs.

    Computed `batch_size` samples at a time: at 224x224 a stem unit's output alone is 3 MB
    per image, so 256 at once (with the unit's intermediate tensors) took gigabytes.
    """
    n = min(samples, len(cache))
    total = 0.0
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(start + batch_size, n))
        x_q, y = cache.take(idx, "x_q", target)
        total += float(reconstruction_loss(unit(x_q), y)) * len(idx)
    return total / n


def _every(opts: ReconOptions) -> int:
    return opts.progress_every or max(1, opts.iters // 100)


class UnitTrainer:
    """The optimisers of one unit's installed trainables, one `step` at a time.

    Args:
        inputs: The unit, its cache and the KL targets.
        tr: The installed trainables (`unit_trainables`).
        opts: The pass's settings.
    """

    def __init__(self, inputs: StepInputs, tr: UnitTrainables, opts: ReconOptions) -> None:
        self.inputs, self.tr, self.opts = inputs, tr, opts
        self.schedule = RoundingSchedule(opts.iters, opts.warmup, opts.beta_start, opts.beta_end)
        self.optims = []
        self.act_sched = self.affine_sched = None
        if tr.rounders:
            self.optims.append(torch.optim.Adam(tr.round_params, lr=opts.round_lr))
        if tr.act_params:
            act_opt = torch.optim.Adam(tr.act_params, lr=opts.act_lr)
            self.optims.append(act_opt)
            self.act_sched = torch.optim.lr_scheduler.CosineAnnealingLR(act_opt, opts.iters, 0.0)
        if tr.affines:
            affine_opt = torch.optim.Adam(tr.affine_params, lr=opts.affine_lr)
            self.optims.append(affine_opt)
            self.affine_sched = torch.optim.lr_scheduler.CosineAnnealingLR(affine_opt, opts.iters, 0.0)

    @property
    def idle(self) -> bool:
        """True when the unit has nothing to learn."""
        return not self.optims

    def step(self, step: int, idx: Tensor) -> dict[str, Tensor]:
        """One optimisation step on samples `idx`; returns the loss terms."""
        losses = step_losses(self.inputs, idx, self.opts, self.schedule, step)
        for opt in self.optims:
            opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        for opt in self.optims:
            opt.step()
        if self.act_sched is not None:
            self.act_sched.step()
            self.tr.clamp_scales()
        if self.affine_sched is not None:
            self.affine_sched.step()
            self.tr.clamp_gains()
        return losses


def train_unit(
    ctx: ReconContext,
    unit: Unit,
    index: int,
    n_units: int,
    cache: UnitCache,
    layers: list[QuantLayer],
    opts: ReconOptions,
    folded: dict[str, dict[str, list[float]]] | None = None,
) -> list[dict[str, float]]:
    """Optimise one unit's trainables; returns its loss history (`folded` receives the affine's g, h)."""
    module = ctx.qmodel.get_submodule(unit.name)
    history: list[dict[str, float]] = []
    store = cache.draw_device  # draw where the cache lives (no host-device sync per step), whatever spilled
    gen = torch.Generator(device=store).manual_seed(ctx.seed * 100003 + index)
    with unit_trainables(layers, opts) as tr:
        logits = ctx.tails if opts.kl_weight > 0 else None
        rest = stage_rest(ctx.qmodel, unit.name) if "y_stage" in cache else None
        inputs = StepInputs(ctx.qmodel, unit.name, module, cache, ctx.images, ctx.fp_logits, tr.rounders, logits, rest)
        trainer = UnitTrainer(inputs, tr, opts)
        for step in range(1, 0 if trainer.idle else opts.iters + 1):
            losses = trainer.step(step, torch.randint(len(cache), (opts.batch_size,), generator=gen, device=store))
            if step % _every(opts) == 0 or step == opts.iters:
                point = {"step": float(step), **{k: float(v.detach()) for k, v in losses.items()}}
                history.append(point)
                terms = {k: v for k, v in point.items() if k != "step"}
                emit(
                    ctx.progress,
                    ProgressEvent("reconstruct", step, opts.iters, unit.name, index, n_units, terms, opts.stage),
                )
    if folded is not None:
        folded.update(zip(unit.layers, tr.folded, strict=False))
    return history


def _reconstruct_unit(ctx: ReconContext, unit: Unit, index: int, n_units: int, opts: ReconOptions) -> UnitRecord:
    t0 = time.perf_counter()
    rec = UnitRecord(unit.name, unit.kind, opts.stage, opts.iters)
    module = ctx.qmodel.get_submodule(unit.name)
    layers: list[QuantLayer] = [ctx.qmodel.get_submodule(n) for n in unit.layers]
    emit(ctx.progress, ProgressEvent("cache", 0, 1, unit.name, index, n_units, message=opts.stage))
    for layer in layers:
        layer.set_quant_state(True, opts.quant_act)
    cache, rec.dc_seconds = build_unit_cache(ctx, unit, index, n_units, opts)
    rec.cache_mb, rec.cache_store = cache.nbytes / 2**20, cache.store
    ctx.peak_cache_bytes = max(ctx.peak_cache_bytes, cache.nbytes)
    if cache.placement is not None:
        rec.spilled_mb, rec.disk_mb = cache.placement.spilled / 2**20, cache.placement.on_disk / 2**20
        ctx.spilled_bytes += cache.placement.spilled
        ctx.disk_bytes += cache.placement.on_disk
    if opts.quant_act and opts.act_init == "unit":
        init_unit_act_ranges(module, layers, cache["x_q"], ctx.device)
    rec.error_before = unit_output_error(module, cache)
    rec.history = train_unit(ctx, unit, index, n_units, cache, layers, opts, rec.affine)
    rec.error_after = unit_output_error(module, cache)
    rec.dc = cache.notes.get("dc", "") if opts.dc else ""
    if opts.uses_remainder and ctx.tails is not None:
        rec.kl_path = ctx.tails.path(unit.name)
    rec.seconds = time.perf_counter() - t0
    return rec


def reconstruct(ctx: ReconContext, opts: ReconOptions, units: list[Unit] | None = None) -> list[UnitRecord]:
    """One pass over the model's units, in forward order.

    Before the pass every quantized layer is switched off; each finished unit is
    switched on (weights, and activations when `opts.quant_act`), so later units see
    the quantized prefix. The caller's float model is never modified. Cache files spilled
    to disk are removed when the pass ends, also when it fails or is cancelled.

    Args:
        ctx: The run's shared state.
        opts: The pass's settings.
        units: Units to visit (default: `units_for(..., opts.granularity)`).

    Returns:
        One `UnitRecord` per unit.
    """
    units = units if units is not None else units_for(ctx.qmodel, ctx.images[:2], opts.granularity)
    if opts.uses_remainder:
        ctx.tail_runner(units)
    for _, layer in quant_layers(ctx.qmodel):
        layer.set_quant_state(False, False)
    try:
        return [_reconstruct_unit(ctx, unit, i, len(units), opts) for i, unit in enumerate(units)]
    finally:
        ctx.spill.close()

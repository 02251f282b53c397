"""What the reconstruction methods share: config with presets, and the run around the engine.

Presets:

- ``paper``: the seed papers' settings (1024 calibration images, batch 32, 20 000
  steps per unit, per-architecture lambda / T / lambda_c; docs/methods.md).
- ``fast``: for the CPU and the Fashion-MNIST zoo, used by the app. Shared: 512 images,
  500 steps per unit, AdaRound lr 1e-2 (so a rounding variable can still travel about
  as far as in 20 000 steps at 1e-3); BRECQ: 200 step-size steps; QDrop: step-size lr
  4e-4; PD-Quant: AdaRound lr 3e-2, step-size lr 4e-4 and distribution correction with
  25 Adam steps at lr 2e-2 (on zoo blocks close to the inputs that 500 steps at 1e-3
  reach, at a twentieth of the cost). The measured cost and accuracy of each method are in
  benchmarks/RESULTS.md.

`--iters` and `--calib` (``iters=`` / ``calib=``) override either preset.

Units: ``unit_source`` picks where block units come from ("graph", the default, falls
back to the known block classes and then to layers when the model cannot be traced;
"blocks"; "layers"), ``unit_patterns`` overrides them by module-name pattern (CLI
``--unit``). The plan, with any fallback and its reason, is stored in the result's
``extras["recon"]["unit_plan"]``; each unit's record says what distribution correction
did and which KL path ran.

Memory: ``cache_budget_mb`` (default 16 GiB) bounds what one unit's cache takes on
the device and, again, in host memory; the rest goes to memory-mapped temporary
files that are removed after each pass (`ptq_core.recon.spill`). Results do not
depend on it. ``extras["recon"]`` records ``spilled_mb`` and ``disk_mb`` summed over
units, and each unit record its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..blocks import UNIT_SOURCES, Unit, UnitPlan, find_units
from ..calibrate import calibrate_activations, calibrate_weights
from ..errors import ConfigError
from ..modules import set_quant_state
from ..prepare import prepare
from ..recon import ReconContext, ReconOptions, arch_family, arch_value, float_logits, reconstruct
from ..settings import setting
from .base import MethodConfig, ProgressEvent, ProgressFn, QuantResult, emit

__all__ = ["ReconMethodConfig", "PRESETS", "FAST", "prepare_for_reconstruction", "run_reconstruction"]

PRESETS = ("paper", "fast")

# The fast preset shared by the reconstruction methods (method-specific extras in each config's FAST_EXTRA):
# 500 steps of 32 are about 30 passes over 512 images per unit, enough for the zoo's small blocks.
FAST: dict[str, Any] = {"calib": 512, "iters": 500, "round_lr": 1e-2}


@dataclass
class ReconMethodConfig(MethodConfig):
    """Settings shared by AdaRound, BRECQ, QDrop, PD-Quant and RepAPQ.

    `preset` records where the values came from: `from_preset` fills the fields from
    it, and the fields are what runs.
    """

    FAST_EXTRA: ClassVar[dict[str, Any]] = {}

    preset: str = setting(
        "paper",
        help="where the defaults come from: the papers' settings or the fast "
        "CPU/zoo preset (the fields below are what runs)",
        choices=PRESETS,
    )
    iters: int = setting(20000, help="optimisation steps per unit", min=1)
    recon_batch: int = setting(32, help="samples per optimisation step (32 in the papers)", min=1)
    round_lr: float = setting(1e-3, help="Adam learning rate of the AdaRound variables", min=0)
    round_weight: float | None = setting(
        None, help="AdaRound regulariser weight lambda (unset: the architecture table)", min=0
    )
    warmup: float = setting(0.2, help="fraction of steps before the rounding regulariser starts", min=0, max=1)
    progress_every: int = setting(0, help="steps between progress events (0: about 100 per unit)", min=0)
    cache: str = setting("auto", help="where unit caches live", choices=("auto", "device", "host"))
    cache_budget_mb: float = setting(
        16384.0,
        help="memory one unit's cache may take on the device and again in "
        "host memory; the rest spills to temporary disk files (0: no limit)",
        min=0,
    )
    unit_source: str = setting(
        "graph",
        help="where block units come from: the dataflow graph (falls back to "
        "known block classes, then layers), the known block classes, or one per layer",
        choices=UNIT_SOURCES,
    )
    unit_patterns: list[str] = setting(
        default_factory=list, help="module-name patterns (fnmatch) whose matches become units, overriding the source"
    )

    def validate(self) -> None:
        if self.unit_source not in UNIT_SOURCES:
            raise ConfigError(f"unit_source must be one of {', '.join(UNIT_SOURCES)}, got {self.unit_source!r}")
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}: choose one of {', '.join(PRESETS)}")
        for name in ("iters", "recon_batch"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if self.round_weight is not None and self.round_weight < 0:
            raise ConfigError(f"round_weight must be non-negative, got {self.round_weight}")
        self.base_options().validate()

    @classmethod
    def from_preset(cls, preset: str = "paper", **overrides: Any) -> ReconMethodConfig:
        """A config with a preset's values; keyword arguments that are not None override them.

        Args:
            preset: "paper" or "fast".
            **overrides: Any config field, e.g. ``iters=200, calib=256, quant=QuantSpec(...)``.
        """
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
        values = {**FAST, **cls.FAST_EXTRA} if preset == "fast" else {}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(preset=preset, **values)

    def base_options(self, model: nn.Module | None = None, **changes: Any) -> ReconOptions:
        """Engine options common to every pass of the method."""
        weight = self.round_weight
        if weight is None:
            weight = arch_value(model, "round_weight")
        opts = dict(
            iters=self.iters,
            batch_size=self.recon_batch,
            round_lr=self.round_lr,
            round_weight=weight,
            warmup=self.warmup,
            progress_every=self.progress_every,
            cache=self.cache,
            cache_budget_mb=self.cache_budget_mb,
        )
        opts.update(changes)
        return ReconOptions(**opts)

    def joint_block_options(self, model: nn.Module, act_lr: float, **changes: Any) -> ReconOptions:
        """One pass over blocks that learns rounding and activation step sizes together on quantized
        activations: QDrop's recipe, which PD-Quant and RepAPQ extend with `changes`."""
        return self.base_options(
            model,
            stage="blocks",
            learn_rounding=True,
            learn_act_scale=True,
            quant_act=True,
            act_init="unit",
            act_lr=act_lr,
            **changes,
        )

    def passes(self, model: nn.Module) -> list[ReconOptions]:
        """The engine passes this method runs (overridden by each method)."""
        raise NotImplementedError

    def needs_logits(self) -> bool:
        """Whether any pass needs the float logits (KL term or Fisher weights)."""
        return False


def prepare_for_reconstruction(
    model: nn.Module, calib: torch.Tensor, config: ReconMethodConfig, progress: ProgressFn | None = None
) -> tuple[nn.Module, Any]:
    """Prepared copy with RTN weight and activation ranges, quantization off, parameters frozen."""
    qmodel, report = prepare(model, config.quant, calib[:8])
    emit(progress, ProgressEvent("weights", 0, 1, message="weight ranges"))
    calibrate_weights(qmodel)

    def on_batch(i: int, n: int) -> None:
        emit(progress, ProgressEvent("calibrate", i + 1, n, message="activation ranges"))

    calibrate_activations(qmodel, calib, config.batch_size, on_batch)
    set_quant_state(qmodel, False, False)
    qmodel.requires_grad_(False)
    return qmodel, report


def _pass_units(ctx: ReconContext, plan: UnitPlan, opts: ReconOptions) -> list[Unit]:
    """The plan's units for a block pass; every layer on its own for a layer pass (AdaRound)."""
    if opts.granularity == "block":
        return plan.units
    return [Unit(n, "layer", type(ctx.qmodel.get_submodule(n)).__name__, [n]) for u in plan.units for n in u.layers]


def run_reconstruction(
    model: nn.Module, calib: torch.Tensor, config: ReconMethodConfig, progress: ProgressFn | None = None
) -> QuantResult:
    """Prepare a copy of `model`, run the method's passes over it, switch quantization on.

    The caller's model is only read (float caches, logits and DC blocks come from
    it or from the copy); a cancelled run leaves it exactly as it was.
    """
    devices = [calib.device] if calib.is_cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(config.seed)
        t0 = time.perf_counter()
        qmodel, report = prepare_for_reconstruction(model, calib, config, progress)
        t1 = time.perf_counter()
        logits = float_logits(model, calib, config.batch_size) if config.needs_logits() else None
        ctx = ReconContext(
            qmodel, model, calib, logits, progress, config.batch_size, config.seed, folded=dict(report.folded)
        )
        plan = find_units(qmodel, calib[:2], config.unit_source, config.unit_patterns)
        passes = config.passes(model)
        records = [rec for opts in passes for rec in reconstruct(ctx, opts, _pass_units(ctx, plan, opts))]
        set_quant_state(qmodel, True, True)
    t2 = time.perf_counter()
    dc = sum(r.dc_seconds for r in records)
    timings = {"prepare": t1 - t0, "reconstruct": t2 - t1 - dc, "correct": dc}
    extras = {
        "recon": {
            "arch_family": arch_family(model),
            "peak_cache_mb": ctx.peak_cache_bytes / 2**20,
            "cache_budget_mb": config.cache_budget_mb,
            "spilled_mb": ctx.spilled_bytes / 2**20,
            "disk_mb": ctx.disk_bytes / 2**20,
            "passes": [o.to_dict() for o in passes],
            "units": [r.to_dict() for r in records],
            "unit_plan": plan.to_dict(),
        }
    }
    return QuantResult(qmodel, config, report, timings=timings, extras=extras)

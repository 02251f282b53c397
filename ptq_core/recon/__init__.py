"""Reconstruction engine shared by AdaRound, BRECQ, QDrop, PD-Quant and RepAPQ.

One concept per module: `options` (a pass's settings), `capture` (scoped hooks that
raise `ptq_core.hooks.StopForward`), `cache` (per-unit tensors on device or host),
`rounding` (AdaRound), `losses` (MSE / MAE / Fisher / KL), `remainder` (the real rest
of the network), `tail` (that rest traced once, when it can be), `correction`
(PD-Quant's distribution correction), `affine` (RepAPQ's protecting affine and its
exact fold), `stage` (the enclosing stage for RepAPQ's stage-output term),
`trainables` (install and harden), `step` (one step's loss terms), `context` (what
every unit of a run shares), `prepare_cache` (one unit's cache), `engine` (the unit
loop), `arch` (per-architecture defaults).
"""

from __future__ import annotations

from .arch import ARCH_PARAMS, ArchParams, arch_family, arch_params, arch_value
from .cache import UnitCache, choose_store
from .capture import StopForward, capture_io, module_input_output
from .context import ReconContext
from .correction import bn_statistics_loss, constraint_loss, correct_distribution
from .engine import UnitRecord, reconstruct, train_unit, unit_output_error, units_for
from .losses import prediction_kl, reconstruction_loss
from .options import ReconOptions
from .remainder import fisher_weights, float_logits, logits_with_unit_output, unit_output_replaced
from .rounding import AdaRoundQuantizer, RoundingSchedule, rectified_sigmoid, rounding_regularizer
from .tail import TailRunner
from .trainables import all_float

__all__ = [
    "ARCH_PARAMS",
    "AdaRoundQuantizer",
    "ArchParams",
    "ReconContext",
    "ReconOptions",
    "RoundingSchedule",
    "StopForward",
    "TailRunner",
    "UnitCache",
    "UnitRecord",
    "all_float",
    "arch_family",
    "arch_params",
    "arch_value",
    "bn_statistics_loss",
    "capture_io",
    "choose_store",
    "constraint_loss",
    "correct_distribution",
    "fisher_weights",
    "float_logits",
    "logits_with_unit_output",
    "module_input_output",
    "prediction_kl",
    "reconstruct",
    "reconstruction_loss",
    "rectified_sigmoid",
    "rounding_regularizer",
    "train_unit",
    "unit_output_error",
    "unit_output_replaced",
    "units_for",
]

"""Rebuild a stored run: quantize again from its description and check it against the stored numbers.

Runs are stored without their model. A saved run is rebuilt by running its `RunSpec` again
(same model, data, method settings and seed, so the same calibration images and the same
random draws) and the rebuilt top-1 must equal the stored one before anything is exported
or reported from it. A run stored before runs kept their description cannot be rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .data import DataBundle, load_data
from .errors import ConfigError
from .methods import ProgressFn, QuantResult
from .models import LoadedModel, load_model, resolve_device
from .pipeline import RunResult, quantize_and_evaluate
from .spec import RunSpec
from .store import RunRecord

__all__ = ["RebuiltRun", "stored_spec", "rebuild_run", "TOP1_TOLERANCE"]

TOP1_TOLERANCE = 1e-6  # percentage points: a rebuild on the same software gives the same images right


def stored_spec(record: RunRecord) -> RunSpec:
    """The description a stored run was made from (ConfigError for runs stored before descriptions)."""
    if not record.spec:
        raise ConfigError(
            f"run {record.run_id} was stored before runs kept their description; it cannot be "
            "rebuilt exactly (its method settings are in runs show)"
        )
    return RunSpec.from_dict(record.spec)


@dataclass
class RebuiltRun:
    """A stored run quantized again, with what it measured this time."""

    record: RunRecord
    spec: RunSpec
    loaded: LoadedModel
    bundle: DataBundle
    device: torch.device
    result: RunResult
    quantized: QuantResult

    @property
    def top1_diff(self) -> float:
        """Rebuilt minus stored top-1, in points."""
        return float(self.result.metrics["top1"]) - float(self.record.metrics["top1"])

    @property
    def reproduced(self) -> bool:
        """Whether the rebuild gives the stored top-1."""
        return abs(self.top1_diff) <= TOP1_TOLERANCE


def rebuild_run(record: RunRecord, progress: ProgressFn | None = None, strict: bool = True) -> RebuiltRun:
    """Quantize `record`'s run again from its description and measure it the same way.

    Args:
        record: A finished run of the store.
        progress: Receives the run's `ProgressEvent`s.
        strict: Raise when the rebuilt top-1 differs from the stored one.

    Raises:
        ConfigError: For a run that did not finish, has no description, or does not reproduce.
    """
    if record.status != "done":
        raise ConfigError(f"run {record.run_id} is {record.status}: only finished runs can be rebuilt")
    spec = stored_spec(record)
    device = resolve_device(spec.device)
    loaded = load_model(spec.model, spec.weights, device)
    bundle = load_data(spec.data, loaded.transform)
    result, qres = quantize_and_evaluate(spec, loaded, bundle, device, progress)
    rebuilt = RebuiltRun(record, spec, loaded, bundle, device, result, qres)
    if strict and not rebuilt.reproduced:
        raise ConfigError(
            f"run {record.run_id} rebuilt to top-1 {result.metrics['top1']:.4f} but "
            f"{record.metrics['top1']:.4f} was stored (software or hardware changed?); "
            "nothing was exported"
        )
    return rebuilt

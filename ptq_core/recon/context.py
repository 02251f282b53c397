"""What every unit of a reconstruction run shares: the models, the calibration images, the callbacks.

Its own module so that building a unit's cache (`prepare_cache`) and the unit loop
(`engine`) both take it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..blocks import Unit
from ..progress import ProgressFn
from .spill import SpillArea
from .tail import TailRunner

__all__ = ["ReconContext"]


@dataclass
class ReconContext:
    """What every unit of a run shares.

    Attributes:
        qmodel: The prepared model being reconstructed (modified in place).
        fp_model: The caller's float model with BatchNorm (read only; DC uses its blocks).
        images: Calibration images on the compute device [N, ...].
        fp_logits: Float logits [N, classes] for the KL term / Fisher weights, or None.
        progress: Progress callback (may raise `RunCancelled`).
        forward_batch: Batch size of caching passes.
        seed: Seed of the mini-batch draws.
        folded: Layer name -> the BatchNorm folded into it (distribution correction of layer units).
        spill: Temporary directory of cache tensors beyond the memory budget (removed after each pass).
        peak_cache_bytes, spilled_bytes, disk_bytes: The largest unit cache, and the bytes placed
            below their home tier (host memory from CUDA, or disk) and on disk, summed over units.
    """

    qmodel: nn.Module
    fp_model: nn.Module
    images: Tensor
    fp_logits: Tensor | None = None
    progress: ProgressFn | None = None
    forward_batch: int = 128
    seed: int = 0
    peak_cache_bytes: int = 0
    tails: TailRunner | None = None
    folded: dict[str, str] = field(default_factory=dict)
    spill: SpillArea = field(default_factory=SpillArea)
    spilled_bytes: int = 0
    disk_bytes: int = 0

    def tail_runner(self, units: list[Unit]) -> TailRunner:
        """The (cached) runner of the network's rest after each of `units`."""
        names = [u.name for u in units]
        if self.tails is None or self.tails.unit_names != names:
            self.tails = TailRunner(self.qmodel, names)
        return self.tails

    @property
    def device(self) -> torch.device:
        return self.images.device

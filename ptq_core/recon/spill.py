"""Where each tensor of a unit's cache lives under a memory budget: device, host memory or a disk file.

A unit's cache (`UnitCache`) is allocated tensor by tensor through a `TieredStore`.
Its home is the tier `choose_store` picks (the compute device when the cache fits
there, else host memory). The budget bounds every memory tier on its own: on CUDA
at most `budget` bytes of the unit's cache go to the device, then at most `budget`
bytes to (pinned) host memory; on the CPU at most `budget` bytes stay in memory.
What does not fit goes to a memory-mapped temporary file (`torch.from_file`), read
back a mini-batch at a time. A budget of 0 means no limit.

The files live in a `SpillArea` (a temporary directory made on first use, under
``$TMPDIR``). Each file is unlinked as soon as it is mapped, so the disk space is
returned when the tensor is freed, and nothing is left behind even when the run is
cancelled or the process dies; `SpillArea.close` removes the directory.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SpillArea", "TieredStore", "TIERS"]

TIERS = ("device", "host", "disk")


class SpillArea:
    """A temporary directory for memory-mapped cache files, made when first needed."""

    def __init__(self, parent: str | None = None) -> None:
        self.parent = parent
        self.path: str | None = None
        self._count = 0

    def mapped(self, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """A zero-filled CPU tensor backed by a fresh file in the area (the file is already unlinked)."""
        if self.path is None:
            self.path = tempfile.mkdtemp(prefix="ptq-cache-", dir=self.parent)
        self._count += 1
        path = os.path.join(self.path, f"t{self._count}.bin")
        flat = torch.from_file(path, shared=True, size=math.prod(shape), dtype=dtype)
        os.unlink(path)  # the mapping keeps the pages; the name is gone whatever happens next
        return flat.view(shape)

    def close(self) -> None:
        """Remove the directory (tensors already mapped stay valid until freed)."""
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None


@dataclass
class TieredStore:
    """Allocator of one unit's cache tensors under a per-tier memory budget.

    Args:
        device: The compute device.
        home: Where the cache would live without a budget (`choose_store`).
        budget: Bytes each memory tier may hold (0: no limit).
        area: Where disk-tier files go.
    """

    device: torch.device
    home: torch.device
    budget: int
    area: SpillArea

    def __post_init__(self) -> None:
        self.used = dict.fromkeys(TIERS, 0)

    def _place(self, nbytes: int) -> str:
        """The tier for `nbytes` more bytes (counted as used there)."""
        fits = [t for t in ("device", "host") if self.budget == 0 or self.used[t] + nbytes <= self.budget]
        if self.home.type == "cuda" and "device" in fits:
            tier = "device"
        else:
            tier = "host" if "host" in fits else "disk"
        self.used[tier] += nbytes
        return tier

    def _alloc(self, tier: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        if tier == "device":
            return torch.empty(shape, dtype=dtype, device=self.home)
        if tier == "host":
            return torch.empty(shape, dtype=dtype, pin_memory=self.device.type == "cuda")
        return self.area.mapped(shape, dtype)

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """An uninitialised tensor [shape] in the highest tier with room left."""
        shape = tuple(shape)
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        return self._alloc(self._place(nbytes), shape, dtype)

    def hold(self, t: Tensor) -> Tensor:
        """`t` detached, in the highest tier with room left (not copied when it already lives there)."""
        t = t.detach()
        tier = self._place(t.numel() * t.element_size())
        if tier == "device" and t.device == self.home:
            return t
        if tier == "host" and t.device.type == "cpu" and (self.device.type != "cuda" or t.is_pinned()):
            return t
        out = self._alloc(tier, tuple(t.shape), t.dtype)
        out.copy_(t)
        return out

    @property
    def spilled(self) -> int:
        """Bytes placed below the home tier (host memory for a CUDA home, and disk)."""
        return self.used["disk"] + (self.used["host"] if self.home.type == "cuda" else 0)

    @property
    def on_disk(self) -> int:
        """Bytes in memory-mapped files."""
        return self.used["disk"]

    def describe(self) -> str:
        """Where the cache lives, e.g. "cuda:0", "cpu", "cuda:0+cpu+disk"."""
        names = {"device": str(self.home) if self.home.type == "cuda" else "cpu", "host": "cpu", "disk": "disk"}
        used = [names[t] for t in TIERS if self.used[t]]
        return "+".join(dict.fromkeys(used)) or str(self.home)

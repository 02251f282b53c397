"""Cached tensors of one reconstruction unit, on the device or in host memory.

For each unit the engine keeps, for every calibration image: the unit's input in
the partly quantized model (``x_q``), its input and output in the float model
(``x_fp``, ``y_fp``), and optionally the corrected float input/output of PD-Quant
(``x_dc``, ``y_dc``), BRECQ's Fisher weights (``grad``) and, for the KL tail, the
values computed before the unit that are used after it (``skip_0``, ...). They stay on the
compute device when they fit, else in (pinned) host memory, and each step fetches
only its mini-batch. Under a memory budget (`spill.TieredStore`) what does not fit
goes to host memory (from CUDA) and then to memory-mapped temporary files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .spill import TieredStore

__all__ = ["UnitCache", "choose_store", "DEVICE_FRACTION"]

DEVICE_FRACTION = 0.5  # the cache may take at most this share of the free device memory


def choose_store(device: torch.device, nbytes: int, mode: str = "auto") -> torch.device:
    """Where a cache of `nbytes` should live.

    Args:
        device: Compute device.
        nbytes: Expected size of the unit's cache.
        mode: "auto", "device" or "host".

    Returns:
        `device`, or the CPU when the cache would not fit (CUDA) or "host" was asked for.
    """
    if device.type != "cuda" or mode == "device":
        return device
    if mode == "host":
        return torch.device("cpu")
    free, _total = torch.cuda.mem_get_info(device)
    return device if nbytes <= DEVICE_FRACTION * free else torch.device("cpu")


@dataclass
class UnitCache:
    """Named per-sample tensors of one unit, all with the same first dimension N.

    Tensors may live on different tiers (device, host, disk); `home` is the tier the whole
    cache would take without a memory budget, so draws do not depend on the budget.
    `skips` names the cached values crossing the unit's cut, in the KL tail's order
    (None: not captured, so the KL term runs the full forward).
    """

    device: torch.device
    tensors: dict[str, Tensor] = field(default_factory=dict)
    home: torch.device | None = None  # where the cache lives without a budget (mini-batch draws happen there)
    placement: TieredStore | None = None  # what went to which tier, when built under a budget
    skips: list[str] | None = None
    notes: dict[str, str] = field(default_factory=dict)  # e.g. "dc": what the correction did

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values()))) if self.tensors else 0

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def __getitem__(self, name: str) -> Tensor:
        return self.tensors[name]

    def put(self, name: str, value: Tensor) -> None:
        """Add or replace a tensor [N, ...]."""
        if self.tensors and len(value) != len(self):
            raise ValueError(f"cached {name!r} has {len(value)} samples, expected {len(self)}")
        self.tensors[name] = value

    def take(self, idx: Tensor, *names: str) -> list[Tensor]:
        """The rows `idx` of each named tensor, on the compute device."""
        out = []
        for name in names:
            t = self.tensors[name]
            rows = t[idx if idx.device == t.device else idx.to(t.device)]
            out.append(rows.to(self.device, non_blocking=True))
        return out

    @property
    def nbytes(self) -> int:
        """Total bytes held."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    @property
    def draw_device(self) -> torch.device:
        """Where mini-batch indices are drawn: the home tier (independent of any spill)."""
        if self.home is not None:
            return self.home
        return next(iter(self.tensors.values())).device if self.tensors else self.device

    @property
    def store(self) -> str:
        """Where the tensors live ("cuda:0", "cpu", "cpu+disk", ...)."""
        if self.placement is not None:
            return self.placement.describe()
        return str(next(iter(self.tensors.values())).device) if self.tensors else str(self.device)

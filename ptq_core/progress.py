"""Progress events: what a running method reports, for progress bars and live loss charts.

The lowest layer of the core (no other ptq_core import), so the engine, the methods and
the pipeline can all report progress without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["ProgressEvent", "ProgressFn", "emit"]


@dataclass
class ProgressEvent:
    """One step of a running method, for progress bars and live loss charts.

    `stage` names the phase ("prepare", "calibrate", "reconstruct", ...);
    `unit` the layer or block being worked on; `losses` the current loss terms.
    """

    stage: str
    step: int
    total: int
    unit: str = ""
    unit_index: int = 0
    num_units: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    message: str = ""


# a callback may raise `RunCancelled` to stop a run between steps
ProgressFn = Callable[[ProgressEvent], None]


def emit(progress: ProgressFn | None, event: ProgressEvent) -> None:
    """Send an event if there is a listener."""
    if progress is not None:
        progress(event)

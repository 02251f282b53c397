"""Background jobs: one worker thread per job, progress collected thread-safely, cancel by event.

The worker only calls the job function and `Job.progress`; it never touches
Streamlit. The page keeps the `Job` in `st.session_state` and a fragment polls
`Job.snapshot()`. With `PTQ_UI_SYNC_JOBS=1` the function runs inline instead
(AppTest cannot tick `run_every` fragments).
"""

from __future__ import annotations

import os
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ptq_core.errors import PTQError, RunCancelled
from ptq_core.methods import ProgressEvent

__all__ = ["Job", "JobSnapshot", "start_job", "sync_jobs", "fraction"]

_MAX_LOSS_POINTS = 5000  # loss history kept for the live chart


def sync_jobs() -> bool:
    """True when jobs must run inline (tests): env `PTQ_UI_SYNC_JOBS=1`."""
    return os.environ.get("PTQ_UI_SYNC_JOBS", "") not in ("", "0", "false")


def fraction(ev: ProgressEvent | None) -> float:
    """How far the event's stage is, 0-1: its step within its unit, and the unit among the units."""
    if ev is None:
        return 0.0
    frac = ev.step / ev.total if ev.total else 0.0
    if ev.num_units:
        frac = (min(ev.unit_index, ev.num_units - 1) + frac) / ev.num_units
    return max(0.0, min(1.0, frac))


def _eta(frac: float, start_frac: float, stage_elapsed: float) -> float | None:
    """Seconds left at the current stage's pace: it went from `start_frac` to `frac` in `stage_elapsed`.

    None until the stage has gone far enough to say.
    """
    done = frac - start_frac
    if done < 0.02 or stage_elapsed < 1.0:
        return None
    return stage_elapsed * (1.0 - frac) / done


@dataclass
class JobSnapshot:
    """A consistent copy of a job's state for drawing."""

    status: str  # "running", "done", "failed", "cancelled"
    last: ProgressEvent | None
    losses: list[dict[str, Any]]
    events: int
    elapsed: float
    error: str | None
    result: Any
    cancel_requested: bool
    eta: float | None = None  # seconds left in the current stage, at its pace so far
    stage: str = ""


@dataclass
class Job:
    """One background computation and what it has reported so far."""

    label: str
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    status: str = "running"
    started: float = field(default_factory=time.time)
    finished: float | None = None
    result: Any = None
    error: str | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _last: ProgressEvent | None = None
    _losses: list[dict[str, Any]] = field(default_factory=list)
    _events: int = 0
    _stage: str = ""
    _stage_started: float = 0.0
    _stage_frac: float = 0.0
    thread: threading.Thread | None = None

    def progress(self, event: ProgressEvent) -> None:
        """Progress callback for the core: record the event; raise `RunCancelled` if asked to stop."""
        with self._lock:
            if event.stage != self._stage:
                self._stage, self._stage_started, self._stage_frac = event.stage, time.time(), fraction(event)
            self._last = event
            self._events += 1
            for name, value in (event.losses or {}).items():
                self._losses.append({"point": self._events, "stage": event.stage, "unit": event.unit,
                                     "unit_index": event.unit_index, "step": event.step, "total": event.total,
                                     "loss": name, "value": float(value)})  # fmt: skip
            if len(self._losses) > _MAX_LOSS_POINTS:  # long runs: keep every other point
                self._losses = self._losses[::2]
        if self.cancel_event.is_set():
            raise RunCancelled("run cancelled by the user")

    def cancel(self) -> None:
        """Ask the worker to stop at its next progress event."""
        self.cancel_event.set()

    @property
    def running(self) -> bool:
        """True until the job function has returned or raised."""
        return self.status == "running"

    def snapshot(self) -> JobSnapshot:
        """Copy the state under the lock."""
        with self._lock:
            end = self.finished or time.time()
            eta = None if self.finished else _eta(fraction(self._last), self._stage_frac, end - self._stage_started)
            return JobSnapshot(self.status, self._last, list(self._losses), self._events, end - self.started,
                               self.error, self.result, self.cancel_event.is_set(), eta, self._stage)  # fmt: skip

    def _run(self, fn: Callable[[Callable[[ProgressEvent], None]], Any]) -> None:
        try:
            result = fn(self.progress)
            status, error = "done", None
        except RunCancelled as exc:
            result, status, error = None, "cancelled", str(exc)
        except PTQError as exc:
            result, status, error = None, "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - shown on the page, never lost in the thread
            traceback.print_exc()
            result, status, error = None, "failed", f"{type(exc).__name__}: {str(exc).strip() or 'no message'}"
        with self._lock:
            self.result, self.status, self.error, self.finished = result, status, error, time.time()


def start_job(fn: Callable[[Callable[[ProgressEvent], None]], Any], label: str, sync: bool | None = None) -> Job:
    """Run `fn(progress)` on a daemon thread (or inline when `sync`) and return its `Job`."""
    job = Job(label)
    if sync if sync is not None else sync_jobs():
        job._run(fn)
        return job
    job.thread = threading.Thread(target=job._run, args=(fn,), name=f"ptq-job-{job.job_id}", daemon=True)
    job.thread.start()
    return job

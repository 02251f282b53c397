"""Background jobs: one worker thread per job, a process-wide queue, progress collected thread-safely.

The worker only calls the job function and `Job.progress`; it never touches
Streamlit. The page keeps the `Job` in `st.session_state` and a fragment polls
`Job.snapshot()`. With `PTQ_UI_SYNC_JOBS=1` the function runs inline instead
(AppTest cannot tick `run_every` fragments).

The queue: every session of the server shares one `JobQueue`. At most `slots` jobs run
at once (env `PTQ_MAX_JOBS`, default one per 2 cores); the others wait in arrival order,
see their place, and can be cancelled while they wait. Each job sets its own torch
thread budget when it starts (env `PTQ_JOB_THREADS`, default cores // slots).
`torch.set_num_threads` is process-wide in name, but with torch's OpenMP backend (the
CPU wheels' default) it sets the calling thread's OpenMP team size, and a thread that
never called it takes the last value set anywhere: so each worker thread calls it once
with its budget before any torch work, and the jobs' teams add up to at most the cores.
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
from ptq_core.explain import set_threads
from ptq_core.methods import ProgressEvent

__all__ = ["Job", "JobQueue", "JobSnapshot", "job_queue", "start_job", "sync_jobs", "fraction"]

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

    status: str  # "queued", "running", "done", "failed", "cancelled"
    last: ProgressEvent | None
    losses: list[dict[str, Any]]
    events: int
    elapsed: float
    error: str | None
    result: Any
    cancel_requested: bool
    position: int | None = None  # 1 = next to start, while queued
    running_jobs: int = 0  # jobs running in the whole server, while queued
    eta: float | None = None  # seconds left in the current stage, at its pace so far
    stage: str = ""


class JobQueue:
    """At most `slots` jobs run at once; the others wait in arrival order (cancellable while waiting).

    Args:
        slots: Jobs that may run at the same time (at least 1).
        threads: torch threads each running job uses (None: leave torch as it is).
    """

    def __init__(self, slots: int, threads: int | None = None) -> None:
        self.slots = max(1, int(slots))
        self.threads = threads
        self._cond = threading.Condition()
        self._waiting: list[Job] = []
        self._running: list[Job] = []

    def wait_turn(self, job: Job) -> bool:
        """Block until `job` may run (True), or until it is cancelled while waiting (False)."""
        with self._cond:
            self._waiting.append(job)
            try:
                while True:
                    if job.cancel_event.is_set():
                        return False
                    if self._waiting[0] is job and len(self._running) < self.slots:
                        self._running.append(job)
                        return True
                    self._cond.wait(0.25)
            finally:
                self._waiting.remove(job)
                self._cond.notify_all()

    def done(self, job: Job) -> None:
        """`job` has finished: its slot goes to the next waiting job."""
        with self._cond:
            if job in self._running:
                self._running.remove(job)
            self._cond.notify_all()

    def position(self, job: Job) -> int | None:
        """1-based place of a waiting job (None when it is not waiting)."""
        with self._cond:
            return self._waiting.index(job) + 1 if job in self._waiting else None

    def counts(self) -> tuple[int, int]:
        """(running, waiting) jobs right now."""
        with self._cond:
            return len(self._running), len(self._waiting)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else default


_QUEUE: JobQueue | None = None
_QUEUE_LOCK = threading.Lock()


def job_queue() -> JobQueue:
    """The server's one queue, sized from `PTQ_MAX_JOBS` and `PTQ_JOB_THREADS` when first used."""
    global _QUEUE
    with _QUEUE_LOCK:
        if _QUEUE is None:
            cores = os.cpu_count() or 2
            slots = _env_int("PTQ_MAX_JOBS", max(1, cores // 2))
            _QUEUE = JobQueue(slots, _env_int("PTQ_JOB_THREADS", max(1, cores // slots)))
        return _QUEUE


@dataclass
class Job:
    """One background computation and what it has reported so far."""

    label: str
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    status: str = "queued"
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
    queue: JobQueue | None = None

    def progress(self, event: ProgressEvent) -> None:
        """Progress callback for the core: record the event; raise `RunCancelled` if asked to stop."""
        with self._lock:
            if event.stage != self._stage:
                self._stage, self._stage_started, self._stage_frac = event.stage, time.time(), fraction(event)
            self._last = event
            self._events += 1
            for name, value in (event.losses or {}).items():
                self._losses.append(
                    {
                        "point": self._events,
                        "stage": event.stage,
                        "unit": event.unit,
                        "unit_index": event.unit_index,
                        "step": event.step,
                        "total": event.total,
                        "loss": name,
                        "value": float(value),
                    }
                )
            if len(self._losses) > _MAX_LOSS_POINTS:  # long runs: keep every other point
                self._losses = self._losses[::2]
        if self.cancel_event.is_set():
            raise RunCancelled("run cancelled by the user")

    def cancel(self) -> None:
        """Ask the worker to stop at its next progress event."""
        self.cancel_event.set()

    @property
    def running(self) -> bool:
        """True until the job function has returned or raised (also while it waits in the queue)."""
        return self.status in ("queued", "running")

    @property
    def queued(self) -> bool:
        """True while the job waits for a free slot."""
        return self.status == "queued"

    def snapshot(self) -> JobSnapshot:
        """Copy the state under the lock."""
        position = self.queue.position(self) if self.queue is not None and self.queued else None
        running_jobs = self.queue.counts()[0] if position is not None else 0
        with self._lock:
            end = self.finished or time.time()
            eta = None if self.finished else _eta(fraction(self._last), self._stage_frac, end - self._stage_started)
            return JobSnapshot(
                self.status,
                self._last,
                list(self._losses),
                self._events,
                end - self.started,
                self.error,
                self.result,
                self.cancel_event.is_set(),
                position,
                running_jobs,
                eta,
                self._stage,
            )

    def _run(self, fn: Callable[[Callable[[ProgressEvent], None]], Any]) -> None:
        if self.queue is not None and not self.queue.wait_turn(self):
            with self._lock:
                self.status, self.finished = "cancelled", time.time()
                self.error = "cancelled while waiting in the queue"
            return
        try:
            with self._lock:
                self.status, self.started = "running", time.time()
            if self.queue is not None and self.queue.threads:
                set_threads(self.queue.threads)  # the budget of this worker thread (see the module docstring)
            result = fn(self.progress)
            status, error = "done", None
        except RunCancelled as exc:
            result, status, error = None, "cancelled", str(exc)
        except PTQError as exc:
            result, status, error = None, "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - shown on the page, never lost in the thread
            traceback.print_exc()
            result, status, error = None, "failed", f"{type(exc).__name__}: {str(exc).strip() or 'no message'}"
        finally:
            if self.queue is not None:
                self.queue.done(self)
        with self._lock:
            self.result, self.status, self.error, self.finished = result, status, error, time.time()


def start_job(
    fn: Callable[[Callable[[ProgressEvent], None]], Any],
    label: str,
    sync: bool | None = None,
    queue: JobQueue | None = None,
) -> Job:
    """Run `fn(progress)` on a daemon thread (or inline when `sync`) and return its `Job`.

    With a `queue`, the thread first waits for a free slot there (the job is "queued" meanwhile).
    """
    job = Job(label)
    if sync if sync is not None else sync_jobs():
        job._run(fn)
        return job
    job.queue = queue
    job.thread = threading.Thread(target=job._run, args=(fn,), name=f"ptq-job-{job.job_id}", daemon=True)
    job.thread.start()
    return job

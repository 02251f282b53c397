"""Running many independent tasks on Ray: on this machine, or on a cluster with the same call.

`ray_map(fn, args, options)` runs ``fn(*a)`` for every ``a`` in `args` as a Ray task and hands
each result back to the caller as soon as it arrives, so the caller can store it at once
and an interruption loses no finished task. Ray is imported only here and only when called,
so the rest of the package works without it.

Thread budget: each task asks Ray for `cpus_per_task` CPUs and sets torch to as many
threads, so N tasks on a machine never run more than N x `cpus_per_task` threads.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

__all__ = ["RayOptions", "TaskState", "ray_session", "ray_map", "with_threads"]


@dataclass
class RayOptions:
    """Where and how tasks run.

    Attributes:
        address: A running Ray cluster (``host:6379`` or ``ray://host:10001``); None starts
            Ray on this machine for the duration of the call.
        workers: At most this many tasks at once (None: as many as Ray's resources allow).
            On this machine it is also the number of CPUs Ray is given (times `cpus_per_task`).
        cpus_per_task: CPUs each task asks for, and its torch threads.
        gpus_per_task: GPUs a task that runs on CUDA asks for.
        isolate: One fresh worker process per task (its memory is its own), at the cost of
            starting Python and torch each time.
    """

    address: str | None = None
    workers: int | None = None
    cpus_per_task: int = 1
    gpus_per_task: float = 1.0
    isolate: bool = False

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got {self.workers}")
        if self.cpus_per_task < 1:
            raise ConfigError(f"cpus per task must be at least 1, got {self.cpus_per_task}")


@dataclass
class TaskState:
    """How far a `ray_map` is: tasks `total`, `finished`, `running` (submitted, not back yet)."""

    total: int
    finished: int = 0
    running: int = 0
    started: float = 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far (None before the first task is back)."""
        if not self.finished:
            return None
        return (time.monotonic() - self.started) / self.finished * (self.total - self.finished)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("sweeps run on Ray: pip install 'ray>=2.9'") from None
    return ray


@contextmanager
def ray_session(options: RayOptions) -> Iterator[Any]:
    """Connect to Ray (start it here when `options.address` is None); yields the `ray` module.

    A Ray already initialised in this process is used as it is and left running; one started
    here is shut down on exit.
    """
    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
        if options.address is None and options.workers is not None:
            kwargs["num_cpus"] = options.workers * options.cpus_per_task
        try:
            ray.init(address=options.address, **kwargs)
        except ConnectionError as exc:
            raise ConfigError(f"cannot reach the Ray cluster at {options.address}: {exc}") from None
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def with_threads(fn: Callable[..., Any], threads: int, *args: Any) -> Any:
    """Run ``fn(*args)`` with torch limited to `threads` threads (the task's CPUs)."""
    import torch

    torch.set_num_threads(threads)
    return fn(*args)


def ray_map(
    fn: Callable[..., Any],
    args: Sequence[tuple[Any, ...]],
    options: RayOptions,
    on_result: Callable[[int, Any], None],
    on_state: Callable[[TaskState], None] | None = None,
    gpu: Sequence[bool] | None = None,
) -> None:
    """Run ``fn(*args[i])`` on Ray for every i; ``on_result(i, result)`` as each comes back.

    Args:
        fn: A module-level function (Ray pickles it by reference).
        args: One argument tuple per task.
        options: Where and how to run.
        on_result: Called on this machine, in completion order, with the result or, when the
            task itself died (its worker crashed or was killed), the exception.
        on_state: Called after every submission and completion (a progress bar).
        gpu: Per task, whether it asks for `options.gpus_per_task` GPUs.

    On KeyboardInterrupt (or an exception from a callback) the tasks not yet back are
    cancelled and the exception propagates; every result already handed over stays.
    """
    state = TaskState(total=len(args), started=time.monotonic())
    with ray_session(options) as ray, _interrupt_flag() as interrupted:
        remote = ray.remote(max_calls=1)(with_threads) if options.isolate else ray.remote(with_threads)
        queue = list(range(len(args)))
        pending: dict[Any, int] = {}
        cap = options.workers or len(args)
        try:
            while queue or pending:
                while queue and len(pending) < cap:
                    i = queue.pop(0)
                    gpus = options.gpus_per_task if gpu is not None and gpu[i] else 0
                    opts = {"num_cpus": options.cpus_per_task, "num_gpus": gpus, "max_retries": 0}
                    ref = remote.options(**opts).remote(fn, options.cpus_per_task, *args[i])
                    pending[ref] = i
                state.running = len(pending)
                _notify(on_state, state)
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                if interrupted.is_set():
                    raise KeyboardInterrupt
                for ref in ready:
                    i = pending.pop(ref)
                    on_result(i, _get(ray, ref))
                    state.finished += 1
                    state.running = len(pending)
                    _notify(on_state, state)
        except BaseException:
            for ref in pending:
                with suppress(Exception):
                    ray.cancel(ref, force=True)
            raise


@contextmanager
def _interrupt_flag() -> Iterator[threading.Event]:
    """Ctrl-C (SIGINT) sets the yielded flag instead of raising inside Ray's calls, where it can be lost.

    Outside the main thread (the app's jobs) signals are not ours: the flag is never set.
    """
    flag = threading.Event()
    try:
        previous = signal.signal(signal.SIGINT, lambda *_: flag.set())
    except ValueError:  # not the main thread
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _get(ray: Any, ref: Any) -> Any:
    """The task's result, or the exception that ended it (a crashed or killed worker)."""
    try:
        return ray.get(ref)
    except Exception as exc:  # noqa: BLE001 - handed to the caller, which records it
        return exc


def _notify(on_state: Callable[[TaskState], None] | None, state: TaskState) -> None:
    if on_state is not None:
        on_state(state)

"""The job queue: at most N jobs at once, the others wait in order with their place, cancel while queued."""

from __future__ import annotations

import threading
import time

import torch

from ptq_ui.jobs import JobQueue, start_job


def _wait(cond, timeout: float = 10.0) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def _blocking(gate: threading.Event, seen: list, name: str):
    def work(progress):
        seen.append((name, torch.get_num_threads()))
        gate.wait(10)
        return name

    return work


def test_one_slot_queues_the_second_job_and_a_queued_job_can_be_cancelled():
    q = JobQueue(1, threads=1)
    gate, seen = threading.Event(), []
    a = start_job(_blocking(gate, seen, "a"), "a", sync=False, queue=q)
    _wait(lambda: a.status == "running")
    b = start_job(_blocking(gate, seen, "b"), "b", sync=False, queue=q)
    c = start_job(_blocking(gate, seen, "c"), "c", sync=False, queue=q)
    _wait(lambda: q.counts() == (1, 2))
    assert (b.snapshot().position, c.snapshot().position) == (1, 2)
    assert b.snapshot().running_jobs == 1 and b.running and b.queued
    b.cancel()
    _wait(lambda: not b.running)
    assert b.status == "cancelled" and "queue" in b.error
    assert c.snapshot().position == 1  # moved up
    gate.set()
    _wait(lambda: not c.running)
    assert (a.result, c.result) == ("a", "c")
    assert [name for name, _ in seen] == ["a", "c"]  # b never ran
    assert q.counts() == (0, 0)


def test_two_slots_run_two_jobs_at_once_each_with_its_thread_budget():
    before = torch.get_num_threads()
    q = JobQueue(2, threads=1)
    gate, seen = threading.Event(), []
    jobs = [start_job(_blocking(gate, seen, n), n, sync=False, queue=q) for n in "ab"]
    _wait(lambda: q.counts() == (2, 0))
    assert all(j.status == "running" and j.snapshot().position is None for j in jobs)
    gate.set()
    _wait(lambda: not any(j.running for j in jobs))
    assert sorted(seen) == [("a", 1), ("b", 1)]  # each worker thread ran with its own budget
    assert torch.get_num_threads() == before  # the caller's thread kept its own


def test_a_failing_job_frees_its_slot():
    q = JobQueue(1)

    def boom(progress):
        raise RuntimeError("shapes do not fit")

    bad = start_job(boom, "bad", sync=False, queue=q)
    ok = start_job(lambda progress: 42, "ok", sync=False, queue=q)
    _wait(lambda: not ok.running)
    assert bad.status == "failed" and "shapes do not fit" in bad.error
    assert ok.result == 42

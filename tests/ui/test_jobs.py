"""Background jobs: the queue (at most N at once, the others wait with their place, cancel while queued),
time left at the current stage's pace, and loss points placed by unit and step."""

from __future__ import annotations

import threading

import torch

from ptq_core.methods import ProgressEvent
from ptq_ui import charts, jobs
from ptq_ui.jobs import JobQueue, start_job
from tests.support.helpers import wait_until


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
    wait_until(lambda: a.status == "running")
    b = start_job(_blocking(gate, seen, "b"), "b", sync=False, queue=q)
    c = start_job(_blocking(gate, seen, "c"), "c", sync=False, queue=q)
    wait_until(lambda: q.counts() == (1, 2))
    assert (b.snapshot().position, c.snapshot().position) == (1, 2)
    assert b.snapshot().running_jobs == 1 and b.running and b.queued
    b.cancel()
    wait_until(lambda: not b.running)
    assert b.status == "cancelled" and "queue" in b.error
    assert c.snapshot().position == 1  # moved up
    gate.set()
    wait_until(lambda: not c.running)
    assert (a.result, c.result) == ("a", "c")
    assert [name for name, _ in seen] == ["a", "c"]  # b never ran
    assert q.counts() == (0, 0)


def test_two_slots_run_two_jobs_at_once_each_with_its_thread_budget():
    before = torch.get_num_threads()
    q = JobQueue(2, threads=1)
    gate, seen = threading.Event(), []
    jobs = [start_job(_blocking(gate, seen, n), n, sync=False, queue=q) for n in "ab"]
    wait_until(lambda: q.counts() == (2, 0))
    assert all(j.status == "running" and j.snapshot().position is None for j in jobs)
    gate.set()
    wait_until(lambda: not any(j.running for j in jobs))
    assert sorted(seen) == [("a", 1), ("b", 1)]  # each worker thread ran with its own budget
    assert torch.get_num_threads() == before  # the caller's thread kept its own


def test_a_failing_job_frees_its_slot():
    q = JobQueue(1)

    def boom(progress):
        raise RuntimeError("shapes do not fit")

    bad = start_job(boom, "bad", sync=False, queue=q)
    ok = start_job(lambda progress: 42, "ok", sync=False, queue=q)
    wait_until(lambda: not ok.running)
    assert bad.status == "failed" and "shapes do not fit" in bad.error
    assert ok.result == 42


def test_time_left_follows_the_pace_of_the_stage():
    assert jobs._eta(0.0, 0.0, 10.0) is None  # nothing done yet: no estimate
    assert jobs._eta(0.25, 0.0, 30.0) == 90.0  # a quarter in 30 s: three quarters take 90 s
    assert abs(jobs._eta(0.6, 0.5, 20.0) - 80.0) < 1e-9  # a stage that began at 50 %: 10 % in 20 s, 40 % left
    ev = ProgressEvent("reconstruct", 5, 10, unit="layer2", unit_index=1, num_units=4)
    assert jobs.fraction(ev) == (1 + 0.5) / 4


def test_job_snapshot_carries_an_estimate_once_under_way(monkeypatch):
    clock = iter(float(t) for t in range(0, 1000, 5))
    monkeypatch.setattr(jobs.time, "time", lambda: next(clock))

    def work(progress):
        for i in range(4):
            progress(
                ProgressEvent(
                    "reconstruct", i + 1, 8, unit=f"block{i}", unit_index=i, num_units=8, losses={"rec": 1.0 / (i + 1)}
                )
            )
        return "done"

    job = jobs.start_job(work, "test", sync=True)
    assert job.status == "done" and job.snapshot().eta is None  # finished: nothing left
    snap_losses = job.snapshot().losses
    assert [(p["unit_index"], p["step"], p["total"]) for p in snap_losses][:2] == [(0, 1, 8), (1, 2, 8)]


def test_loss_chart_is_by_unit_and_step():
    history = [
        {
            "point": i,
            "stage": "reconstruct",
            "unit": f"block{u}",
            "unit_index": u,
            "step": s,
            "total": 4,
            "loss": "rec",
            "value": 1.0 / i,
        }
        for i, (u, s) in enumerate([(0, 1), (0, 3), (1, 2)], 1)
    ]
    fig = charts.runs.loss_lines(history)
    assert list(fig.data[0].x) == [1.25, 1.75, 2.5]
    assert list(fig.layout.xaxis.ticktext) == ["block0", "block1"] and list(fig.layout.xaxis.tickvals) == [1, 2]

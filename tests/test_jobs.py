"""Background jobs: time left at the current stage's pace, and loss points placed by unit and step."""

from __future__ import annotations

from ptq_core.methods import ProgressEvent
from ptq_ui import charts, jobs


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
            progress(ProgressEvent("reconstruct", i + 1, 8, unit=f"block{i}", unit_index=i, num_units=8,
                                   losses={"rec": 1.0 / (i + 1)}))  # fmt: skip
        return "done"

    job = jobs.start_job(work, "test", sync=True)
    assert job.status == "done" and job.snapshot().eta is None  # finished: nothing left
    snap_losses = job.snapshot().losses
    assert [(p["unit_index"], p["step"], p["total"]) for p in snap_losses][:2] == [(0, 1, 8), (1, 2, 8)]


def test_loss_chart_is_by_unit_and_step():
    history = [{"point": i, "stage": "reconstruct", "unit": f"block{u}", "unit_index": u, "step": s, "total": 4,
                "loss": "rec", "value": 1.0 / i} for i, (u, s) in enumerate([(0, 1), (0, 3), (1, 2)], 1)]  # fmt: skip
    fig = charts.loss_lines(history)
    assert list(fig.data[0].x) == [1.25, 1.75, 2.5]
    assert list(fig.layout.xaxis.ticktext) == ["block0", "block1"] and list(fig.layout.xaxis.tickvals) == [1, 2]

"""The one panel of a background job: queue place, progress bar, live loss chart, time left and Cancel.

Every page that starts a job draws it with `job_panel(job, key)` while the job runs; the
panel refreshes itself every second (a fragment) and reruns the whole page when the job
ends, so the page draws the result.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from .. import charts
from ..jobs import Job, fraction, job_queue
from .errors import literal

__all__ = ["job_panel", "finished_job", "progress_of", "eta_text"]


def progress_of(snap: Any) -> tuple[float, str]:
    """Bar fraction and text from a job snapshot's last progress event: stage, unit i/n, step, message."""
    ev = snap.last
    if ev is None:
        return 0.0, "starting…"
    parts = [ev.stage]
    if ev.num_units:
        parts.append(f"unit {min(ev.unit_index + 1, ev.num_units)}/{ev.num_units} {ev.unit}".rstrip())
    elif ev.unit:
        parts.append(ev.unit)
    if ev.total:
        parts.append(f"step {ev.step}/{ev.total}")
    if ev.message:
        parts.append(ev.message)
    return fraction(ev), " · ".join(p for p in parts if p)


def eta_text(eta: float | None, stage: str = "") -> str:
    """ "about 3 min left in reconstruct", or "estimating time left…" before the stage has gone far enough."""
    if eta is None:
        return "estimating time left…"
    left = f"about {max(1, round(eta))} s left" if eta < 90 else f"about {eta / 60:.0f} min left"
    return f"{left} in {stage}" if stage else left


def finished_job(job: Job | None, key: str, what: str) -> Any | None:
    """The snapshot of a job that finished well, else None after drawing what there is instead.

    None when there is no job; while it runs, its panel (`job_panel`); when it failed, its error
    as a literal; when it was cancelled, a warning. `what` names the job in those messages
    ("The report", "The sweep").
    """
    if job is None:
        return None
    if job.running:
        job_panel(job, key)
        return None
    snap = job.snapshot()
    if snap.status == "cancelled":
        st.warning(f"{what} was cancelled.")
    elif snap.status != "done":
        st.error(literal(f"{what} {snap.status}: {snap.error}"))
    return snap if snap.status == "done" else None


def _cancel(job: Job, snap: Any, key: str, caption: str) -> None:
    c1, c2 = st.columns([1, 4])
    if c1.button("Cancel", key=f"{key}_cancel", disabled=snap.cancel_requested):
        job.cancel()
    c2.caption(caption + (" · cancelling…" if snap.cancel_requested else ""))


def _queued(job: Job, snap: Any, key: str) -> None:
    """A job waiting for a free slot: its place, what runs now, and Cancel."""
    q = job.queue or job_queue()
    running, _ = q.counts()
    st.info(
        f"Queued: place {snap.position or 1} in the queue. {snap.running_jobs or running} of {q.slots} job "
        f"slot(s) of this server are busy; it starts when one is free ({q.threads or 0} torch thread(s) per "
        "job)."
    )
    _cancel(job, snap, key, f"{literal(job.label)} · waiting {snap.elapsed:.0f} s")


def job_panel(job: Job, key: str, losses: bool = False) -> None:
    """Progress bar (or queue place) and Cancel, redrawn every second until the job ends (then the page reruns).

    Args:
        job: The running job.
        key: Prefix of the panel's widget keys (``<key>_cancel``, ``<key>_loss``).
        losses: Also draw the live loss chart of the losses the job reports.
    """

    @st.fragment(run_every=1.0)
    def panel() -> None:
        snap = job.snapshot()
        if snap.status not in ("queued", "running"):
            st.rerun()  # whole page: draws the result and stops the refresh
        if snap.status == "queued":
            _queued(job, snap, key)
            return
        frac, text = progress_of(snap)
        st.progress(frac, text=f"{job.label}: {text}")
        if losses and snap.losses:
            st.plotly_chart(charts.runs.loss_lines(snap.losses), key=f"{key}_loss", config=charts.base.CONFIG)
        _cancel(job, snap, key, f"{snap.elapsed:.0f} s elapsed · {eta_text(snap.eta, snap.stage)}")

    panel()

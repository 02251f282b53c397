"""Small drawing helpers of the Diagnose pages: a background job's progress panel and table rows."""

from __future__ import annotations

import math
from typing import Any

import streamlit as st

__all__ = ["progress_of", "job_panel", "finding_rows", "fmt_db"]


def progress_of(snap: Any) -> tuple[float, str]:
    """Bar fraction and text from a job snapshot's last progress event."""
    ev = snap.last
    if ev is None:
        return 0.0, "starting…"
    frac = ev.step / ev.total if ev.total else 0.0
    if ev.num_units:
        frac = (min(ev.unit_index, ev.num_units - 1) + frac) / ev.num_units
    parts = [ev.stage, ev.unit, f"{ev.step}/{ev.total}" if ev.total else "", ev.message]
    return max(0.0, min(1.0, frac)), " · ".join(p for p in parts if p)


def job_panel(job: Any, key: str) -> None:
    """Progress bar and Cancel, redrawn every second until the job ends (then the whole page reruns)."""

    @st.fragment(run_every=1.0)
    def panel() -> None:
        snap = job.snapshot()
        if snap.status != "running":
            st.rerun()
        frac, text = progress_of(snap)
        st.progress(frac, text=f"{job.label}: {text}")
        c1, c2 = st.columns([1, 4])
        if c1.button("Cancel", key=f"{key}_cancel", disabled=snap.cancel_requested):
            job.cancel()
        c2.caption(f"{snap.elapsed:.0f} s elapsed" + (" · cancelling…" if snap.cancel_requested else ""))

    panel()


def fmt_db(value: Any) -> str:
    """ "23.4 dB", "exact" for infinity, "n/a" otherwise."""
    if not isinstance(value, (int, float)) or math.isnan(value):
        return "n/a"
    return "exact" if math.isinf(value) else f"{value:.1f} dB"


def finding_rows(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Diagnosis findings as table rows."""
    return [{"layer": f["layer"], "status": f["severity"], "bits": f"W{f['wbits']}/A{f['abits']}",
             "SQNR alone": fmt_db(f["sqnr_alone"]), "SQNR accumulated": fmt_db(f["sqnr_accumulated"]),
             "likely cause": f["cause"], "evidence": f["evidence"], "fix to try": f["fix"]}
            for f in findings]  # fmt: skip

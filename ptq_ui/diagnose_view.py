"""Small drawing helpers of the Diagnose pages: a background job's progress panel and table rows."""

from __future__ import annotations

import math
from typing import Any

import streamlit as st

from .jobs import fraction

__all__ = ["progress_of", "job_panel", "finding_rows", "fmt_db", "fix_text", "open_evidence", "eta_text"]


def progress_of(snap: Any) -> tuple[float, str]:
    """Bar fraction and text from a job snapshot's last progress event."""
    ev = snap.last
    if ev is None:
        return 0.0, "starting…"
    parts = [ev.stage, ev.unit, f"{ev.step}/{ev.total}" if ev.total else "", ev.message]
    return fraction(ev), " · ".join(p for p in parts if p)


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
        c2.caption(f"{snap.elapsed:.0f} s elapsed · {eta_text(snap.eta, snap.stage)}"
                   + (" · cancelling…" if snap.cancel_requested else ""))  # fmt: skip

    panel()


def eta_text(eta: float | None, stage: str = "") -> str:
    """ "about 3 min left in reconstruct", or "estimating time left…" before the stage has gone far enough."""
    if eta is None:
        return "estimating time left…"
    left = f"about {max(1, round(eta))} s left" if eta < 90 else f"about {eta / 60:.0f} min left"
    return f"{left} in {stage}" if stage else left


def fmt_db(value: Any) -> str:
    """ "23.4 dB", "exact" for infinity, "n/a" otherwise."""
    if not isinstance(value, (int, float)) or math.isnan(value):
        return "n/a"
    return "exact" if math.isinf(value) else f"{value:.1f} dB"


def fix_text(action: dict[str, Any] | None) -> str:
    """A fix action in words: "a_observer = percentile", "override conv2=4/8", or "no setting to change"."""
    if action is None:
        return "no quantizer setting to change"
    if action["kind"] == "override":
        return f"override {action['text']}"
    return ", ".join(f"{k} = {v}" for k, v in action["changes"].items())


def finding_rows(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Diagnosis findings as table rows."""
    return [{"layer": f["layer"], "status": f["severity"], "bits": f"W{f['wbits']}/A{f['abits']}",
             "SQNR alone": fmt_db(f["sqnr_alone"]), "SQNR accumulated": fmt_db(f["sqnr_accumulated"]),
             "likely cause": f["cause"], "evidence": f["evidence"], "fix": fix_text(f.get("action")),
             "why": f["fix"]}
            for f in findings]  # fmt: skip


def open_evidence(page: str, state: dict[str, Any]) -> None:
    """Switch to `page` with `state` preselected (its widgets re-seed from these persistent keys)."""
    for key, value in state.items():
        st.session_state[key] = value
        st.session_state.pop(f"w_{key}", None)
    st.switch_page(page)

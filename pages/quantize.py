"""Quantize: choose a method and its settings, run it in the background, see the result."""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from ptq_ui import bridge, charts, run_form
from ptq_ui.diagnose_view import eta_text
from ptq_ui.jobs import fraction
from ptq_ui.pickers import require_model
from ptq_ui.runs import describe_run
from ptq_ui.state import owner, selection
from ptq_ui.widgets import errors_shown, literal


def _progress(snap: Any) -> tuple[float, str]:
    """Bar fraction and text from the last progress event."""
    ev = snap.last
    if ev is None:
        return 0.0, "starting…"
    parts = [ev.stage]
    if ev.num_units:
        parts.append(f"unit {min(ev.unit_index + 1, ev.num_units)}/{ev.num_units} {ev.unit}".rstrip())
    if ev.total:
        parts.append(f"step {ev.step}/{ev.total}")
    if ev.message:
        parts.append(ev.message)
    return fraction(ev), " · ".join(parts)


def _acknowledge(job: Any) -> None:
    """Once per finished job: remember its run id and outcome for this session."""
    if job is None or job.running or st.session_state.get("job_seen") == job.job_id:
        return
    snap = job.snapshot()
    st.session_state["job_seen"] = job.job_id
    st.session_state["job_outcome"] = {"status": snap.status, "error": snap.error, "label": job.label}
    if snap.status == "done":
        st.session_state["last_run_id"] = snap.result["run_id"]


def _job_panel(job: Any) -> None:
    """Progress bar, live loss chart and Cancel, refreshed every second while the job runs."""

    @st.fragment(run_every=1.0)
    def panel() -> None:
        snap = job.snapshot()
        if snap.status not in ("queued", "running"):
            st.rerun()  # whole page: draws the result and stops the refresh
        if snap.status == "queued":
            _queued(job, snap)
            return
        frac, text = _progress(snap)
        st.progress(frac, text=f"{job.label}: {text}")
        if snap.losses:
            st.plotly_chart(charts.loss_lines(snap.losses), key="live_loss", config={"displaylogo": False})
        c1, c2 = st.columns([1, 4])
        if c1.button("Cancel", key="job_cancel", disabled=snap.cancel_requested):
            job.cancel()
        c2.caption(f"{snap.elapsed:.0f} s elapsed · {eta_text(snap.eta, snap.stage)}"
                   + (" · cancelling…" if snap.cancel_requested else ""))  # fmt: skip

    panel()


def _queued(job: Any, snap: Any) -> None:
    """A job waiting for a free slot: its place, what runs now, and Cancel."""
    q = bridge.queue_counts()
    place = snap.position or 1
    st.info(f"Queued: place {place} in the queue. {snap.running_jobs} of {q['slots']} job slot(s) of this "
            f"server are busy; your run starts when one is free ({q['threads']} torch thread(s) per job).")  # fmt: skip
    c1, c2 = st.columns([1, 4])
    if c1.button("Cancel", key="job_cancel", disabled=snap.cancel_requested):
        job.cancel()
    c2.caption(f"{literal(job.label)} · waiting {snap.elapsed:.0f} s")


def _pct(value: Any) -> str:
    return f"{value:.2f}%" if isinstance(value, (int, float)) else "n/a"


def _delta(value: Any, ref: Any, suffix: str = "") -> str | None:
    ok = isinstance(value, (int, float)) and isinstance(ref, (int, float))
    return f"{value - ref:+.2f} pts{suffix}" if ok else None


def _metrics(rec: Any) -> None:
    """Accuracy and size; tolerant of records that lack some metrics (e.g. written by other tools)."""
    m = rec.metrics
    c = st.columns(4)
    c[0].metric("Float top-1", _pct(m.get("fp_top1")))
    c[1].metric("Quantized top-1", _pct(m.get("top1")), _delta(m.get("top1"), m.get("fp_top1")))
    if "top1_base" in m:
        c[1].caption(f"{_pct(m['top1_base'])} without CAT ({_delta(m.get('top1'), m['top1_base'])} from CAT)")
    c[2].metric("Quantized top-5", _pct(m.get("top5")),
                _delta(m.get("top5"), m.get("fp_top5"), f" (float {_pct(m.get('fp_top5'))})"))  # fmt: skip
    bits, fp_bits = m.get("size_bits"), m.get("fp_size_bits")
    if bits:
        c[3].metric("Size", f"{bits / 8e6:.3f} MB", help="quantized weights at their bit-width, scales and "
                    "everything else in fp32")  # fmt: skip
        if fp_bits:
            c[3].caption(f"{fp_bits / bits:.1f}× smaller than the float {fp_bits / 8e6:.3f} MB")


def _result(rec: Any) -> None:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(rec.created))
    st.subheader("Result")
    st.caption(f"Run `{rec.run_id}` ({when}, {rec.metrics.get('seconds', 0):.1f} s on "
               f"{rec.extras.get('device', '?')}): {literal(bridge.redact(describe_run(rec)))}.")  # fmt: skip
    _metrics(rec)
    st.plotly_chart(charts.sqnr_bars(rec.layers, "Per-layer SQNR (all layers quantized)"), key="result_sqnr",
                    config={"displaylogo": False})  # fmt: skip
    st.caption("SQNR = 10·log10(signal energy / error energy) of each layer's output; every 6 dB is about one "
               "bit. Low bars are where the error enters or piles up; see Layer errors for the split.")  # fmt: skip
    with st.expander("Run description, timings and what stayed float"):
        report = rec.extras.get("report", {})
        st.json(bridge.redact_json({"spec": rec.spec or {"method": rec.config}, "bits": rec.extras.get("bits", {}),
                 "timings_s": rec.timings, "unsupported": report.get("unsupported", []),
                 "folded": report.get("folded", [])}), expanded=False)  # fmt: skip


def _latest(model: str) -> Any:
    """This session's last run, else this user's newest finished run of `model` (never someone else's)."""
    run_id = st.session_state.get("last_run_id")
    if run_id:
        try:
            return bridge.get_run(run_id)
        except bridge.PTQError:
            st.session_state["last_run_id"] = None
            st.warning("Your last run is no longer in the run store (it was deleted).")
    runs = bridge.list_runs(status="done", model=model, limit=1, owner=owner())
    return runs[0] if runs else None


def _outcome() -> None:
    outcome = st.session_state.get("job_outcome")
    if outcome and outcome["status"] == "failed":
        st.error(literal(f"The run failed: {outcome['error']}. Saved runs are untouched."))
    elif outcome and outcome["status"] == "cancelled":
        st.warning(literal(f"{outcome['label']} was cancelled: {outcome['error']}."))


def render() -> None:
    """Draw the page."""
    st.title("Quantize")
    st.caption("Weights and each layer's input activations are fake-quantized; the logits stay float. The run "
               "description below is exactly what Run starts and what the run store keeps.")  # fmt: skip
    info = require_model()
    sel = selection()
    with errors_shown():
        layers = bridge.quantizable_layers(sel)
    draft = run_form.run_form_ui(sel, layers, int(info["data"]["calib"]))
    for note in draft.notes:
        st.info(literal(note))
    for error in draft.errors:
        st.error(literal(error))
    job = st.session_state.get("job")
    running = job is not None and job.running
    why = "A run is going" if running else "Fix the settings above first" if draft.spec is None else None
    clicked = st.button("Run", type="primary", key="run", disabled=why is not None, help=why)
    if clicked and why is None:
        st.session_state["job_outcome"] = None
        with errors_shown():
            bridge.start_quantization(sel, draft.spec, owner())
        st.rerun()  # redraw with the Run button disabled and the progress panel (or the result)
    with st.expander("Config as JSON (the run description)"):
        if draft.spec is None:
            st.caption("No valid run description: fix the settings above.")
        else:
            st.code(bridge.redact(draft.spec.to_json()), language="json")
    _acknowledge(job)
    if job is not None and job.running:
        _job_panel(job)
    _outcome()
    with errors_shown():
        rec = _latest(sel.model)
    if rec is None:
        st.info("No saved run of yours for this model yet: choose the settings and press Run (Compare runs lists "
                "everyone's runs).")  # fmt: skip
    else:
        _result(rec)


render()

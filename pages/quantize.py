"""Quantize: choose a method and its settings, run it in the background, see the result."""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from ptq_ui import charts
from ptq_ui.services import explore, runs, uploads
from ptq_ui.services.runs import describe_run
from ptq_ui.state import owner, selection
from ptq_ui.widgets import errors_shown, forms, job_panel, literal
from ptq_ui.widgets.pickers import require_model


def _acknowledge(job: Any) -> None:
    """Once per finished job: remember its run id and outcome for this session."""
    if job is None or job.running or st.session_state.get("job_seen") == job.job_id:
        return
    snap = job.snapshot()
    st.session_state["job_seen"] = job.job_id
    st.session_state["job_outcome"] = {"status": snap.status, "error": snap.error, "label": job.label}
    if snap.status == "done":
        st.session_state["last_run_id"] = snap.result["run_id"]


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
    c[2].metric(
        "Quantized top-5",
        _pct(m.get("top5")),
        _delta(m.get("top5"), m.get("fp_top5"), f" (float {_pct(m.get('fp_top5'))})"),
    )
    bits, fp_bits = m.get("size_bits"), m.get("fp_size_bits")
    if bits:
        c[3].metric(
            "Size",
            f"{bits / 8e6:.3f} MB",
            help="quantized weights at their bit-width, scales and everything else in fp32",
        )
        if fp_bits:
            c[3].caption(f"{fp_bits / bits:.1f}× smaller than the float {fp_bits / 8e6:.3f} MB")


def _result(rec: Any) -> None:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(rec.created))
    st.subheader("Result")
    st.caption(
        f"Run `{rec.run_id}` ({when}, {rec.metrics.get('seconds', 0):.1f} s on "
        f"{rec.extras.get('device', '?')}): {literal(uploads.redact(describe_run(rec)))}."
    )
    _metrics(rec)
    st.plotly_chart(
        charts.runs.sqnr_bars(rec.layers, "Per-layer SQNR (all layers quantized)"),
        key="result_sqnr",
        config=charts.base.CONFIG,
    )
    st.caption(
        "SQNR = 10·log10(signal energy / error energy) of each layer's output; every 6 dB is about one "
        "bit. Low bars are where the error enters or piles up; see Layer errors for the split."
    )
    with st.expander("Run description, timings and what stayed float"):
        report = rec.extras.get("report", {})
        st.json(
            uploads.redact_json(
                {
                    "spec": rec.spec or {"method": rec.config},
                    "bits": rec.extras.get("bits", {}),
                    "timings_s": rec.timings,
                    "unsupported": report.get("unsupported", []),
                    "folded": report.get("folded", []),
                }
            ),
            expanded=False,
        )


def _latest(model: str) -> Any:
    """This session's last run, else this user's newest finished run of `model` (never someone else's)."""
    run_id = st.session_state.get("last_run_id")
    if run_id:
        try:
            return runs.get_run(run_id)
        except runs.PTQError:
            st.session_state["last_run_id"] = None
            st.warning("Your last run is no longer in the run store (it was deleted).")
    records = runs.list_runs(status="done", model=model, limit=1, owner=owner())
    return records[0] if records else None


def _outcome() -> None:
    outcome = st.session_state.get("job_outcome")
    if outcome and outcome["status"] == "failed":
        st.error(literal(f"The run failed: {outcome['error']}. Saved runs are untouched."))
    elif outcome and outcome["status"] == "cancelled":
        st.warning(literal(f"{outcome['label']} was cancelled: {outcome['error']}."))


def render() -> None:
    """Draw the page."""
    st.title("Quantize")
    st.caption(
        "Weights and each layer's input activations are fake-quantized; the logits stay float. The run "
        "description below is exactly what Run starts and what the run store keeps."
    )
    info = require_model()
    sel = selection()
    with errors_shown():
        layers = explore.quantizable_layers(sel)
    draft = forms.run_form_ui(sel, layers, int(info["data"]["calib"]))
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
            runs.start_quantization(sel, draft.spec, owner())
        st.rerun()  # redraw with the Run button disabled and the progress panel (or the result)
    with st.expander("Config as JSON (the run description)"):
        if draft.spec is None:
            st.caption("No valid run description: fix the settings above.")
        else:
            st.code(uploads.redact(draft.spec.to_json()), language="json")
    _acknowledge(job)
    if job is not None and job.running:
        job_panel(job, "job", losses=True)
    _outcome()
    with errors_shown():
        rec = _latest(sel.model)
    if rec is None:
        st.info(
            "No saved run of yours for this model yet: choose the settings and press Run (Compare runs lists "
            "everyone's runs)."
        )
    else:
        _result(rec)


render()

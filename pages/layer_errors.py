"""Layer errors: per-layer MSE / SQNR / cosine of saved runs, each layer alone vs accumulated."""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from ptq_ui import charts
from ptq_ui.services import diagnose, explore, runs
from ptq_ui.state import selection
from ptq_ui.widgets import errors_shown, persistent
from ptq_ui.widgets.forms import current_spec
from ptq_ui.widgets.pickers import require_model

MAX_RUNS = 6


def _label(rec: Any) -> str:
    when = time.strftime("%m-%d %H:%M", time.localtime(rec.created))
    top1 = rec.metrics.get("top1")
    acc = f" {top1:.1f}%" if isinstance(top1, (int, float)) else ""
    return f"{rec.model} · {rec.method} {charts.runs.bits_label(rec.wbits, rec.abits)}{acc} · {when} · {rec.run_id}"


def _pick_runs(records: list[Any]) -> list[Any]:
    by_id = {r.run_id: r for r in records}
    kept = [i for i in st.session_state.get("le_runs") or [] if i in by_id]
    last = st.session_state.get("last_run_id")
    if not kept:
        kept = [last] if last in by_id else [records[0].run_id]
    st.session_state["le_runs"] = kept
    chosen = persistent(
        st.multiselect,
        "le_runs",
        "Runs to compare",
        list(by_id),
        options=list(by_id),
        max_selections=MAX_RUNS,
        format_func=lambda i: _label(by_id[i]),
    )
    return [by_id[i] for i in chosen]


def _series(records: list[Any], view: str) -> dict[str, list[dict[str, Any]]]:
    """Run label -> per-layer rows of one view ("alone" or "accumulated")."""
    out = {}
    for r in records:
        rows = r.extras.get("layers_alone", []) if view == "alone" else r.layers
        out[f"{r.method} {charts.runs.bits_label(r.wbits, r.abits)} · {r.run_id[:6]}"] = rows
    return out


def _table(run: Any) -> list[dict[str, Any]]:
    alone = {row["name"]: row for row in run.extras.get("layers_alone", [])}
    rows = []
    for acc in run.layers:
        a = alone.get(acc["name"], {})
        rows.append(
            {
                "layer": acc["name"],
                "bits": charts.runs.bits_label(acc.get("wbits"), acc.get("abits")),
                "SQNR alone (dB)": a.get("sqnr_db"),
                "SQNR accumulated (dB)": acc.get("sqnr_db"),
                "MSE alone": a.get("mse"),
                "MSE accumulated": acc.get("mse"),
                "cosine alone": a.get("cosine"),
                "cosine accumulated": acc.get("cosine"),
            }
        )
    return rows


def _live_series() -> dict[str, dict[str, list[dict[str, Any]]]]:
    """An unsaved round-to-nearest curve at a bit-width slider, recomputed when the slider moves."""
    c1, c2 = st.columns([1, 3])
    on = persistent(
        c1.toggle,
        "le_live",
        "Live RTN curve",
        help="Round-to-nearest on the current model with the Quantize page's observers, "
        "at the bit-width of the slider, on 64 test images; not saved.",
        default=False,
    )
    bits = persistent(
        c2.slider, "le_live_bits", "Live bit-width (weights and activations)", 2, 8, disabled=not on, default=4
    )
    if not on:
        return {}
    require_model()
    sel = selection()
    with errors_shown():
        base = current_spec(explore.quantizable_layers(sel), overrides=False)  # the slider sets every layer
        spec = type(base).from_dict({**base.to_dict(), "wbits": bits, "abits": bits})
        live = diagnose.live_layer_errors(sel, spec)
    return {f"live RTN {charts.runs.bits_label(spec.wbits, spec.abits)} · {sel.model}": live}


def render() -> None:
    """Draw the page."""
    st.title("Layer errors")
    st.caption(
        "Each quantized layer's output compared with the float model on 256 test images. **Alone**: only "
        "that layer is quantized, so the number is its own damage. **Accumulated**: every layer is "
        "quantized, so a layer also inherits the error of the layers before it. A layer that is fine "
        "alone but bad accumulated suffers from upstream error; one that is bad alone is sensitive "
        "itself (try more bits there with an override)."
    )
    with errors_shown():
        records = runs.list_runs(status="done")
    if not records:
        st.info("No finished runs yet: run one on the Quantize page, or switch on the live curve.")
    chosen = _pick_runs(records) if records else []
    live = _live_series()
    if not chosen and not live:
        if records:
            st.info("Choose one or more runs.")
        return
    metrics = list(charts.runs.METRIC_LABELS)
    metric = st.radio(
        "Metric", metrics, format_func=lambda m: charts.runs.METRIC_LABELS[m], horizontal=True, key="le_metric"
    )
    alone = {**_series(chosen, "alone"), **{k: v["alone"] for k, v in live.items()}}
    accumulated = {**_series(chosen, "accumulated"), **{k: v["accumulated"] for k, v in live.items()}}
    left, right = st.columns(2)
    left.plotly_chart(
        charts.runs.layer_metric_lines(alone, metric, "Each layer quantized alone"),
        key="le_alone",
        config=charts.base.CONFIG,
    )
    right.plotly_chart(
        charts.runs.layer_metric_lines(accumulated, metric, "Accumulated (all layers quantized)"),
        key="le_acc",
        config=charts.base.CONFIG,
    )
    if chosen:
        with st.expander(f"Table of {chosen[0].run_id}", expanded=len(chosen) == 1):
            st.dataframe(_table(chosen[0]), hide_index=True)


render()

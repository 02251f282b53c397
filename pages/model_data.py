"""Model & data: choose the model, weights, data and device; see the architecture and float accuracy."""

from __future__ import annotations

from typing import Any

import streamlit as st

from ptq_ui.services import explore, uploads
from ptq_ui.state import selection
from ptq_ui.widgets import errors_shown, literal, persistent
from ptq_ui.widgets.forms import current_spec
from ptq_ui.widgets.pickers import data_ui, device_ui, model_ui, require_model

ACC_LIMITS = [1000, 5000, 0]  # 0 = whole test split


def _choices() -> None:
    """Both columns are always drawn (a missing folder never hides the model choice); then stop if incomplete."""
    left, right = st.columns([3, 2], gap="large")
    with left:
        model_ready = model_ui()
    with right:
        data_ready = data_ui()
        device_ui()
    if not (model_ready and data_ready):
        st.stop()


def _si(n: float) -> str:
    """1234567 -> "1.23 M"."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:.0f}"


def _architecture(info: dict[str, Any]) -> None:
    sel = selection()
    with errors_shown():
        spec = current_spec(explore.quantizable_layers(sel))
        arch = explore.architecture(sel, spec)
    st.subheader("Architecture")
    st.caption(
        f"Quantized with the Quantize page's settings: W{spec.wbits}/A{spec.abits}, first/last "
        f"{spec.first_last_bits or 'same'}, {'per-channel' if spec.w_per_channel else 'per-tensor'} "
        "weights. MACs are multiply-accumulates for one image. BatchNorm is folded into the conv "
        "before quantization."
    )
    c = st.columns(4)
    c[0].metric("Parameters", f"{arch['total_params']:,}")
    c[1].metric("MACs / image", _si(arch["total_macs"]))
    c[2].metric("Quantized layers", arch["quantized_layers"])
    c[3].metric("Unsupported layers", len(arch["unsupported"]))
    if arch["unsupported"]:
        names = ", ".join(f"{n} ({t})" for n, t in arch["unsupported"])
        st.warning(literal(f"Left in float (no quantized twin): {names}"))
    if arch["float_params"]:
        st.info(f"Parameters kept in float (not inside a conv/linear layer): {', '.join(arch['float_params'])}")
    if arch["decomposed"]:
        st.info(f"Attention split into linear layers for quantization: {', '.join(arch['decomposed'])}")
    st.dataframe(
        arch["rows"],
        hide_index=True,
        height=360,
        column_config={
            "params": st.column_config.NumberColumn(format="localized"),
            "MACs": st.column_config.NumberColumn(format="localized"),
        },
    )


def _accuracy(info: dict[str, Any]) -> None:
    st.subheader("Float accuracy")
    card_top1 = info["card"].get("fp_top1") if selection().weights is None else None  # not for own weights
    cols = st.columns(3)
    if card_top1 is not None:
        cols[0].metric("Top-1 (model card, full test split)", f"{card_top1:.2f}%")
    fmt = lambda n: "all test images" if n == 0 else f"first {n} test images"  # noqa: E731
    limit = persistent(
        cols[1].selectbox, "fp_limit", "Evaluate on", ACC_LIMITS, format_func=fmt, options=ACC_LIMITS, default=1000
    )
    sel = selection()
    token = (sel.key, sel.data, limit)
    if cols[1].button("Evaluate float accuracy", key="fp_eval"):
        st.session_state["fp_eval_done"] = token
    if st.session_state.get("fp_eval_done") == token:  # cached after the first click
        with errors_shown():
            acc = explore.float_accuracy(sel, limit or None)
        cols[2].metric(
            f"Top-1 / top-5 on {acc['samples']:,} images",
            f"{acc['top1']:.2f}%",
            f"top-5 {acc['top5']:.2f}%",
            delta_color="off",
        )


def render() -> None:
    """Draw the page."""
    st.title("Model & data")
    st.caption(
        "Pick the float model to quantize, the data to calibrate and evaluate on, and the device. "
        "Every other page works on this choice."
    )
    _choices()
    st.divider()
    info = require_model(allow_download=st.session_state.pop("allow_download", False), explain=False)
    data = info["data"]
    st.caption(
        f"**{literal(uploads.model_label(info['name']))}** ({info['source']}, {info['status']}) · data: "
        f"{literal(uploads.redact(data['source']))}, {data['calib']:,} calibration / {data['test']:,} test "
        f"images, {len(info['classes'])} classes"
    )
    _architecture(info)
    _accuracy(info)


render()

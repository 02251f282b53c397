"""Learn: the uniform quantizer on a real layer's weights or activations."""

from __future__ import annotations

import math

import streamlit as st

from ptq_ui import charts
from ptq_ui.services import explore
from ptq_ui.state import Selection, selection
from ptq_ui.widgets import errors_shown, persistent
from ptq_ui.widgets.pickers import require_model

SOURCES = {"weights": "weights", "activations": "input activations (64 calibration images)"}
MODES = {"ratio": "clipping ratio", "manual": "scale and zero point by hand"}

INTRO = """
A uniform quantizer keeps only `2^b` values: **x̂ = s · (clamp(round(x / s) + z, qmin, qmax) − z)**.
The *scale* `s` is the grid step and the *zero point* `z` is the integer that stands for 0.
The range you let the grid cover decides the trade-off:

- **rounding error**: values inside the range move to the nearest grid line (at most `s/2` each);
- **clipping error**: values outside the range are pulled to its edge.

Shrinking the range (clipping ratio < 1) makes `s` smaller, so rounding error drops, but more values get
clipped. The best ratio balances the two; the curve below finds it by search, as the MSE observer does.
"""


def _controls(sel: Selection) -> tuple[str, str, int, float, bool]:
    c1, c2 = st.columns(2)
    source = persistent(
        c1.radio,
        "learn_source",
        "Quantize",
        list(SOURCES),
        format_func=SOURCES.get,
        horizontal=True,
        options=list(SOURCES),
    )
    with errors_shown():
        layers = explore.quantizable_layers(sel)
    layer = persistent(c2.selectbox, "learn_layer", "Layer", layers, options=layers)
    c3, c4, c5 = st.columns([2, 2, 1])
    bits = c3.slider("Bits", 2, 8, 4, key="learn_bits")
    ratio = c4.slider("Clipping ratio (share of the full range kept)", 0.05, 1.0, 1.0, 0.01, key="learn_ratio")
    symmetric = c5.toggle(
        "Symmetric",
        value=False,
        key="learn_sym",
        help="Zero point fixed at 0: range [-a, a] (or [0, a] for non-negative data).",
    )
    return source, layer, bits, ratio, symmetric


def _numbers(view: dict) -> None:
    c = st.columns(4)
    c[0].metric("Scale s", f"{view['scale']:.4g}")
    c[1].metric("Zero point z", view["zero_point"], help=f"grid integers {view['qmin']}…{view['qmax']}")
    c[2].metric("Clipped values", f"{100 * view['clip_fraction']:.2f}%")
    sqnr = view["sqnr_db"]
    c[3].metric("SQNR", f"{sqnr:.1f} dB" if math.isfinite(sqnr) else "exact", help="10·log10(signal / error)")
    c = st.columns(4)
    c[0].metric("Rounding MSE", f"{view['rounding_mse']:.3g}", help="error of values inside the range")
    c[1].metric("Clipping MSE", f"{view['clipping_mse']:.3g}", help="error of values outside the range")
    c[2].metric("Total MSE", f"{view['total_mse']:.3g}")


def _manual(sel: Selection, layer: str, source: str, bits: int, auto: dict) -> tuple[dict, float]:
    """Scale and zero point set by hand, starting from the clipping ratio's grid; returns (view, ratio)."""
    c1, c2 = st.columns(2)
    signed, qmin, qmax = auto["signed"], auto["qmin"], auto["qmax"]
    tag = f"{layer}_{source}_{bits}_{signed}"  # a new grid resets the hand-set values
    scale = c1.number_input(
        "Scale s",
        min_value=1e-8,
        max_value=1e6,
        value=float(f"{auto['scale']:.4g}"),
        format="%.4g",
        key=f"learn_scale_{tag}",
        help="Grid step: output values are s·(q − z) for integers q in the grid.",
    )
    zp = c2.slider(
        "Zero point z",
        qmin,
        qmax,
        int(auto["zero_point"]),
        key=f"learn_zp_{tag}",
        help="The integer that stands for 0.0; moving it slides the grid along the values.",
    )
    with errors_shown():
        view = explore.grid_view(sel, layer, source, bits, scale, zp, signed)
    width = view["max"] - view["min"]
    ratio = min(1.0, (view["hi"] - view["lo"]) / width) if width > 0 else 1.0
    return view, ratio


def render() -> None:
    """Draw the page; the controls and what they change rerun alone (a fragment)."""
    st.title("Learn: the quantizer")
    st.markdown(INTRO)
    require_model()
    st.fragment(_panel)(selection())


def _panel(sel: Selection) -> None:
    source, layer, bits, ratio, symmetric = _controls(sel)
    mode = st.radio(
        "Set the grid by",
        list(MODES),
        format_func=MODES.get,
        horizontal=True,
        key="learn_mode",
        help="By hand: the grid starts from the clipping ratio's; then scale and zero point rule.",
    )
    with errors_shown():
        view = explore.quantizer_view(sel, layer, source, bits, ratio, symmetric)
        curve = explore.clip_curve(sel, layer, source, bits, symmetric)
    if mode == "manual":
        view, ratio = _manual(sel, layer, source, bits, view)
    _numbers(view)
    grid = "signed" if view["signed"] else "unsigned"
    title = f"{layer} {source}: {view['count']:,} values, {bits}-bit {grid} grid [{view['lo']:.3g}, {view['hi']:.3g}]"
    st.plotly_chart(charts.runs.quantizer_histogram(view, title), key="learn_hist", config=charts.base.CONFIG)
    st.caption(
        "Red lines: the values the quantizer can output. Shaded: values outside the range, which are "
        "clipped to its edge. At low bits the lines are far apart; watch the rounding error grow."
    )
    left, right = st.columns([3, 2])
    left.plotly_chart(
        charts.runs.clip_curve_figure(curve, ratio, view["total_mse"]), key="learn_curve", config=charts.base.CONFIG
    )
    with right:
        st.markdown(
            f"**Optimal clipping ratio at {bits} bits: {curve['best_ratio']:.2f}** "
            f"(range [{curve['best_lo']:.3g}, {curve['best_hi']:.3g}], MSE {curve['best_mse']:.3e})."
        )
        st.markdown(
            "The curve is `lp_search` with p = 2 over 100 range widths, on a 2048-bin histogram of the "
            "values; for an asymmetric grid each width gets its best zero point, so your choice (which "
            "shrinks both ends in proportion) can sit above the curve. Weights are bell-shaped with rare "
            "large values, so at low bits the optimum clips a lot; at 8 bits it barely clips."
        )


render()

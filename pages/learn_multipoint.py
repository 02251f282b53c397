"""Learn: multipoint quantization's sum of grids, on a real layer's channels."""

from __future__ import annotations

import streamlit as st

from ptq_ui import charts
from ptq_ui.services import explore, learn
from ptq_ui.state import Selection, selection
from ptq_ui.widgets import errors_shown, persistent
from ptq_ui.widgets.pickers import require_model

INTRO = """
**Multipoint quantization** (Liu et al., AAAI 2021) keeps every weight on a b-bit grid, but lets a channel
use **several grids at once**: its weight vector becomes `w ≈ a₁v₁ + a₂v₂ + … + aₙvₙ`, each `vᵢ` a vector of
b-bit integers and each `aᵢ` one float coefficient. The points are added greedily: point i fits the
residual `rᵢ₋₁ = w − (a₁v₁ + … + aᵢ₋₁vᵢ₋₁)`; for a given `a` the best `v` is just `round(r / a)` clipped to the
grid, so each step is a search over one number. The residual shrinks fast, so a second point is already
close to a much finer grid. Extra points cost extra b-bit output channels, so they go where the layer's
**output** error `e_c = r_cᵀ H r_c` (H: Gram matrix of the layer's calibration inputs) is largest.

This page calls the core's `greedy_points` and `allocate_points` (`ptq_core.layerwise.multipoint`, used by the
`multipoint` method) on the layer you pick, with H from 128 calibration images.
"""


def _controls(sel: Selection) -> tuple[str, int, str, float]:
    with errors_shown():
        layers = explore.quantizable_layers(sel)
    default = next((n for n in layers if "layer2" in n), layers[len(layers) // 2])
    c1, c2, c3, c4 = st.columns([3, 1, 2, 3])
    layer = persistent(c1.selectbox, "mp_layer", "Layer", layers, options=layers, default=default)
    bits = c2.selectbox("Bits", [2, 3, 4], index=1, key="mp_bits")
    grid = c3.selectbox(
        "Grid", ["signed", "symmetric"], key="mp_grid", help="signed: all 2^b codes; symmetric: 2^b − 1 codes around 0."
    )
    budget = c4.select_slider("Extra points (% of channels)", list(learn.BUDGETS), value=25, key="mp_budget")
    return layer, bits, grid, float(budget)


def _channel_ui(demo: dict, points: list[int]) -> tuple[int, int]:
    order = sorted(range(demo["channels"]), key=lambda c: (-points[c], c))
    c1, c2 = st.columns([2, 3])
    channel = c1.selectbox(
        "Channel",
        order,
        key="mp_channel",
        format_func=lambda c: f"{c} ({points[c]} point{'s' if points[c] > 1 else ''} at this budget)",
    )
    shown = c2.slider("Points drawn", 1, learn.MAX_POINTS, 2, key="mp_shown")
    return channel, shown


def _panel(sel: Selection) -> None:
    layer, bits, grid, budget = _controls(sel)
    with errors_shown():
        demo = learn.multipoint_demo(sel, layer, bits, grid)
        points = learn.multipoint_allocation(sel.key, sel.data, layer, bits, grid, budget).tolist()
    curve = demo["budget_curve"]
    i = curve["budget"].index(int(budget)) if int(budget) in curve["budget"] else 0
    c = st.columns(4)
    c[0].metric("Channels", demo["channels"], f"{demo['d']} weights each", delta_color="off", delta_arrow="off")
    c[1].metric(
        "Extra points",
        sum(points) - demo["channels"],
        f"{budget:.0f}% of the channels",
        delta_color="off",
        delta_arrow="off",
    )
    one, now = curve["error"][0], curve["error"][i]
    c[2].metric(
        "Layer output error", f"{now:.3g}", f"{100 * (now - one) / one:+.0f}% vs one point each", delta_color="inverse"
    )
    rnd = curve["random"][i]
    c[3].metric("Same budget, random channels", f"{rnd:.3g}", f"{100 * (rnd - one) / one:+.0f}%", delta_color="inverse")
    left, right = st.columns([3, 2])
    left.plotly_chart(charts.learn.budget_figure(curve, budget), key="mp_budget_fig", config=charts.base.CONFIG)
    right.plotly_chart(charts.learn.points_histogram(points), key="mp_hist", config=charts.base.CONFIG)
    st.subheader("One channel, point by point")
    channel, shown = _channel_ui(demo, points)
    with errors_shown():
        view = learn.multipoint_channel(demo, channel)
    left, right = st.columns(2)
    left.plotly_chart(
        charts.learn.points_figure(view["w"], view["partial"], shown), key="mp_points", config=charts.base.CONFIG
    )
    right.plotly_chart(
        charts.learn.residual_figure(view["residual"], [view["reference"], *view["errors"]]),
        key="mp_residual",
        config=charts.base.CONFIG,
    )
    rows = [
        {
            "point": n + 1,
            "coefficient a": a,
            "codes used": len(lv),
            "|residual| after": view["residual"][n + 1],
            "output error after": view["errors"][n],
            "relative output error": view["errors"][n] / view["reference"] if view["reference"] else None,
        }
        for n, (a, lv) in enumerate(zip(view["coeffs"], view["levels"], strict=True))
    ]
    st.dataframe(rows, hide_index=True)
    st.caption(
        "Each point's coefficient is smaller than the last: the next grid is finer and only corrects "
        "what is left. A channel with n points runs as n b-bit output channels whose outputs are scaled "
        "by a₁…aₙ and summed, so the hardware only ever multiplies b-bit weights."
    )


def render() -> None:
    """Draw the page."""
    st.title("Learn: multipoint's sum of grids")
    st.markdown(INTRO)
    require_model()
    st.fragment(_panel)(selection())


render()

"""Learn: AdaRound's rounding choice, learned on a real layer with the core's reconstruction code."""

from __future__ import annotations

import streamlit as st

from ptq_ui import charts
from ptq_ui.services import explore, learn
from ptq_ui.state import Selection, selection
from ptq_ui.widgets import errors_shown, persistent
from ptq_ui.widgets.pickers import require_model

INTRO = """
Round-to-nearest treats every weight alone. **AdaRound** (Nagel et al., 2020) asks instead: for each weight,
should it go to the grid line *below* or *above* it, so that the **layer's output** stays closest to the float
one? Each weight gets a variable V and a soft choice **h(V) ∈ [0, 1]** (0 = down, 1 = up):
`W̃ = s · (clamp(floor(W/s) + h(V) + z) − z)`. V starts where h equals the fractional part of W/s (so W̃ = W),
Adam minimises the output error `‖X W̃ − X W‖²` plus a regulariser `λ Σ (1 − |2h − 1|^β)` that pushes each h
to exactly 0 or 1 (β falls from 20 to 2 after a 20 % warm-up). At the end each weight keeps `floor + [V ≥ 0]`.

Below, the core's layer-wise engine (`ptq_core.recon.reconstruct`, one unit) runs on the layer you pick, with
its weights on a per-channel MSE grid, float activations and 256 calibration images.
"""


def _controls(sel: Selection) -> tuple[str, int, int, float]:
    with errors_shown():
        layers = explore.quantizable_layers(sel)
    default = next((n for n in layers if "layer2" in n), layers[len(layers) // 2])
    c1, c2, c3, c4 = st.columns([3, 1, 2, 2])
    layer = persistent(c1.selectbox, "ar_layer", "Layer", layers, options=layers, default=default)
    bits = c2.selectbox("Weight bits", [2, 3, 4, 8], index=1, key="ar_bits")
    iters = c3.slider("AdaRound steps", 50, 1000, 300, 50, key="ar_iters", help="Adam steps of batch 32.")
    lam = c4.select_slider(
        "Regulariser weight λ",
        [0.0, 0.001, 0.01, 0.1, 1.0],
        value=0.01,
        key="ar_lambda",
        help="0 turns the push towards 0/1 off: h stays soft and the final sign of V decides.",
    )
    return layer, bits, iters, lam


def _numbers(res: dict) -> None:
    c = st.columns(4)
    n = res["weights"]
    c[0].metric(
        "Flipped up vs nearest",
        f"{res['flipped_up']:,}",
        f"{100 * res['flipped_up'] / n:.1f}% of {n:,}",
        delta_color="off",
        delta_arrow="off",
    )
    c[1].metric(
        "Flipped down vs nearest",
        f"{res['flipped_down']:,}",
        f"{100 * res['flipped_down'] / n:.1f}% of {n:,}",
        delta_color="off",
        delta_arrow="off",
    )
    near, ada = res["output_error_nearest"], res["output_error_adaround"]
    c[2].metric(
        "Output error: nearest → AdaRound",
        f"{ada:.4g}",
        f"{100 * (ada - near) / near:+.0f}% vs {near:.4g}",
        delta_color="inverse",
        help="Layer output MSE (sum over channels) on 256 calibration inputs.",
    )
    wn, wa = res["weight_mse_nearest"], res["weight_mse_adaround"]
    c[3].metric(
        "Weight MSE: nearest → AdaRound",
        f"{wa:.3g}",
        f"{100 * (wa - wn) / wn:+.0f}% vs {wn:.3g}",
        delta_color="inverse",
        help="AdaRound gives up weight error to win output error.",
    )


def _panel(sel: Selection) -> None:
    layer, bits, iters, lam = _controls(sel)
    with errors_shown():
        res = learn.adaround_demo(sel, layer, bits, iters, lam)
    _numbers(res)
    left, right = st.columns(2)
    left.plotly_chart(charts.learn.rounding_scatter(res["scatter"]), key="ar_scatter", config=charts.base.CONFIG)
    right.plotly_chart(
        charts.learn.h_evolution_figure(res["h_init"], res["snapshots"], learn.H_BINS),
        key="ar_h",
        config=charts.base.CONFIG,
    )
    left, right = st.columns(2)
    left.plotly_chart(charts.learn.adaround_loss_figure(res["history"]), key="ar_loss", config=charts.base.CONFIG)
    right.plotly_chart(
        charts.learn.rectified_sigmoid_figure(learn.rectified_sigmoid_curve()), key="ar_sig", config=charts.base.CONFIG
    )
    undecided = res["snapshots"][-1]["undecided"] if res["snapshots"] else float("nan")
    st.caption(
        f"{layer}: {res['weights']:,} weights in {res['channels']} channels, {bits}-bit grid, {iters} steps, "
        f"λ = {lam}. At the last step {100 * undecided:.1f}% of the h values were still strictly between "
        "0.01 and 0.99. Left: grey points round as nearest; red/blue points cross the dashed line the "
        "other way, the choices that lower the output error. Most flips sit near a fractional part of "
        "0.5, where the two grid lines are almost equally far."
    )


def render() -> None:
    """Draw the page."""
    st.title("Learn: AdaRound's rounding choice")
    st.markdown(INTRO)
    require_model()
    st.fragment(_panel)(selection())


render()

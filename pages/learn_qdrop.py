"""Learn: QDrop's element-wise mix of quantized and float activations, on a real block."""

from __future__ import annotations

import math

import streamlit as st

from ptq_ui import charts
from ptq_ui.services import learn
from ptq_ui.state import Selection, selection
from ptq_ui.widgets import errors_shown, persistent
from ptq_ui.widgets.pickers import require_model

INTRO = """
Block reconstruction (BRECQ) trains each block on the **quantized** model's input. **QDrop** (Wei et al., 2022)
notices that the model will later face activation noise too, and trains on a flatter problem: while a block
is reconstructed, every element of its input is the **float** value with probability **p**, else the
quantized one, `x = keep ⊙ x_fp + (1 − keep) ⊙ x_q` with `keep ~ Bernoulli(p)` drawn anew each step, and each
activation quantizer inside the block also lets an element through unquantized with the same probability.
The paper uses p = 0.5.

Here the whole model is quantized with round-to-nearest (MSE weight grid, min-max activation ranges, 64
calibration images); the mask comes from the core's `bernoulli_mask`, the in-block dropping from the
`FakeQuantize.drop_prob` that QDrop training switches on.
"""


def _controls(sel: Selection) -> tuple[str, int, float, int]:
    with errors_shown():
        blocks = learn.block_names(sel)
    if not blocks:
        st.warning(
            "This model has no reconstruction blocks (residual, inverted residual, encoder…): QDrop's "
            "mixing is shown on blocks. Pick a zoo model on the Model & data page."
        )
        st.stop()
    default = next((b for b in blocks if "layer2" in b), blocks[len(blocks) // 2])
    c1, c2, c3, c4 = st.columns([2, 1, 3, 1])
    block = persistent(c1.selectbox, "qd_block", "Block", blocks, options=blocks, default=default)
    bits = c2.selectbox("Bits (W and A)", [2, 3, 4, 8], index=1, key="qd_bits")
    p = c3.slider("Drop probability p (share kept float)", 0.0, 1.0, 0.5, 0.05, key="qd_p")
    seed = c4.number_input("Mask seed", 0, 10_000, 0, key="qd_seed")
    return block, bits, p, int(seed)


def _panel(sel: Selection) -> None:
    block, bits, p, seed = _controls(sel)
    with errors_shown():
        demo = learn.qdrop_demo(sel, block, bits)
        pic = learn.qdrop_mix_picture(demo["x_fp"], demo["x_q"], p, seed)
    c = st.columns(4)
    c[0].metric("Elements kept float", f"{100 * pic['kept_float']:.1f}%", help="in this one draw of the mask")
    c[1].metric("Input MSE: quantized", f"{pic['mse_quantized']:.3g}", help="against the float input, this channel")
    c[2].metric(
        "Input MSE: mixed",
        f"{pic['mse_mixed']:.3g}",
        f"expected (1 − p)·{pic['mse_quantized']:.3g} = {pic['expected_mse_mixed']:.3g}",
        delta_color="off",
        delta_arrow="off",
    )
    gain = pic["snr_gain_db"]
    c[3].metric("Noise removed by the mix", f"{gain:.1f} dB" if math.isfinite(gain) else "all")
    st.plotly_chart(
        charts.learn.qdrop_maps_figure(demo["x_fp"], demo["x_q"], pic["mask"], pic["mixed"]),
        key="qd_maps",
        config=charts.base.CONFIG,
    )
    shape = "×".join(str(d) for d in demo["shape"])
    where = (
        f"channel {demo['channel']} of the first calibration image (the channel where quantization moved "
        "the input most)"
        if len(demo["shape"]) == 3
        else "tokens (rows) × features of the first calibration image"
    )
    st.caption(
        f"Input of {block} ({shape} per image): {where}. {100 * demo['quantized_fraction']:.0f}% of the "
        "block's input elements differ between the quantized and the float model."
    )
    st.plotly_chart(
        charts.learn.qdrop_curves_figure(demo["p"], demo["curves"], p), key="qd_curve", config=charts.base.CONFIG
    )
    st.markdown(
        "At p = 0 the block sees the quantized model's input: its output error is what BRECQ trains "
        "against. As p grows, the input noise falls linearly (dotted line) and so does the error of the "
        "float block; the quantized block keeps its own error at p = 1. With dropping inside the block as "
        "well (QDrop's training forward), the block sees every intermediate noise level: the loss it is "
        f"trained on averages over these noisy versions of the input. Averaged over {demo['draws']} masks "
        f"on {demo['images']} images."
    )


def render() -> None:
    """Draw the page."""
    st.title("Learn: QDrop's mixing")
    st.markdown(INTRO)
    require_model()
    st.fragment(_panel)(selection())


render()

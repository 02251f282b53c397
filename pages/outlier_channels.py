"""Outlier channels: per-channel weight and activation ranges of a layer, outlier scores, and what a grid does."""

from __future__ import annotations

from typing import Any

import streamlit as st

from ptq_ui import charts
from ptq_ui.services import diagnose, explore
from ptq_ui.state import Selection, selection
from ptq_ui.widgets import errors_shown, persistent
from ptq_ui.widgets.pickers import require_model

INTRO = """
One grid is shared by every channel of a tensor unless the quantizer is **per-channel** (weights here are
per output channel by default; activations are always **per tensor**). A single channel with a much larger
range than the others (an *outlier channel*) then sets the step size for all of them, and the small channels
lose their resolution. The **outlier score** of a channel is the robust z-score of its largest magnitude among
the tensor's channels (distance from the median in units of the median absolute deviation, so the outliers do
not hide themselves by inflating the spread); a few channels far above 3.5 are the signature. **Dead**
channels (always zero, e.g. after a ReLU) and near-constant ones carry no information but can still take up
grid range.
"""

SOURCES = {"weights": "weights (output channels)", "activations": "input activations (input channels)"}


def _controls(sel: Selection) -> tuple[str, int, float]:
    with errors_shown():
        layers = explore.quantizable_layers(sel)
    c1, c2, c3 = st.columns([3, 2, 2])
    layer = persistent(c1.selectbox, "oc_layer", "Layer", layers, options=layers)
    n = persistent(
        c2.slider,
        "oc_images",
        "Calibration images",
        8,
        512,
        step=8,
        help="Images whose activations are measured.",
        default=128,
    )
    z = persistent(c3.slider, "oc_z", "Outlier threshold (z-score)", 1.0, 20.0, step=0.5, default=3.5)
    return layer, int(n), float(z)


def _summary(stats: dict[str, Any], z: float, col: Any) -> None:
    scores = stats["z"]
    outliers = [i for i, s in enumerate(scores) if s > z]
    c = col.columns(4)
    c[0].metric("Channels", len(scores))
    c[1].metric("Outlier channels", len(outliers), help=f"z-score above {z:g}: {outliers[:12]}")
    c[2].metric("Largest z-score", f"{max(scores):.2f}" if scores else "n/a")
    c[3].metric(
        "Dead / near-constant",
        f"{len(stats['dead'])} / {len(stats['constant'])}",
        help=f"dead: {stats['dead'][:12]}; near-constant: {stats['constant'][:12]}",
    )


def _ranges_tab(data: dict[str, Any], source: str, z: float) -> None:
    stats = data[source]
    _summary(stats, z, st)
    st.plotly_chart(
        charts.diagnose.channel_ranges_figure(stats, SOURCES[source].capitalize(), z),
        key=f"oc_{source}",
        config=charts.base.CONFIG,
    )


def _map_tab(sel: Selection, layer: str, n: int) -> None:
    st.caption(
        "RepAPQ's view: the largest |activation| of every channel of a module's *output* on every "
        "calibration sample (re-parameterized blocks are merged first; their output is what the next "
        "quantized conv receives). Outliers that are *channel-specific* (a bright row) and "
        "*sample-specific* (a few bright cells in it) are what MSE-driven calibration over-reacts to. "
        "Channel score = the channel's largest value / the layer's median; sample score = a cell / "
        "its channel's median."
    )
    with errors_shown():
        names = diagnose.outlier_layers(sel)
    default = next((m for m in names if m == layer), names[0])
    module = persistent(st.selectbox, "oc_map_layer", "Module (output)", names, options=names, default=default)
    with errors_shown():
        got = diagnose.channel_sample_map(sel, module, min(n, 256))
    scores = got["channel_score"]
    c = st.columns(3)
    c[0].metric("Strongest channel score", f"{max(scores):.1f}×", help="max over samples / median of the layer")
    top = got["top"][0] if got["top"] else None
    c[1].metric(
        "Strongest sample score",
        f"{top['sample_score']:.1f}×" if top else "n/a",
        help=f"channel {top['channel']}, sample {top['sample']}" if top else None,
    )
    c[2].metric("Median channel maximum", f"{got['median']:.3g}")
    st.plotly_chart(
        charts.diagnose.channel_sample_heatmap(got["map"], f"{module}: max |x| per channel and sample"),
        key="oc_map",
        config=charts.base.CONFIG,
    )
    with st.expander("Strongest (channel, sample) outliers"):
        st.dataframe(got["top"], hide_index=True)


def _split_controls() -> tuple[str, int, bool, float, bool]:
    c1, c2, c3 = st.columns(3)
    source = persistent(
        c1.radio,
        "oc_split_source",
        "Tensor",
        list(SOURCES),
        format_func=SOURCES.get,
        options=list(SOURCES),
        default="activations",
    )
    bits = persistent(c2.slider, "oc_bits", "Bits", 2, 8, default=4)
    grans = ["per-tensor", "per-channel"]
    gran = persistent(
        c3.radio,
        "oc_gran",
        "Grid",
        grans,
        horizontal=True,
        help="One grid for the tensor, or one per channel.",
        options=grans,
    )
    c4, c5 = st.columns([3, 1])
    ratio = persistent(
        c4.slider,
        "oc_ratio",
        "Clipping ratio (share of the observed range the grid covers)",
        0.05,
        1.0,
        step=0.01,
        default=1.0,
    )
    sym = persistent(c5.toggle, "oc_sym", "Symmetric", default=False)
    return source, int(bits), gran == "per-channel", float(ratio), bool(sym)


def _split_tab(sel: Selection, layer: str, n: int) -> None:
    st.caption(
        "Each channel's quantization error at the chosen bit-width, split in two: **rounding** (values "
        "inside the grid move to the nearest level) and **clipping** (values beyond it are cut to the "
        "edge). A per-tensor grid covering an outlier channel gives the other channels a coarse step "
        "(high rounding error); shrinking the range clips the outlier instead. Per-channel grids give "
        "each channel its own step."
    )
    source, bits, per_channel, ratio, sym = _split_controls()
    with errors_shown():
        split = diagnose.error_split(sel, layer, source, bits, per_channel, ratio, sym, n)
    clip, rnd = sum(split["clipping"]), sum(split["rounding"])
    c = st.columns(3)
    c[0].metric("Rounding MSE (all channels)", f"{rnd / len(split['rounding']):.3g}")
    c[1].metric("Clipping MSE (all channels)", f"{clip / len(split['clipping']):.3g}")
    worst = max(range(len(split["total"])), key=lambda i: split["total"][i])
    c[2].metric("Worst channel", worst, help=f"MSE {split['total'][worst]:.3g}")
    title = f"{layer} {source} at {bits} bits, {'per-channel' if per_channel else 'per-tensor'}, ratio {ratio:.2f}"
    st.plotly_chart(charts.diagnose.error_split_figure(split, title), key="oc_split", config=charts.base.CONFIG)


def render() -> None:
    """Draw the page."""
    st.title("Outlier channels")
    st.markdown(INTRO)
    require_model()
    sel = selection()
    layer, n, z = _controls(sel)
    with errors_shown():
        data = diagnose.layer_ranges(sel, layer, n)
    tabs = st.tabs(["Weights", "Activations", "Channel × sample map", "Clipping vs rounding"])
    with tabs[0]:
        _ranges_tab(data, "weights", z)
    with tabs[1]:
        _ranges_tab(data, "activations", z)
    with tabs[2]:
        _map_tab(sel, layer, n)
    with tabs[3]:
        _split_tab(sel, layer, n)


render()

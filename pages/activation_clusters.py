"""Activation clusters: a layer's outputs (or the logits) of the float and quantized model in 2-D."""

from __future__ import annotations

from typing import Any

import streamlit as st

from ptq_ui import charts
from ptq_ui.charts.runs import bits_label
from ptq_ui.services import diagnose, explore
from ptq_ui.state import Selection, selection
from ptq_ui.widgets import errors_shown, job_panel, literal, persistent
from ptq_ui.widgets.forms import current_spec
from ptq_ui.widgets.pickers import require_model

INTRO = """
Every test image becomes one point: the chosen layer's output (average-pooled when it is large) projected to
2-D. **PCA** is fitted on the float model's features and the quantized features are mapped with *the same*
projection, so a point that moves was moved by quantization. **UMAP** (slower, computed on request) keeps
local neighbourhoods instead and is fitted on both sets together. Quantization noise blurs clusters and
pushes images across class borders; colour by *correct / wrong* to see which images it broke or fixed.
"""

PROJECTIONS = {"pca": "PCA (instant)", "umap": "UMAP (background job, at most 2,500 images)"}
MODES = ["side by side", "overlay"]


def _controls(sel: Selection) -> dict[str, Any]:
    with errors_shown():
        layers = [diagnose.LOGITS, *explore.quantizable_layers(sel)]
    c1, c2, c3 = st.columns([3, 2, 2])
    layer = persistent(
        c1.selectbox, "ac_layer", "Layer output", layers, help="'logits' is the model's output.", options=layers
    )
    bits = persistent(c2.slider, "ac_bits", "Bits (weights and activations)", 2, 8, default=4)
    n = persistent(c3.slider, "ac_images", "Test images", 50, 5000, step=50, default=1000)
    c4, c5, c6, c7 = st.columns([2, 2, 2, 1])
    method = persistent(
        c4.radio, "ac_method", "Projection", list(PROJECTIONS), format_func=PROJECTIONS.get, options=list(PROJECTIONS)
    )
    colour_by = charts.diagnose.COLOR_BY
    color = persistent(
        c5.radio, "ac_color", "Colour by", list(colour_by), format_func=colour_by.get, options=list(colour_by)
    )
    mode = persistent(c6.radio, "ac_mode", "View", MODES, options=MODES)
    k = persistent(c7.number_input, "ac_k", "k (clusters)", 1, 50, step=1, default=10)
    return {"layer": layer, "bits": int(bits), "n": int(n), "method": method, "color": color, "mode": mode, "k": int(k)}


def _numbers(view: dict[str, Any], classes: list[str]) -> None:
    outcome = view["outcome"]
    n = len(outcome)
    c = st.columns(4)
    c[0].metric("Images", n)
    c[1].metric("Broken by quantization", int((outcome == 1).sum()), help="float right, quantized wrong")
    c[2].metric("Fixed by quantization", int((outcome == 2).sum()), help="float wrong, quantized right")
    c[3].metric(
        "Median relative shift",
        f"{float(sorted(view['relative_shift'])[n // 2]):.3f}",
        help="|quantized − float| / mean |float| of the layer's features (before projection)",
    )
    if view["explained"]:
        st.caption(
            f"PC1 and PC2 explain {100 * view['explained'][0]:.1f}% and {100 * view['explained'][1]:.1f}% "
            f"of the float features' variance ({view['dim']} features per image)."
        )


def _umap(sel: Selection, spec: Any, ctl: dict[str, Any]) -> dict[str, Any]:
    """A finished UMAP view of these settings, else a button that computes it in the background (page stops)."""
    key = diagnose.umap_key(sel, spec, ctl["layer"], ctl["k"], ctl["n"])
    done: dict[str, Any] = st.session_state.setdefault("ac_umap_done", {})
    job = st.session_state.get("umap_job")
    if job is not None and not job.running and job.result and job.result["key"] not in done:
        done[job.result["key"]] = job.result["view"]
        while len(done) > 4:  # keep the session small
            done.pop(next(iter(done)))
    if key in done:
        return done[key]
    if job is not None and job.running:
        job_panel(job, "ac_umap")
        st.stop()
    if job is not None and job.snapshot().status == "failed":
        st.error(literal(f"UMAP failed: {job.snapshot().error}"))
    st.info("UMAP runs in the background on request (the first one in a server process compiles for a while).")
    if st.button("Compute UMAP", key="ac_umap_go"):
        with errors_shown():
            diagnose.start_umap(sel, spec, ctl["layer"], ctl["k"], ctl["n"])
        st.rerun()
    st.stop()


def render() -> None:
    """Draw the page."""
    st.title("Activation clusters")
    st.markdown(INTRO)
    info = require_model()
    sel = selection()
    ctl = _controls(sel)
    if ctl["method"] == "umap" and ctl["n"] > diagnose.MAX_POINTS // 2:
        st.error(
            f"UMAP takes at most {diagnose.MAX_POINTS:,} points (float and quantized together): choose "
            f"at most {diagnose.MAX_POINTS // 2:,} images, or PCA."
        )
        st.stop()
    if ctl["k"] > ctl["n"]:
        st.error("k cannot exceed the number of images.")
        st.stop()
    with errors_shown():
        layers = explore.quantizable_layers(sel)
        overrides = current_spec(layers).overrides
        use = bool(overrides) and persistent(
            st.checkbox,
            "ac_overrides",
            f"Also apply the Quantize page's {len(overrides)} per-layer override(s)",
            help="They fix those layers' bits, so the bits slider no longer moves them.",
            default=False,
        )
        base = current_spec(layers, overrides=use)
        spec = type(base).from_dict({**base.to_dict(), "wbits": ctl["bits"], "abits": ctl["bits"]})
    extra = f" plus the Quantize page's overrides ({', '.join(spec.overrides)})" if spec.overrides else ""
    st.caption(
        literal(
            f"Round-to-nearest at {bits_label(spec.wbits, spec.abits)}{extra}, with the observers and "
            f"first/last policy of the Quantize page; the first {ctl['n']:,} test images."
        )
    )
    if ctl["method"] == "umap":
        view = _umap(sel, spec, ctl)
    else:
        with errors_shown():
            view = diagnose.cluster_view(sel, spec, ctl["layer"], ctl["method"], ctl["k"], ctl["n"])
    _numbers(view, info["classes"])
    st.plotly_chart(
        charts.diagnose.cluster_figure(view, ctl["color"], ctl["mode"], info["classes"]),
        key="ac_scatter",
        config=charts.base.CONFIG,
    )


render()

"""Learn: CAT's clusters of quantized logits and the per-cluster affine fix."""

from __future__ import annotations

import streamlit as st

from ptq_ui import charts
from ptq_ui.services import learn
from ptq_ui.state import Selection, selection
from ptq_ui.widgets import errors_shown
from ptq_ui.widgets.pickers import require_model

INTRO = """
**CAT** (cluster-based affine transformation, Zoljodi et al., 2025) leaves the quantized network alone and
corrects its **logits**. On a fitting set it compares the quantized logits `z_q` with the float ones `z_f`,
groups the samples by the shape of `z_q` with k-means, and fits, for every cluster k and class c, a straight
line `z_f ≈ γ[k,c]·z_q + β[k,c]` by least squares. At test time an input goes to its nearest centroid and its
logits move part of the way to the line: `z̃ = (1 − α)·z + α·(γ[k]⊙z + β[k])`. One cluster (K = 1) is the
plain affine map the paper argues against; more clusters let the fix depend on what kind of input it is.

Here the selected model is quantized with round-to-nearest (8-bit first/last layers), CAT is fitted with the
core's `ptq_core.cat.fit_cat` on 1,024 calibration images that RTN did not use, and measured on the first
1,000 test images.
"""

KS = [1, 2, 4, 8, 16, 32, 64]


def _controls() -> tuple[int, int, float]:
    c1, c2, c3 = st.columns([1, 2, 2])
    bits = c1.selectbox("Bits (W and A)", [2, 3, 4], index=1, key="cat_bits")
    k = c2.select_slider("Clusters K", KS, value=8, key="cat_k")
    alpha = c3.slider("Blend α", 0.0, 1.0, 0.4, 0.05, key="cat_alpha", help="0: no correction; 1: the fitted line")
    return bits, k, alpha


def _metrics(res: dict) -> None:
    c = st.columns(4)
    c[0].metric("Float top-1", f"{res['fp_top1']:.2f}%")
    c[1].metric("Quantized top-1", f"{res['top1_base']:.2f}%")
    c[2].metric("With CAT", f"{res['top1']:.2f}%", f"{res['top1'] - res['top1_base']:+.2f} pts")
    c[3].metric(
        "Fixed / broken",
        f"{res['fixes']} / {res['breaks']}",
        help="test images wrong before and right after / right before and wrong after",
    )


def _affine_panel(res: dict, logits: dict, classes: list[str]) -> None:
    """One cluster, one class: the fitting samples, the fitted line and the blend."""
    sizes = res["fit_counts"]
    c1, c2 = st.columns(2)
    cluster = c1.selectbox(
        "Cluster", list(range(res["k"])), key="cat_cluster", format_func=lambda k: f"{k} ({sizes[k]} fitting images)"
    )
    names = classes if len(classes) == res["num_classes"] else [str(i) for i in range(res["num_classes"])]
    cls = c2.selectbox("Class", list(range(res["num_classes"])), key="cat_class", format_func=names.__getitem__)
    members = [i for i, a in enumerate(res["fit_assign"]) if a == cluster]
    zq = [float(logits["fit_q"][i, cls]) for i in members]
    zf = [float(logits["fit_f"][i, cls]) for i in members]
    gamma, beta = res["gamma"][cluster][cls], res["beta"][cluster][cls]
    title = f"Cluster {cluster}, class {names[cls]}: γ = {gamma:.3f}, β = {beta:.3f}"
    st.plotly_chart(
        charts.learn.cat_affine_figure(zq, zf, gamma, beta, res["alpha"], title),
        key="cat_affine",
        config=charts.base.CONFIG,
    )
    if cluster in res["fallback"]:
        st.caption("This cluster had too few fitting images: it keeps the identity (γ = 1, β = 0).")


def _panel(sel: Selection, classes: list[str]) -> None:
    bits, k, alpha = _controls()
    with errors_shown():
        res = learn.cat_demo(sel, bits, k, alpha)
        logits = learn.cat_logits(sel, bits)
    _metrics(res)
    st.caption(
        f"RTN W{bits}A{bits} (weights mse, activations min-max, 8-bit first/last layers, 256 calibration "
        f"images, seed 0) on {sel.data}; every accuracy here is on the first {len(res['labels']):,} test "
        "images, so it differs from runs evaluated on another subset or with other settings."
    )
    left, right = st.columns(2)
    hover = [
        f"label {classes[y] if y < len(classes) else y} · {s}"
        for y, s in zip(res["labels"], res["status"], strict=True)
    ]
    left.plotly_chart(
        charts.learn.cat_scatter(
            res["points_2d"], res["assign"], hover, "Quantized logits of the test images, by cluster"
        ),
        key="cat_clusters",
        config=charts.base.CONFIG,
    )
    right.plotly_chart(
        charts.learn.cluster_table_figure(res["acc_before"], res["acc_after"], res["eval_counts"]),
        key="cat_acc",
        config=charts.base.CONFIG,
    )
    _affine_panel(res, logits, classes)
    gap0, gap1 = res["gap_before"], res["gap_after"]
    st.caption(
        f"KL(float ‖ quantized) {gap0['kl']:.4f} → {gap1['kl']:.4f}; logit MSE {gap0['mse']:.3f} → "
        f"{gap1['mse']:.3f}. Cost: {res['overhead_floats']:,} extra numbers ({res['overhead_bytes']:,} bytes "
        "in fp32): the K×C slopes and shifts and the K centroids."
    )


def render() -> None:
    """Draw the page."""
    st.title("Learn: CAT's clusters")
    st.markdown(INTRO)
    info = require_model()
    st.fragment(_panel)(selection(), list(info["classes"]))


render()

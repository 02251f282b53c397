"""CAT corrections: clustering the quantized logits, fitting a scale and shift per cluster, and the effect."""

from __future__ import annotations

from typing import Any

import streamlit as st

from ptq_ui import charts
from ptq_ui.services import cat, explore, runs
from ptq_ui.state import selection
from ptq_ui.widgets import errors_shown, persistent
from ptq_ui.widgets.forms import current_spec, form
from ptq_ui.widgets.pickers import require_model

PLOT = charts.base.CONFIG


def _base_config() -> tuple[str, dict[str, Any]]:
    """The base quantization: RTN with the Quantize page's settings, or a saved run re-quantized."""
    sel = selection()
    with errors_shown():
        spec = current_spec(explore.quantizable_layers(sel))
    rtn = {"method": "rtn", "quant": spec.to_dict(), "calib": 256, "batch_size": 128, "seed": int(form()["seed"])}
    choices = cat.base_choices(sel.model, rtn)
    labels = list(choices)
    label = persistent(
        st.selectbox,
        "cat_base",
        "Base quantization",
        labels,
        help="CAT corrects the logits of this quantized model. A saved run is "
        "quantized again from its stored settings (same seed and images); "
        "reconstruction methods take minutes the first time.",
        options=labels,
        default=labels[0],
    )
    return label, choices[label]


def _knobs(classes: int) -> dict[str, Any]:
    """K, PCA dimensions, alpha and fitting-set size."""
    c1, c2, c3, c4 = st.columns(4)
    k = persistent(
        c1.select_slider,
        "cat_k",
        "Clusters K",
        cat.K_CHOICES,
        help="64 in the paper; 1 is one plain affine map per class.",
        options=cat.K_CHOICES,
        default=64,
    )
    pca_options = [0, *range(2, classes + 1)]
    pca = persistent(
        c2.select_slider,
        "cat_pca",
        "PCA dimensions",
        pca_options,
        format_func=lambda d: "none" if d == 0 else str(d),
        help="k-means on this many principal axes of the quantized logits "
        "(none: on the logits themselves, the paper's default).",
        options=pca_options,
        default=0,
    )
    alpha = persistent(
        c3.slider,
        "cat_alpha",
        "Alpha",
        0.0,
        1.0,
        step=0.05,
        help="Blend toward the cluster's affine map: 0 = no correction.",
        default=0.4,
    )
    fit = persistent(
        c4.select_slider,
        "cat_fit",
        "Fitting images",
        cat.FIT_CHOICES,
        help="From the calibration split, after the base method's own images.",
        options=cat.FIT_CHOICES,
        default=1024,
    )
    return {"k": int(k), "pca": int(pca) or None, "alpha": round(float(alpha), 2), "fit_size": int(fit)}


def _metrics(v: dict[str, Any], size_bits: int) -> None:
    c = st.columns(5)
    c[0].metric("Float top-1", f"{v['fp_top1']:.2f}%")
    c[1].metric("Base top-1", f"{v['top1_base']:.2f}%")
    c[2].metric("CAT top-1", f"{v['top1']:.2f}%", f"{v['top1'] - v['top1_base']:+.2f} pts")
    c[3].metric("Fixes / breaks", f"{v['fixes']} / {v['breaks']}", f"{v['fixes'] - v['breaks']:+d} net")
    share = 100.0 * 8 * v["overhead_bytes"] / max(size_bits, 1)
    c[4].metric(
        "CAT overhead (floats)",
        f"{v['overhead_floats']:,}",
        f"{share:.1f}% of the model",
        delta_color="off",
        help="Extra fp32 numbers: K·2·C gamma/beta, K·d centroids, d·C + C for PCA; against the "
        "quantized model's size.",
    )
    gb, ga = v["gap_before"], v["gap_after"]
    notes = [
        f"K = {v['k']} clusters, PCA {v['pca'] or 'none'}, alpha {v['alpha']:.2f}",
        f"KL(p_float ‖ p) {gb['kl']:.4f} → {ga['kl']:.4f}",
        f"logit MSE {gb['mse']:.4f} → {ga['mse']:.4f}",
    ]
    if v["fallback"]:
        notes.append(
            f"{len(v['fallback'])} cluster(s) with < {v['options']['min_cluster']} fitting samples kept at the identity"
        )
    if v["capped"]:
        notes.append(f"{v['capped']} slope(s) capped at ±{v['options']['max_gamma']:g}")
    st.caption(" · ".join(notes))
    if v["fp_top1"] - v["top1_base"] < 0.5:
        st.info(
            "The base model is already within half a point of float, so CAT has little to correct. Lower "
            "bits on the Quantize page (e.g. W4A2 or W2A2) show the effect clearly."
        )


def _clusters_tab(v: dict[str, Any], classes: list[str]) -> None:
    colour_by = st.radio(
        "Colour by",
        ["cluster", "class", "status"],
        horizontal=True,
        key="cat_colour",
        help="status: before → after the correction (right, wrong, fixed, broken).",
    )
    groups = {"cluster": v["assign"], "class": v["labels"], "status": v["status"]}[colour_by]
    st.plotly_chart(
        charts.cat.cluster_scatter(v["points_2d"], groups, v["centroids_2d"], colour_by, classes),
        key="cat_scatter",
        config=PLOT,
    )
    st.plotly_chart(
        charts.cat.cluster_sizes(v["fit_counts"], v["eval_counts"], fallback=v["fallback"]),
        key="cat_sizes",
        config=PLOT,
    )


def _tables_tab(v: dict[str, Any], classes: list[str]) -> None:
    left, right = st.columns(2)
    left.plotly_chart(
        charts.cat.table_heatmap(v["gamma"], "gamma (slope) per cluster and class", classes, 1.0),
        key="cat_gamma",
        config=PLOT,
    )
    right.plotly_chart(
        charts.cat.table_heatmap(v["beta"], "beta (shift) per cluster and class", classes, 0.0),
        key="cat_beta",
        config=PLOT,
    )
    st.plotly_chart(charts.cat.gamma_histogram(v["gamma"], v["options"]["max_gamma"]), key="cat_ghist", config=PLOT)


def _before_after_tab(v: dict[str, Any], classes: list[str], ctx: dict[str, Any]) -> None:
    mode = st.radio("Show", ["a cluster (mean logits)", "one test image"], horizontal=True, key="cat_ba_mode")
    if mode.startswith("a cluster"):
        k = st.selectbox(
            "Cluster",
            list(range(v["k"])),
            key="cat_ba_cluster",
            format_func=lambda j: f"{j} ({v['eval_counts'][j]} test images)",
        )
        means = {name: rows[k] for name, rows in v["cluster_means"].items()}
        st.plotly_chart(
            charts.cat.logit_bars(classes, means, f"Mean logits of cluster {k} (test images)"),
            key="cat_ba_bars",
            config=PLOT,
        )
        return
    n = v["eval_set"]["size"]
    i = st.number_input("Test image", 0, n - 1, value=0, step=1, key="cat_ba_index")
    with errors_shown():
        s = cat.sample_logits(ctx["sel"], ctx["config"], ctx["eval_limit"], index=int(i), **ctx["knobs_fit"])
    pred = {name: classes[max(range(len(z)), key=z.__getitem__)] for name, z in s.items() if isinstance(z, list)}
    st.caption(
        f"True class {classes[s['label']]} · cluster {s['cluster']} · predicted: float {pred['float']}, "
        f"quantized {pred['quantized']}, corrected {pred['corrected']}"
    )
    logits = {name: s[name] for name in ("float", "quantized", "corrected")}
    st.plotly_chart(
        charts.cat.logit_bars(classes, logits, f"Logits of test image {i}", s["label"]), key="cat_ba_bars", config=PLOT
    )


def _sweep(v: dict[str, Any], ctx: dict[str, Any]) -> None:
    names = {"k": "clusters K", "pca": "PCA dimensions", "fit_size": "fitting images"}
    knob = st.radio(
        "Sweep",
        list(names),
        format_func=names.get,
        horizontal=True,
        key="cat_sweep",
        help="Refit CAT for every value of one knob, the others as set above.",
    )
    with errors_shown():
        curve = cat.sweep(ctx["sel"], ctx["config"], ctx["eval_limit"], knob, **ctx["knobs_fit"])
    current = ctx["knobs_fit"][knob]
    st.plotly_chart(
        charts.cat.sweep_curve(curve["values"], curve["top1"], v["top1_base"], names[knob], current),
        key="cat_sweep_curve",
        config=PLOT,
    )


def _outcome_tab(v: dict[str, Any]) -> None:
    left, right = st.columns(2)
    left.plotly_chart(charts.cat.cluster_accuracy(v["acc_before"], v["acc_after"]), key="cat_acc", config=PLOT)
    right.plotly_chart(
        charts.cat.fixes_breaks(v["fixes_per_cluster"], v["breaks_per_cluster"]), key="cat_fb", config=PLOT
    )
    curve = v["alpha_curve"]
    st.plotly_chart(
        charts.cat.alpha_curve(curve["alpha"], curve["top1"], v["top1_base"], v["alpha"]),
        key="cat_alpha_curve",
        config=PLOT,
    )


def render() -> None:
    """Draw the page."""
    st.title("CAT corrections")
    st.caption(
        "CAT (cluster-based affine transformation) leaves the quantized network alone and corrects its "
        "output: the quantized logits of a fitting set are grouped by k-means, and for every cluster and "
        "class a scale gamma and shift beta mapping quantized to float logits are solved in closed form. "
        "A test image goes to its nearest centroid and its logits move a fraction alpha toward that "
        "cluster's map. K = 1 is one plain affine map per class."
    )
    require_model()
    sel = selection()
    label, config = _base_config()
    eval_limit = runs.default_eval_limit() or 2000
    with errors_shown():
        info = cat.logits_info(sel, config, eval_limit)
    classes = info["classes"]
    knobs = _knobs(len(classes))
    with errors_shown():
        v = cat.cat_view(sel, config, eval_limit, **knobs)
    fs, es = v["fit_set"], v["eval_set"]
    st.caption(
        f"Base: {label}. Fitting set: {fs['size']} calibration-split images after the base method's first "
        f"{fs['offset']} (seed {fs['seed']}{', disjoint' if fs['disjoint'] else ', overlapping'}); "
        f"evaluation: the first {es['size']} test images."
    )
    _metrics(v, info["size_bits"])
    ctx = {"sel": sel, "config": config, "eval_limit": eval_limit, "knobs_fit": knobs}
    tabs = st.tabs(["Clusters", "Gamma / beta", "Before / after", "Accuracy: fixes, breaks, sweeps"])
    with tabs[0]:
        _clusters_tab(v, classes)
    with tabs[1]:
        _tables_tab(v, classes)
    with tabs[2]:
        _before_after_tab(v, classes, ctx)
    with tabs[3]:
        _outcome_tab(v)
        _sweep(v, ctx)


render()

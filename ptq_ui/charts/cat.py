"""Plotly figures of the CAT corrections page: pure functions of plain data (no torch, no Streamlit)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from .base import colour, layout, legend_below

__all__ = [
    "STATUS_COLOURS",
    "cluster_scatter",
    "cluster_sizes",
    "table_heatmap",
    "gamma_histogram",
    "cluster_accuracy",
    "fixes_breaks",
    "logit_bars",
    "alpha_curve",
    "sweep_curve",
]

STATUS_COLOURS = {"right": "#b0b7c3", "wrong": "#636363", "fixed": "#00cc96", "broken": "#ef553b"}


def cluster_scatter(
    points: Sequence[Sequence[float]],
    groups: Sequence[Any],
    centroids: Sequence[Sequence[float]],
    colour_by: str,
    classes: Sequence[str] | None = None,
) -> go.Figure:
    """Evaluation samples in the 2-D PCA plane of the quantized logits, one trace per group, with centroids.

    Args:
        points: [N, 2] coordinates.
        groups: Per point: a cluster index, a class index or a status ("right", "wrong", "fixed", "broken").
        centroids: [K, 2] cluster centres in the same plane.
        colour_by: "cluster", "class" or "status" (names the legend).
        classes: Class names, for colour_by "class".
    """
    fig = go.Figure()
    order = list(STATUS_COLOURS) if colour_by == "status" else sorted(set(groups))
    for i, g in enumerate(order):
        idx = [j for j, v in enumerate(groups) if v == g]
        if not idx:
            continue
        name = classes[g] if colour_by == "class" and classes else f"cluster {g}" if colour_by == "cluster" else g
        shade = STATUS_COLOURS.get(g) if colour_by == "status" else colour(i)
        fig.add_trace(
            go.Scattergl(
                x=[points[j][0] for j in idx],
                y=[points[j][1] for j in idx],
                mode="markers",
                name=str(name),
                marker=dict(size=5, color=shade, opacity=0.7),
                showlegend=colour_by != "cluster" or len(order) <= 16,
            )
        )
    fig.add_scatter(
        x=[c[0] for c in centroids],
        y=[c[1] for c in centroids],
        mode="markers+text",
        name="centroids",
        text=[str(k) for k in range(len(centroids))],
        textposition="top center",
        marker=dict(symbol="x", size=10, color="black"),
    )
    return layout(fig, f"Quantized logits, first two principal axes (colour: {colour_by})", "PC 1", "PC 2", 460)


def cluster_sizes(
    fit_counts: Sequence[int], eval_counts: Sequence[int], small: int = 20, fallback: Sequence[int] = ()
) -> go.Figure:
    """Fitting samples per cluster (red below `small`, grey for identity fallbacks) beside evaluation samples."""
    ks = list(range(len(fit_counts)))
    colours = [
        "#b0b7c3" if k in set(fallback) else "#ef553b" if n < small else "#636efa"
        for k, n in zip(ks, fit_counts, strict=True)
    ]
    fig = go.Figure()
    fig.add_bar(x=ks, y=list(fit_counts), name="fitting samples", marker_color=colours)
    fig.add_bar(x=ks, y=list(eval_counts), name="evaluation samples", marker_color="#00cc96", opacity=0.6)
    fig.add_hline(y=small, line_dash="dot", annotation_text=f"{small} samples")
    fig.update_layout(barmode="group")
    return layout(
        fig, "Cluster sizes (red: fewer than 20 fitting samples; grey: kept at identity)", "cluster", "samples"
    )


def table_heatmap(values: Sequence[Sequence[float]], title: str, classes: Sequence[str], centre: float) -> go.Figure:
    """Cluster x class heat map of gamma (centre 1) or beta (centre 0)."""
    fig = go.Figure(
        go.Heatmap(
            z=[list(r) for r in values],
            x=list(classes),
            y=list(range(len(values))),
            colorscale="RdBu",
            zmid=centre,
            colorbar=dict(title=""),
            hovertemplate="cluster %{y}<br>%{x}<br>%{z:.3f}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed")
    return layout(fig, title, "class", "cluster", 420)


def gamma_histogram(gamma: Sequence[Sequence[float]], cap: float | None) -> go.Figure:
    """Histogram of every slope, with the cap marked."""
    flat = [v for row in gamma for v in row]
    fig = go.Figure(go.Histogram(x=flat, nbinsx=60, marker_color="#636efa"))
    if cap is not None:
        for x in (-cap, cap):
            fig.add_vline(x=x, line_dash="dot", line_color="#ef553b")
    fig.add_vline(x=1.0, line_color="black", annotation_text="1 = identity")
    return layout(fig, "Slopes gamma (all clusters and classes)", "gamma", "count", 320)


def cluster_accuracy(before: Sequence[float | None], after: Sequence[float | None]) -> go.Figure:
    """Per-cluster top-1 on the evaluation set before and after the correction."""
    ks = list(range(len(before)))
    fig = go.Figure()
    fig.add_bar(x=ks, y=list(after), name="after (CAT)", marker_color="#636efa")
    fig.add_scatter(
        x=ks,
        y=list(before),
        name="before (quantized)",
        mode="markers",
        marker=dict(symbol="line-ew-open", size=12, color="black", line=dict(width=2)),
    )
    return legend_below(layout(fig, "Top-1 per cluster (test images)", "cluster", "top-1 (%)"))


def fixes_breaks(fixes: Sequence[int], breaks: Sequence[int]) -> go.Figure:
    """Per cluster: samples CAT fixes (up) and breaks (down)."""
    ks = list(range(len(fixes)))
    fig = go.Figure()
    fig.add_bar(x=ks, y=list(fixes), name="fixed (wrong → right)", marker_color=STATUS_COLOURS["fixed"])
    fig.add_bar(x=ks, y=[-b for b in breaks], name="broken (right → wrong)", marker_color=STATUS_COLOURS["broken"])
    fig.update_layout(barmode="relative")
    return legend_below(layout(fig, "Fixes and breaks per cluster", "cluster", "samples"))


def logit_bars(
    classes: Sequence[str], logits: dict[str, Sequence[float]], title: str, label: int | None = None
) -> go.Figure:
    """Float, quantized and corrected logits per class side by side (true class starred)."""
    colours = {"float": "#00cc96", "quantized": "#b0b7c3", "corrected": "#636efa"}
    names = [f"★ {c}" if i == label else c for i, c in enumerate(classes)]
    fig = go.Figure()
    for name, values in logits.items():
        fig.add_bar(x=names, y=list(values), name=name, marker_color=colours.get(name))
    fig.update_layout(barmode="group")
    return layout(fig, title, "class", "logit")


def alpha_curve(alphas: Sequence[float], top1: Sequence[float], base: float, current: float) -> go.Figure:
    """Evaluation top-1 against alpha for the current fit, with the base accuracy and the chosen alpha."""
    fig = go.Figure(go.Scatter(x=list(alphas), y=list(top1), mode="lines+markers", name="CAT"))
    fig.add_hline(y=base, line_dash="dot", annotation_text="base (alpha 0)")
    fig.add_vline(x=current, line_color="#ef553b")
    return layout(fig, "Top-1 against alpha (this fit)", "alpha", "top-1 (%)", 320)


def sweep_curve(values: Sequence[Any], top1: Sequence[float], base: float, knob: str, current: Any) -> go.Figure:
    """Evaluation top-1 against one knob's values (categorical axis), with the base accuracy and the current value."""
    labels = [str(v) if not (knob == "PCA dimensions" and v == 0) else "none" for v in values]
    cur = "none" if knob == "PCA dimensions" and not current else str(current)
    fig = go.Figure(go.Scatter(x=labels, y=list(top1), mode="lines+markers", name="CAT"))
    fig.add_hline(y=base, line_dash="dot", annotation_text="base")
    if cur in labels:
        fig.add_scatter(
            x=[cur], y=[top1[labels.index(cur)]], mode="markers", name="current", marker=dict(size=12, color="#ef553b")
        )
    fig.update_xaxes(type="category")
    return layout(fig, f"Top-1 against {knob} (other knobs as set)", knob, "top-1 (%)", 320)

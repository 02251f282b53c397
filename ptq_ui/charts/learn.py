"""Plotly figures of the Learn pages on AdaRound, QDrop, multipoint and CAT (pure functions of plain data)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .base import colour, layout

__all__ = [
    "rectified_sigmoid_figure",
    "h_evolution_figure",
    "adaround_loss_figure",
    "rounding_scatter",
    "qdrop_curves_figure",
    "qdrop_maps_figure",
    "residual_figure",
    "points_figure",
    "cat_scatter",
    "cat_affine_figure",
    "budget_figure",
    "points_histogram",
    "cluster_table_figure",
]

_MASK = [[0.0, "#ffffff"], [1.0, "#222222"]]  # 1 (keep float) drawn dark
DECISIONS = {0: ("as nearest", "#9aa0a6"), 1: ("flipped up", "#ef553b"), -1: ("flipped down", "#636efa")}


def rectified_sigmoid_figure(curve: dict[str, list[float]], v_marks: Sequence[float] = ()) -> go.Figure:
    """h(V) = clip(sigmoid(V)(zeta - gamma) + gamma, 0, 1) beside sigmoid(V)."""
    fig = go.Figure()
    fig.add_scatter(x=curve["v"], y=curve["h"], mode="lines", name="h(V), rectified sigmoid", line=dict(width=3))
    fig.add_scatter(x=curve["v"], y=curve["sigmoid"], mode="lines", name="sigmoid(V)", line=dict(dash="dot"))
    fig.add_hline(y=0.5, line=dict(color="#9aa0a6", width=1, dash="dash"))
    return layout(fig, "The rounding variable: h(V) reaches exactly 0 and 1", "V", "h(V)", height=320)


def h_evolution_figure(h_init: Sequence[int], snapshots: Sequence[dict[str, Any]], bins: int) -> go.Figure:
    """Heatmap: share of weights per h bin (x) at each recorded step (y), starting from h = fractional part."""
    rows = [list(h_init)] + [list(s["hist"]) for s in snapshots]
    steps = [0] + [int(s["step"]) for s in snapshots]
    total = max(1, sum(h_init))
    z = np.asarray(rows, dtype=float) / total
    centers = [(i + 0.5) / bins for i in range(bins)]
    fig = go.Figure(
        go.Heatmap(
            x=centers,
            y=steps,
            z=np.log10(z + 1e-4),
            colorscale="Viridis",
            customdata=z,
            hovertemplate="h ≈ %{x:.2f}<br>step %{y}<br>%{customdata:.1%} of weights<extra></extra>",
            colorbar=dict(title="log10 share"),
        )
    )
    return layout(fig, "h(V) during training (0 = down, 1 = up)", "h(V)", "step")


def adaround_loss_figure(history: Sequence[dict[str, float]]) -> go.Figure:
    """Reconstruction loss, rounding regulariser and total against the step (log scale)."""
    fig = go.Figure()
    for i, name in enumerate(k for k in ("rec", "round", "total") if history and k in history[-1]):
        pts = [h for h in history if name in h]
        fig.add_scatter(
            x=[h["step"] for h in pts],
            y=[h[name] for h in pts],
            mode="lines+markers",
            name=name,
            line=dict(color=colour(i)),
        )
    fig.update_yaxes(type="log")
    return layout(fig, "Loss (the regulariser starts after the 20 % warm-up)", "step", "loss (log)", height=320)


def rounding_scatter(scatter: dict[str, list[float]]) -> go.Figure:
    """Fractional part of W/s (x) against the learned h (y), coloured by the decision against nearest."""
    fig = go.Figure()
    frac, h, dec = (np.asarray(scatter[k]) for k in ("frac", "h", "decision"))
    for code, (name, color) in DECISIONS.items():
        sel = dec == code
        fig.add_scatter(
            x=frac[sel],
            y=h[sel],
            mode="markers",
            name=f"{name} ({int(sel.sum())})",
            marker=dict(size=5, color=color, opacity=0.6),
        )
    fig.add_vline(x=0.5, line=dict(color="#444", width=1, dash="dash"))
    return layout(
        fig, "Nearest rounds up right of the dashed line", "fractional part of W / s", "learned h(V) at the end"
    )


def qdrop_curves_figure(p: Sequence[float], curves: dict[str, Sequence[float]], chosen: float) -> go.Figure:
    """Block output error (and input distance) against the drop probability p."""
    fig = go.Figure()
    for i, (name, ys) in enumerate(curves.items()):
        dash = "dot" if name == "input distance" else None
        fig.add_scatter(x=list(p), y=list(ys), mode="lines+markers", name=name, line=dict(color=colour(i), dash=dash))
    fig.add_vline(x=chosen, line=dict(color="#444", width=1, dash="dash"))
    return layout(
        fig,
        "Error against the float block output as p grows",
        "drop probability p (share kept float)",
        "squared error (sum over channels, mean over the rest)",
    )


def qdrop_maps_figure(x_fp: np.ndarray, x_q: np.ndarray, mask: np.ndarray, mixed: np.ndarray) -> go.Figure:
    """Four heatmaps of one channel: float input, quantized input, mask (1 = float), the mix."""
    titles = ("float input", "quantized-model input", "mask (black = keep float)", "mixed input")
    fig = make_subplots(rows=1, cols=4, subplot_titles=titles, horizontal_spacing=0.03)
    lo, hi = float(min(x_fp.min(), x_q.min())), float(max(x_fp.max(), x_q.max()))
    maps = (x_fp, x_q, mask, mixed)
    for i, m in enumerate(maps):
        is_mask = i == 2
        fig.add_trace(
            go.Heatmap(
                z=np.asarray(m)[::-1],
                colorscale=_MASK if is_mask else "Viridis",
                zmin=0 if is_mask else lo,
                zmax=1 if is_mask else hi,
                showscale=False,
                hovertemplate="%{z:.3g}<extra></extra>",
            ),
            1,
            i + 1,
        )
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, scaleanchor="x")
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def residual_figure(norms: Sequence[float], errors: Sequence[float] | None = None) -> go.Figure:
    """Residual norm |r_i| (and the output error) after each point, log scale."""
    fig = go.Figure()
    x = list(range(len(norms)))
    fig.add_bar(x=x, y=list(norms), name="|w - w̃_n| (weight residual)", marker_color=colour(0))
    if errors is not None:
        fig.add_scatter(
            x=x,
            y=list(errors),
            mode="lines+markers",
            name="output error |Xw - Xw̃_n|",
            line=dict(color=colour(1)),
            yaxis="y2",
        )
        fig.update_layout(yaxis2=dict(overlaying="y", side="right", type="log", showgrid=False))
    fig.update_layout(yaxis=dict(type="log"))
    fig.update_xaxes(tickmode="array", tickvals=x, ticktext=["0 (w)"] + [str(i) for i in x[1:]])
    return layout(fig, "The residual after each point", "points n", "norm (log)", height=340)


def points_figure(w: Sequence[float], partial: Sequence[Sequence[float]], shown: int) -> go.Figure:
    """The channel's weights (sorted) and the sum of the first n points, for n = 1..`shown`."""
    order = np.argsort(np.asarray(w))
    fig = go.Figure()
    fig.add_scatter(y=np.asarray(w)[order], mode="lines", name="float w", line=dict(color="#222", width=3))
    for n in range(1, min(shown, len(partial)) + 1):
        fig.add_scatter(
            y=np.asarray(partial[n - 1])[order],
            mode="lines",
            name=f"sum of {n} point(s)",
            line=dict(color=colour(n), shape="hv"),
        )
    return layout(
        fig,
        "Weights of the channel (sorted) and their multipoint approximations",
        "weight (sorted)",
        "value",
        height=340,
    )


def cat_scatter(xy: np.ndarray, labels: Sequence[int], hover: Sequence[str], title: str) -> go.Figure:
    """2-D projection of the logits, one colour per cluster."""
    fig = go.Figure()
    xy, labels = np.asarray(xy), np.asarray(labels)
    for i, k in enumerate(sorted(set(labels.tolist()))):
        sel = labels == k
        fig.add_scatter(
            x=xy[sel, 0],
            y=xy[sel, 1],
            mode="markers",
            name=f"cluster {k}",
            marker=dict(size=6, color=colour(i), opacity=0.7),
            text=[hover[j] for j in np.flatnonzero(sel)],
            hovertemplate="%{text}<extra></extra>",
        )
    layout(fig, title, "PC 1 of the quantized logits", "PC 2", height=420)
    fig.update_layout(legend=dict(orientation="v", x=1.02, y=1.0, yanchor="top"))
    return fig


def cat_affine_figure(
    zq: Sequence[float], zf: Sequence[float], gamma: float, beta: float, alpha: float, title: str
) -> go.Figure:
    """Quantized (x) against float (y) logit of one class in one cluster, with the fitted line and the blend."""
    zq, zf = np.asarray(zq), np.asarray(zf)
    fig = go.Figure()
    fig.add_scatter(x=zq, y=zf, mode="markers", name="samples", marker=dict(size=6, opacity=0.7))
    if len(zq):
        xs = np.linspace(float(zq.min()), float(zq.max()), 20)
        fig.add_scatter(x=xs, y=gamma * xs + beta, mode="lines", name=f"fit: {gamma:.2f}·z + {beta:.2f}")
        fig.add_scatter(
            x=xs,
            y=(1 - alpha) * xs + alpha * (gamma * xs + beta),
            mode="lines",
            name=f"blend α = {alpha:.2f}",
            line=dict(dash="dash"),
        )
        fig.add_scatter(x=xs, y=xs, mode="lines", name="no change", line=dict(color="#9aa0a6", dash="dot"))
    return layout(fig, title, "quantized logit", "float logit", height=380)


def budget_figure(curve: dict[str, list[float]], chosen: float) -> go.Figure:
    """Layer output error against the extra-point budget: error-driven against random channel choice."""
    fig = go.Figure()
    fig.add_scatter(x=curve["budget"], y=curve["error"], mode="lines+markers", name="largest output error first")
    fig.add_scatter(
        x=curve["budget"], y=curve["random"], mode="lines+markers", name="random channels", line=dict(dash="dot")
    )
    fig.add_vline(x=chosen, line=dict(color="#444", width=1, dash="dash"))
    fig.update_yaxes(type="log")
    return layout(
        fig,
        "Which channels get the extra points matters",
        "extra points (% of channels)",
        "layer output error (log)",
        height=340,
    )


def points_histogram(points: Sequence[int]) -> go.Figure:
    """How many channels got 1, 2, ... points."""
    values, counts = np.unique(np.asarray(points), return_counts=True)
    fig = go.Figure(
        go.Bar(x=[str(v) for v in values], y=counts, marker_color=colour(2), text=counts, textposition="outside")
    )
    fig.update_xaxes(type="category")
    fig.update_traces(cliponaxis=False)
    return layout(fig, "Points per channel at this budget", "points", "channels", height=300)


def cluster_table_figure(
    acc_before: Sequence[float | None], acc_after: Sequence[float | None], counts: Sequence[int]
) -> go.Figure:
    """Per-cluster accuracy before and after CAT on the evaluation set (bar pairs)."""
    ks = [str(i) for i in range(len(counts))]
    fig = go.Figure()
    fig.add_bar(x=ks, y=list(acc_before), name="quantized", marker_color=colour(1))
    fig.add_bar(
        x=ks,
        y=list(acc_after),
        name="with CAT",
        marker_color=colour(2),
        customdata=list(counts),
        hovertemplate="cluster %{x}<br>%{y:.1f}%<br>%{customdata} images",
    )
    fig.update_xaxes(type="category")
    return layout(fig, "Accuracy per cluster (evaluation images)", "cluster", "top-1 (%)", height=320)

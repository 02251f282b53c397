"""Plotly figures of the Diagnose pages: pure functions of plain data; no torch, no Streamlit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .base import colour, finite, layout

__all__ = [
    "culprit_bars",
    "channel_ranges_figure",
    "channel_sample_heatmap",
    "error_split_figure",
    "cluster_figure",
    "sensitivity_heatmap",
    "split_bars",
    "allocation_figure",
    "COLOR_BY",
]

_OUTCOME_COLORS = ("#00cc96", "#ef553b", "#636efa", "#7f7f7f")
COLOR_BY = {"class": "true class", "cluster": "k-means cluster (float features)", "outcome": "correct / wrong"}


def channel_ranges_figure(stats: dict[str, Any], what: str, z_threshold: float) -> go.Figure:
    """Box per channel (min, quartiles, max) on top; outlier z-score bars below with the threshold."""
    z = np.asarray(stats["z"], dtype=float)
    n = len(z)
    channels = list(range(n))
    outlier = z > z_threshold
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.65, 0.35], vertical_spacing=0.06)
    for flag, color, name in ((False, "#636efa", "channels"), (True, "#ef553b", f"outliers (z > {z_threshold:g})")):
        idx = [c for c in channels if bool(outlier[c]) == flag]
        if not idx:
            continue
        fig.add_trace(
            go.Box(
                x=idx,
                q1=[stats["q25"][c] for c in idx],
                median=[stats["median"][c] for c in idx],
                q3=[stats["q75"][c] for c in idx],
                lowerfence=[stats["minimum"][c] for c in idx],
                upperfence=[stats["maximum"][c] for c in idx],
                name=name,
                marker_color=color,
                line=dict(width=1),
            ),
            row=1,
            col=1,
        )
    fig.add_bar(
        x=channels,
        y=z.tolist(),
        marker_color=["#ef553b" if o else "#9aa5ff" for o in outlier],
        name="outlier score (z of max |x|)",
        row=2,
        col=1,
        showlegend=False,
        hovertemplate="channel %{x}<br>z = %{y:.2f}<extra></extra>",
    )
    fig.add_hline(y=z_threshold, line_dash="dash", line_color="#ef553b", row=2, col=1)
    fig.update_yaxes(title_text="value", row=1, col=1)
    fig.update_yaxes(title_text="z-score", row=2, col=1)
    fig.update_xaxes(title_text="channel", row=2, col=1)
    return layout(fig, f"{what}: range of every channel (box = quartiles, whiskers = min/max)", height=520)


def channel_sample_heatmap(values: Sequence[Sequence[float]], title: str) -> go.Figure:
    """RepAPQ's view: max |activation| of every channel (rows) on every sample (columns)."""
    arr = np.asarray(values, dtype=float)
    fig = go.Figure(
        go.Heatmap(
            z=arr,
            colorscale="Viridis",
            colorbar=dict(title="max |x|"),
            hovertemplate="channel %{y}<br>sample %{x}<br>max |x| %{z:.3g}<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="calibration sample")
    fig.update_yaxes(title_text="channel")
    return layout(fig, title, height=420)


def error_split_figure(split: dict[str, Any], title: str) -> go.Figure:
    """Stacked bars per channel: clipping MSE and rounding MSE (log axis when they span decades)."""
    clip, rnd = np.asarray(split["clipping"], float), np.asarray(split["rounding"], float)
    channels = list(range(len(clip)))
    fig = go.Figure()
    fig.add_bar(x=channels, y=rnd.tolist(), name="rounding (inside the grid)", marker_color="#636efa")
    fig.add_bar(
        x=channels,
        y=clip.tolist(),
        name="clipping (beyond the grid)",
        marker_color="#ef553b",
        customdata=[100 * f for f in split["clip_fraction"]],
        hovertemplate="channel %{x}<br>clipping MSE %{y:.3g}<br>%{customdata:.2f}% clipped<extra></extra>",
    )
    fig.update_layout(barmode="stack")
    fig.update_xaxes(title_text="channel")
    fig.update_yaxes(title_text="MSE per value")
    return layout(fig, title, height=360)


def _color_groups(view: dict[str, Any], color_by: str, class_names: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """(legend name, boolean mask) per colour group."""
    if color_by == "class":
        values = np.asarray(view["labels"])
        names = {i: (class_names[i] if i < len(class_names) else str(i)) for i in np.unique(values)}
    elif color_by == "cluster":
        values = np.asarray(view["clusters"])
        names = {i: f"cluster {i}" for i in np.unique(values)}
    elif color_by == "outcome":
        values = np.asarray(view["outcome"])
        names = {i: view["outcome_names"][i] for i in np.unique(values)}
    else:
        raise ValueError(f"unknown colouring {color_by!r}")
    return [(names[i], values == i) for i in sorted(names)]


def _color(color_by: str, i: int) -> str:
    return _OUTCOME_COLORS[i % 4] if color_by == "outcome" else colour(i)


def cluster_figure(view: dict[str, Any], color_by: str, mode: str, class_names: Sequence[str]) -> go.Figure:
    """Float and quantized 2-D coordinates: side by side, or overlaid with float -> quantized arrows.

    WebGL scatter (`go.Scattergl`) throughout; one trace per colour group and panel.
    """
    f, q = np.asarray(view["float"]), np.asarray(view["quant"])
    groups = _color_groups(view, color_by, class_names)
    axis = "PC" if view["method"] == "pca" else "UMAP "
    if mode == "side by side":
        fig = make_subplots(
            rows=1, cols=2, shared_xaxes=True, shared_yaxes=True, subplot_titles=("float model", "quantized model")
        )
        for gi, (name, mask) in enumerate(groups):
            for col, pts in ((1, f), (2, q)):
                fig.add_trace(
                    go.Scattergl(
                        x=pts[mask, 0],
                        y=pts[mask, 1],
                        mode="markers",
                        name=name,
                        legendgroup=name,
                        showlegend=col == 1,
                        marker=dict(size=5, color=_color(color_by, gi), opacity=0.75),
                    ),
                    row=1,
                    col=col,
                )
        fig.update_xaxes(title_text=f"{axis}1")
        fig.update_yaxes(title_text=f"{axis}2", col=1)
        return layout(fig, "Float and quantized, same projection", height=480)
    if mode != "overlay":
        raise ValueError(f"unknown mode {mode!r}")
    fig = go.Figure()
    xs = np.full(3 * len(f), np.nan)
    ys = np.full(3 * len(f), np.nan)
    xs[0::3], xs[1::3], ys[0::3], ys[1::3] = f[:, 0], q[:, 0], f[:, 1], q[:, 1]
    fig.add_trace(
        go.Scattergl(
            x=xs,
            y=ys,
            mode="lines",
            name="displacement",
            hoverinfo="skip",
            line=dict(color="rgba(120,120,120,0.35)", width=1),
        )
    )
    for gi, (name, mask) in enumerate(groups):
        color = _color(color_by, gi)
        fig.add_trace(
            go.Scattergl(
                x=f[mask, 0],
                y=f[mask, 1],
                mode="markers",
                name=f"{name} (float)",
                legendgroup=name,
                marker=dict(size=5, color=color, symbol="circle-open"),
            )
        )
        fig.add_trace(
            go.Scattergl(
                x=q[mask, 0],
                y=q[mask, 1],
                mode="markers",
                name=f"{name} (quantized)",
                legendgroup=name,
                marker=dict(size=5, color=color, opacity=0.8),
            )
        )
    fig.update_xaxes(title_text=f"{axis}1")
    fig.update_yaxes(title_text=f"{axis}2")
    return layout(fig, "Overlay: open = float, filled = quantized, line = displacement", height=560)


def _setting(row: dict[str, Any]) -> str:
    return row.get("setting") or f"{row['bits']}-bit"


def sensitivity_heatmap(
    rows: Sequence[dict[str, Any]], value: str, title: str, colorbar: str, reverse: bool = False
) -> go.Figure:
    """Layers (x, execution order) x bit-widths (y) heat map of one value (SQNR or accuracy drop)."""
    layers = list(dict.fromkeys(r["layer"] for r in sorted(rows, key=lambda r: r["index"])))
    labels = list(dict.fromkeys(_setting(r) for r in rows))
    grid = [[None] * len(layers) for _ in labels]
    for r in rows:
        grid[labels.index(_setting(r))][layers.index(r["layer"])] = finite(r[value])
    fig = go.Figure(
        go.Heatmap(
            z=grid,
            x=layers,
            y=labels,
            colorscale="RdYlGn",
            reversescale=reverse,
            colorbar=dict(title=colorbar),
            hovertemplate="%{x}<br>%{y}<br>%{z:.2f}<extra></extra>",
        )
    )
    fig.update_xaxes(tickangle=-45, title_text="layer (execution order)")
    return layout(fig, title, height=340)


def split_bars(split: dict[str, dict[str, float]]) -> go.Figure:
    """Top-1 of float, weights only, activations only, both."""
    names = list(split)
    colors = {"float": "#7f7f7f", "weights only": "#636efa", "activations only": "#ffa15a", "both": "#ef553b"}
    fig = go.Figure(
        go.Bar(
            x=names,
            y=[split[n]["top1"] for n in names],
            text=[f"{split[n]['top1']:.2f}%" for n in names],
            marker_color=[colors.get(n, "#636efa") for n in names],
        )
    )
    fig.update_yaxes(title_text="top-1 (%)")
    return layout(fig, "Where the accuracy goes: weights vs activations", height=340)


def allocation_figure(alloc: dict[str, Any], order: Sequence[str]) -> go.Figure:
    """Chosen bits per layer (execution order)."""
    layers = [n for n in order if n in alloc["bits"]]
    bits = [alloc["bits"][n] for n in layers]
    fig = go.Figure(
        go.Bar(
            x=layers, y=bits, marker_color=[colour(b) for b in bits], hovertemplate="%{x}<br>%{y}-bit<extra></extra>"
        )
    )
    fig.update_xaxes(tickangle=-45, title_text="layer (execution order)")
    fig.update_yaxes(title_text="bits (weights and input)", dtick=1)
    return layout(fig, "Chosen bit-width per layer", height=340)


def culprit_bars(candidates: Sequence[dict[str, Any]]) -> go.Figure:
    """Recovered top-1 points per (layer, side) raised to 8 bits alone, best first."""
    colors = {"weights": "#636efa", "activations": "#ffa15a"}
    fig = go.Figure(
        go.Bar(
            x=[f"{c['layer']} ({c['side'][0]})" for c in candidates],
            y=[c["recovered"] for c in candidates],
            marker_color=[colors[c["side"]] for c in candidates],
            text=[f"{c['recovered']:+.1f}" for c in candidates],
            hovertemplate="%{x}<br>%{y:+.2f} pts<extra></extra>",
        )
    )
    fig.update_xaxes(tickangle=-45, title_text="layer (w = weights, a = activations raised to 8 bits)")
    fig.update_yaxes(title_text="recovered top-1 (pts)")
    return layout(fig, "Measured recovery of each repair", height=360)

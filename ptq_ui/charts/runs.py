"""Plotly figure builders: pure functions of plain data (lists, dicts); no torch, no Streamlit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from .base import colour, finite, layout

__all__ = [
    "bits_label",
    "sqnr_bars",
    "layer_metric_lines",
    "layer_rows_height",
    "MANY_LAYERS",
    "loss_lines",
    "accuracy_scatter",
    "quantizer_histogram",
    "clip_curve_figure",
    "sweep_lines",
    "METRIC_LABELS",
]

METRIC_LABELS = {
    "sqnr_db": "SQNR (dB, higher is better)",
    "mse": "MSE (lower is better)",
    "cosine": "cosine similarity (higher is better)",
}
_GL_THRESHOLD = 1000  # points above which scatter plots switch to WebGL
MANY_LAYERS = 24  # above this many layers, per-layer charts run down the page, one row per layer
_ROW_PX = 18  # height of one layer's row then


def layer_rows_height(n: int) -> int:
    """Height of a per-layer chart with one row per layer (`n` > `MANY_LAYERS`), so every name stays readable."""
    return max(380, 140 + _ROW_PX * n)


def _down_the_page(fig: go.Figure, names: Sequence[str]) -> None:
    """Layer names on the y axis in execution order from the top, every one labelled."""
    fig.update_yaxes(
        categoryorder="array",
        categoryarray=list(names),
        autorange="reversed",
        dtick=1,
        automargin=True,
        tickfont=dict(size=11),
    )


def bits_label(wbits: Any, abits: Any) -> str:
    """ "W4/A8"; 32 bits print as "fp"."""
    show = lambda b: "fp" if b in (None, 32) else str(b)  # noqa: E731
    return f"W{show(wbits)}/A{show(abits)}"


def sqnr_bars(layers: Sequence[dict[str, Any]], title: str = "Per-layer SQNR") -> go.Figure:
    """Bar per layer (execution order) of SQNR in dB, coloured by the layer's bits.

    Above `MANY_LAYERS` layers the bars are horizontal, one labelled row per layer, and the
    chart grows with the layer count (`layer_rows_height`).
    """
    fig = go.Figure()
    many = len(layers) > MANY_LAYERS
    labels = [bits_label(r.get("wbits"), r.get("abits")) for r in layers]
    for i, label in enumerate(dict.fromkeys(labels)):
        rows = [r for r, lab in zip(layers, labels, strict=True) if lab == label]
        names, values = [r["name"] for r in rows], [finite(r.get("sqnr_db")) for r in rows]
        fig.add_bar(
            x=values if many else names,
            y=names if many else values,
            name=label,
            orientation="h" if many else "v",
            marker_color=colour(i),
            hovertemplate=("%{y}<br>SQNR %{x:.2f} dB" if many else "%{x}<br>SQNR %{y:.2f} dB")
            + "<extra>"
            + label
            + "</extra>",
        )
    order = [r["name"] for r in layers]
    if many:
        _down_the_page(fig, order)
        return layout(fig, title, "SQNR (dB)", "layer (execution order)", height=layer_rows_height(len(order)))
    fig.update_xaxes(categoryorder="array", categoryarray=order, tickangle=-45)
    return layout(fig, title, "layer (execution order)", "SQNR (dB)")


def layer_metric_lines(series: dict[str, Sequence[dict[str, Any]]], metric: str, title: str) -> go.Figure:
    """One line per run (label -> rows with `name` and `metric`), layers on the x axis.

    Above `MANY_LAYERS` layers the layers run down the y axis instead, one labelled row
    each, and the chart grows with the layer count (`layer_rows_height`).
    """
    order: list[str] = []
    for rows in series.values():
        order += [r["name"] for r in rows if r["name"] not in order]
    many = len(order) > MANY_LAYERS
    fig = go.Figure()
    for i, (label, rows) in enumerate(series.items()):
        names, values = [r["name"] for r in rows], [finite(r.get(metric)) for r in rows]
        fig.add_scatter(
            x=values if many else names,
            y=names if many else values,
            name=label,
            mode="lines+markers",
            line=dict(color=colour(i)),
            hovertemplate=("%{y}<br>%{x:.4g}" if many else "%{x}<br>%{y:.4g}") + "<extra>" + label + "</extra>",
        )
    value_title = METRIC_LABELS.get(metric, metric)
    if many:
        _down_the_page(fig, order)
        if metric == "mse":
            fig.update_xaxes(type="log")
        return layout(fig, title, value_title, "layer (execution order)", height=layer_rows_height(len(order)))
    fig.update_xaxes(categoryorder="array", categoryarray=order, tickangle=-45)
    if metric == "mse":
        fig.update_yaxes(type="log")
    return layout(fig, title, "layer (execution order)", value_title)


def loss_lines(history: Sequence[dict[str, Any]]) -> go.Figure:
    """Live loss chart by unit and step: x = unit number + step / steps, ticks at each unit's start."""
    fig = go.Figure()
    xs = [_unit_step(h) for h in history]
    for i, name in enumerate(dict.fromkeys(h["loss"] for h in history)):
        pts = [(x, h) for x, h in zip(xs, history, strict=True) if h["loss"] == name]
        fig.add_scatter(
            x=[x for x, _ in pts],
            y=[h["value"] for _, h in pts],
            name=name,
            mode="lines",
            line=dict(color=colour(i)),
            customdata=[f"{h['unit'] or h['stage']} · step {h.get('step', '?')}/{h.get('total', '?')}" for _, h in pts],
            hovertemplate="%{customdata}<br>%{y:.4g}",
        )
    starts = {}
    for h in history:
        starts.setdefault(h.get("unit_index", 0), h["unit"] or h["stage"])
    fig.update_xaxes(tickvals=[i + 1 for i in starts], ticktext=list(starts.values()), tickangle=-45)
    fig.update_yaxes(type="log")
    return layout(fig, "Loss", "unit (block or layer) and step within it", "loss (log)", height=320)


def _unit_step(h: dict[str, Any]) -> float:
    """Position of one loss point: units numbered from 1, steps spread inside [unit, unit + 1)."""
    if "step" not in h:  # history recorded before units and steps were kept
        return float(h["point"])
    frac = h["step"] / h["total"] if h.get("total") else 0.0
    return h.get("unit_index", 0) + 1 + min(frac, 0.999)


def accuracy_scatter(rows: Sequence[dict[str, Any]], x: str, x_title: str, title: str) -> go.Figure:
    """Top-1 of each run against `x` (e.g. weight bits, seconds); one colour per method."""
    fig = go.Figure()
    many = len(rows) > _GL_THRESHOLD
    for i, method in enumerate(dict.fromkeys(r["method"] for r in rows)):
        pts = [r for r in rows if r["method"] == method]
        trace = go.Scattergl if many else go.Scatter
        fig.add_trace(
            trace(
                x=[r[x] for r in pts],
                y=[r["top1"] for r in pts],
                mode="markers",
                name=method,
                marker=dict(size=10, color=colour(i), line=dict(width=1, color="white")),
                customdata=[[r["run_id"], r["model"], r["bits"]] for r in pts],
                hovertemplate="%{customdata[1]} %{customdata[2]}<br>top-1 %{y:.2f}%<br>run %{customdata[0]}<extra>"
                + method
                + "</extra>",
            )
        )
    return layout(fig, title, x_title, "top-1 (%)", height=340)


def sweep_lines(rows: Sequence[dict[str, Any]]) -> go.Figure:
    """A sweep's top-1 mean ± std over seeds against weight bits; one line per `series` (e.g. method)."""
    fig = go.Figure()
    pts = [r for r in rows if r["top1_mean"] is not None]
    for i, series in enumerate(dict.fromkeys(r["series"] for r in pts)):
        line = sorted((r for r in pts if r["series"] == series), key=lambda r: r["wbits"])
        fig.add_trace(
            go.Scatter(
                x=[r["wbits"] for r in line],
                y=[r["top1_mean"] for r in line],
                mode="lines+markers",
                name=series,
                error_y=dict(type="data", array=[r["top1_std"] for r in line], visible=True),
                marker=dict(size=9, color=colour(i)),
                line=dict(color=colour(i)),
                customdata=[[r["bits"], r["runs"]] for r in line],
                hovertemplate="%{customdata[0]}: top-1 %{y:.2f} ± %{error_y.array:.2f} over %{customdata[1]} seed(s)"
                "<extra>" + series + "</extra>",
            )
        )
    fig.update_xaxes(dtick=1)
    return layout(fig, "Accuracy against weight bits (mean ± std over seeds)", "weight bits", "top-1 (%)")


def quantizer_histogram(view: dict[str, Any], title: str) -> go.Figure:
    """Histogram of the values, the grid's levels as vertical lines, clipped regions shaded."""
    fig = go.Figure()
    centers, counts = view["hist_centers"], view["hist_counts"]
    width = (centers[1] - centers[0]) if len(centers) > 1 else 1.0
    fig.add_bar(x=centers, y=counts, width=width, name="values", marker_color="#636efa", opacity=0.8)
    top = max(counts) if counts else 1
    xs: list[float | None] = []
    ys: list[float | None] = []
    for level in view["levels"]:
        xs += [level, level, None]
        ys += [0, top, None]
    fig.add_scatter(
        x=xs,
        y=ys,
        mode="lines",
        name=f"grid ({len(view['levels'])} levels)",
        line=dict(color="rgba(239,85,59,0.55)", width=1),
        hoverinfo="skip",
    )
    lo, hi = view["lo"] - view["scale"] / 2, view["hi"] + view["scale"] / 2  # beyond these, values clip
    if view["min"] < lo:
        fig.add_vrect(x0=view["min"], x1=lo, fillcolor="#ef553b", opacity=0.12, line_width=0)
    if view["max"] > hi:
        fig.add_vrect(x0=hi, x1=view["max"], fillcolor="#ef553b", opacity=0.12, line_width=0)
    fig.update_layout(bargap=0)
    return layout(fig, title, "value", "count")


def clip_curve_figure(curve: dict[str, Any], chosen_ratio: float, chosen_mse: float) -> go.Figure:
    """MSE against the clipping ratio, with the chosen and the optimal point marked."""
    fig = go.Figure()
    fig.add_scatter(
        x=curve["ratio"],
        y=curve["mse"],
        mode="lines",
        name="MSE (best zero point per width)",
        line=dict(color="#636efa"),
    )
    fig.add_scatter(
        x=[curve["best_ratio"]],
        y=[curve["best_mse"]],
        mode="markers",
        name="optimum",
        marker=dict(symbol="star", size=16, color="#00cc96"),
    )
    fig.add_scatter(
        x=[chosen_ratio],
        y=[chosen_mse],
        mode="markers",
        name="your choice",
        marker=dict(symbol="circle", size=12, color="#ef553b"),
    )
    fig.update_yaxes(type="log")
    return layout(fig, "MSE against the clipping ratio", "clipping ratio (range / full range)", "MSE (log)")

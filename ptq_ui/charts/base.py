"""What every figure shares: the palette, the layout, the legend placement and the Plotly config."""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go

__all__ = ["CONFIG", "PALETTE", "colour", "finite", "layout", "legend_below"]

CONFIG = {"displaylogo": False}  # `st.plotly_chart(fig, config=CONFIG)` on every page
PALETTE = (
    "#636efa",
    "#ef553b",
    "#00cc96",
    "#ab63fa",
    "#ffa15a",
    "#19d3f3",
    "#ff6692",
    "#b6e880",
    "#ff97ff",
    "#fecb52",
    "#1f77b4",
    "#8c564b",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#d62728",
)


def colour(i: int) -> str:
    """The `i`-th colour of the palette (it wraps around)."""
    return PALETTE[i % len(PALETTE)]


def finite(v: Any) -> float | None:
    """`v` as a float when it is a finite number, else None (Plotly leaves a gap)."""
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def layout(fig: go.Figure, title: str, x: str = "", y: str = "", height: int = 380) -> go.Figure:
    """Title, axis titles, height, tight margins and a horizontal legend above the plot."""
    fig.update_layout(
        title=title,
        height=height,
        margin=dict(l=10, r=10, t=55, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
    )
    if x:
        fig.update_layout(xaxis_title=x)
    if y:
        fig.update_layout(yaxis_title=y)
    return fig


def legend_below(fig: go.Figure) -> go.Figure:
    """Legend under the plot (for half-width charts whose title would collide with it)."""
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.25, x=0), margin=dict(b=60))
    return fig

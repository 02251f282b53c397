"""Small inline-SVG charts for the HTML report: no script, no font, nothing to fetch.

`svg_lines` draws one polyline per series over categorical x labels; `svg_histogram`
draws a histogram (square-root height, so tails stay visible) with a quantization
grid's levels as vertical lines.
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np

__all__ = ["svg_lines", "svg_histogram"]

_MAX_GRID_LINES = 33  # more levels than this: every k-th line is drawn


def _e(x: Any) -> str:
    return html.escape(str(x))


def svg_lines(
    series: dict[str, list[float | None]], labels: list[str], title: str, width: int = 1000, height: int = 260
) -> str:
    """A line chart as inline SVG: one polyline per series over the `labels` (x), finite points only."""
    colors = ["#636efa", "#ef553b", "#00cc96", "#ab63fa"]
    vals = [v for s in series.values() for v in s if isinstance(v, (int, float)) and math.isfinite(v)]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1.0
    left, bottom, top = 50, 90, 20
    w, h = width - left - 10, height - bottom - top
    x = lambda i: left + (w * i / max(len(labels) - 1, 1))  # noqa: E731
    y = lambda v: top + h * (1 - (v - lo) / (hi - lo))  # noqa: E731
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
        f'<text x="{left}" y="12">{_e(title)}</text>',
        f'<line x1="{left}" y1="{top + h}" x2="{left + w}" y2="{top + h}" stroke="#999"/>',
    ]
    for t in np.linspace(lo, hi, 5):
        parts.append(
            f'<text x="2" y="{y(t) + 3:.1f}">{t:.3g}</text><line x1="{left}" y1="{y(t):.1f}" '
            f'x2="{left + w}" y2="{y(t):.1f}" stroke="#eee"/>'
        )
    for i, lab in enumerate(labels):
        parts.append(f'<text transform="translate({x(i):.1f},{top + h + 6}) rotate(60)">{_e(lab)}</text>')
    for k, (name, s) in enumerate(series.items()):
        pts = " ".join(
            f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(s) if isinstance(v, (int, float)) and math.isfinite(v)
        )
        color = colors[k % len(colors)]
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{pts}"/>')
        parts.append(f'<text x="{left + 10 + 150 * k}" y="{height - 4}" fill="{color}">■ {_e(name)}</text>')
    return "".join(parts) + "</svg>"


def svg_histogram(hist: dict[str, Any], title: str, width: int = 330, height: int = 150) -> str:
    """A histogram as inline SVG with the quantization grid's levels drawn as red lines."""
    counts, edges, levels = hist["counts"], hist["edges"], hist["levels"]
    lo, hi = edges[0], edges[-1]
    span = hi - lo if hi > lo else 1.0
    top, bottom = 16, 16
    h = height - top - bottom
    peak = max(max(counts), 1)
    x = lambda v: width * (v - lo) / span  # noqa: E731
    bar_w = width / len(counts)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
        f'<text x="2" y="11">{_e(title)}</text>',
    ]
    for i, c in enumerate(counts):
        bh = h * math.sqrt(c / peak)  # square-root scale: tails stay visible
        parts.append(
            f'<rect x="{i * bar_w:.1f}" y="{top + h - bh:.1f}" width="{bar_w:.1f}" height="{bh:.1f}" fill="#8fa9d6"/>'
        )
    step = max(1, math.ceil(len(levels) / _MAX_GRID_LINES))
    for v in levels[::step] + levels[-1:]:
        parts.append(
            f'<line x1="{x(v):.1f}" y1="{top}" x2="{x(v):.1f}" y2="{top + h}" stroke="#c62828" '
            f'stroke-width="0.7" opacity="0.7"/>'
        )
    parts.append(
        f'<text x="2" y="{height - 3}">{lo:.3g}</text>'
        f'<text x="{width - 2}" y="{height - 3}" text-anchor="end">{hi:.3g}</text>'
    )
    note = f"grid: {len(levels)} levels" + (f", every {step}th drawn" if step > 1 else "") if levels else "float"
    parts.append(f'<text x="{width - 2}" y="11" text-anchor="end">{_e(note)}</text>')
    return "".join(parts) + "</svg>"

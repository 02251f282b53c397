"""Plotly figure builders: pure functions of plain data (lists, dicts, numpy arrays); no torch, no Streamlit.

`base` holds what every figure shares (palette, layout, the Plotly `CONFIG`); one module
per area: `runs` (Quantize, Compare runs, Layer errors, Learn: the quantizer), `diagnose`,
`cat` (CAT corrections), `learn` (the Learn pages).
"""

from __future__ import annotations

from . import base, cat, diagnose, learn, runs

__all__ = ["base", "cat", "diagnose", "learn", "runs"]

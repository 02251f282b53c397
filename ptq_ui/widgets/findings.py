"""The diagnosis on a page: findings as table rows, values in words, and a jump to the page with the evidence."""

from __future__ import annotations

import math
from typing import Any

import streamlit as st

__all__ = ["finding_rows", "fmt_db", "fix_text", "open_evidence"]


def fmt_db(value: Any) -> str:
    """ "23.4 dB", "exact" for infinity, "n/a" otherwise."""
    if not isinstance(value, (int, float)) or math.isnan(value):
        return "n/a"
    return "exact" if math.isinf(value) else f"{value:.1f} dB"


def fix_text(action: dict[str, Any] | None) -> str:
    """A fix action in words: "a_observer = percentile", "override conv2=4/8", or "no setting to change"."""
    if action is None:
        return "no quantizer setting to change"
    if action["kind"] == "override":
        return f"override {action['text']}"
    return ", ".join(f"{k} = {v}" for k, v in action["changes"].items())


def finding_rows(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Diagnosis findings as table rows."""
    return [
        {
            "layer": f["layer"],
            "status": f["severity"],
            "bits": f"W{f['wbits']}/A{f['abits']}",
            "SQNR alone": fmt_db(f["sqnr_alone"]),
            "SQNR accumulated": fmt_db(f["sqnr_accumulated"]),
            "likely cause": f["cause"],
            "evidence": f["evidence"],
            "fix": fix_text(f.get("action")),
            "why": f["fix"],
        }
        for f in findings
    ]


def open_evidence(page: str, state: dict[str, Any]) -> None:
    """Switch to `page` with `state` preselected (its widgets re-seed from these persistent keys)."""
    for key, value in state.items():
        st.session_state[key] = value
        st.session_state.pop(f"w_{key}", None)
    st.switch_page(page)

"""Persistent widget values.

Persistent choices live in `st.session_state[key]`; the widget drawing them uses the
key `"w_" + key`, seeded from the persistent value when missing (Streamlit drops a
widget's state when its page is left), and its value is copied back after drawing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st

from ..state import init_state

__all__ = ["seeded", "keep"]


def seeded(key: str, options: Sequence[Any] | None = None, default: Any = None) -> str:
    """Widget key for the persistent `key`, seeded from it (or `default`); valid for `options`."""
    init_state()
    st.session_state.setdefault(key, default)
    wkey = f"w_{key}"
    value = st.session_state[key]
    if options is not None and value not in options:
        value = options[0]
    if wkey not in st.session_state or (options is not None and st.session_state[wkey] not in options):
        st.session_state[wkey] = value
    return wkey


def keep(key: str, value: Any) -> Any:
    """Store a widget's value under its persistent key and return it."""
    st.session_state[key] = value
    return value

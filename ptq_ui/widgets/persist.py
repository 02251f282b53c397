"""Widgets whose value outlives their page: `persistent(widget, key, ...)`, the one helper every page uses.

The choice lives in `st.session_state[key]`; the widget drawing it uses the key
`"w_" + key`, seeded from the persistent value when missing (Streamlit drops a widget's
state when its page is left), and its value is copied back after drawing. Other pages
(and tests) preselect a choice by setting `st.session_state[key]`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import streamlit as st

from ..state import init_state

__all__ = ["persistent"]

T = TypeVar("T")


def _valid(value: Any, options: Sequence[Any]) -> bool:
    return all(v in options for v in value) if isinstance(value, list) else value in options


def _widget_key(key: str, options: Sequence[Any] | None, default: Any) -> str:
    """The widget key of the persistent `key`, seeded from it (or `default`); a stale value is made valid for
    `options` (a list keeps its valid items, a single value falls back to the first option)."""
    init_state()
    st.session_state.setdefault(key, default)
    wkey = f"w_{key}"
    value = st.session_state[key]
    if options is not None and not _valid(value, options):
        value = [v for v in value if v in options] if isinstance(value, list) else options[0]
    if wkey not in st.session_state or (options is not None and not _valid(st.session_state[wkey], options)):
        st.session_state[wkey] = value
    return wkey


def persistent(
    widget: Callable[..., T],
    key: str,
    *args: Any,
    options: Sequence[Any] | None = None,
    default: Any = None,
    **kwargs: Any,
) -> T:
    """Draw ``widget(*args, **kwargs)`` for the persistent choice `key` and return (and keep) its value.

    Args:
        widget: A Streamlit widget function, e.g. ``st.selectbox`` or ``column.slider``.
        key: The persistent key; the widget gets ``"w_" + key``.
        options: The values the choice may take (a stale one falls back to the first); None: any.
        default: The value before the user has chosen.
    """
    value = widget(*args, key=_widget_key(key, options, default), **kwargs)
    st.session_state[key] = value
    return value

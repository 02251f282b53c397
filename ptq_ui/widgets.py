"""Small widget helpers shared by the pages (the run form lives in `run_form`).

Persistent choices live in `st.session_state[key]`; the widget drawing them uses the
key `"w_" + key`, seeded from the persistent value when missing (Streamlit drops a
widget's state when its page is left), and its value is copied back after drawing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import streamlit as st

from ptq_core.errors import PTQError

from . import bridge
from .state import init_state

__all__ = ["seeded", "keep", "errors_shown", "show_error", "bits_format", "literal", "one_line"]


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


def literal(text: str) -> str:
    """`text` with Markdown's special characters escaped, so `layer3.*` shows as typed."""
    return "".join("\\" + ch if ch in "\\`*_[]<>#|~$" else ch for ch in text)


def show_error(exc: BaseException) -> None:
    """A PTQError as `st.error` (first line, shown literally) plus a code block for any table that follows."""
    first, _, rest = str(exc).partition("\n")
    st.error(literal(first or type(exc).__name__))
    if rest.strip():
        st.code(rest, language=None)


def one_line(exc: BaseException) -> str:
    """``Type: first line`` of an unexpected exception (PTQErrors are already one line)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


@contextmanager
def errors_shown() -> Iterator[None]:
    """Show an error raised in the block as its own message (never Streamlit's redacted box) and stop."""
    try:
        yield
    except PTQError as exc:
        show_error(exc)
        st.stop()
    except (MemoryError, RecursionError):
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. a user's model file failing in a way we did not foresee
        st.error(literal(one_line(exc)))
        st.stop()


def bits_format(bits: int) -> str:
    """32 reads "32 (float)"."""
    return "32 (float)" if bits == bridge.FLOAT_BITS else str(bits)

"""Errors on a page: a PTQError as its own one-line message (never Streamlit's redacted box), shown literally."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from ptq_core.errors import PTQError

__all__ = ["errors_shown", "show_error", "literal", "one_line"]


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

"""Per-user selections kept in `st.session_state` under explicit keys, and their defaults."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import streamlit as st

__all__ = ["DEFAULTS", "Selection", "init_state", "selection", "set_weights", "session_id", "owner", "clean_name"]

# persistent keys (widgets use "w_<key>" and copy their value back, see widgets.seeded)
DEFAULTS: dict[str, Any] = {
    "model_source": "zoo",
    "model": "fmnist-resnet20",
    "weights": None,  # path of a state_dict file the user gave for `weights_for`
    "weights_for": None,
    "data_kind": "fmnist-sample",
    "data_folder": "",
    "data": "fmnist-sample",
    "device": "auto",
    "last_run_id": None,
    "user_name": "",  # the name a user gives; runs are theirs under it (see `owner`)
}  # the run's settings are one value, `widgets.forms.FORM`


@dataclass(frozen=True)
class Selection:
    """What the user is working on: model (+ own weights), data set and device."""

    model: str
    weights: str | None
    data: str
    device: str

    @property
    def key(self) -> tuple[str, str, str]:
        """Cache key of the loaded model."""
        return (self.model, self.weights or "", self.device)


def init_state() -> None:
    """Put every default into the session once (never overwrites a choice); give the session its id."""
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)
    st.session_state.setdefault("session_id", uuid.uuid4().hex[:12])


def session_id() -> str:
    """This browser session's random id (its upload folder and, without a name, its identity)."""
    init_state()
    return st.session_state["session_id"]


def clean_name(text: str) -> str:
    """A user name as kept: letters, digits, space, ``.-_@``, at most 40 characters."""
    return re.sub(r"[^\w .@-]", "", text).strip()[:40]


def owner() -> str:
    """Who this session is in the run store: ``user:<name>`` when a name was given, else
    ``session:<id>`` (the session's runs are then its own until the tab is closed)."""
    name = clean_name(st.session_state.get("user_name") or "")
    return f"user:{name}" if name else f"session:{session_id()}"


def selection() -> Selection:
    """The current model, weights, data and device."""
    init_state()
    ss = st.session_state
    weights = ss["weights"] if ss["weights_for"] == ss["model"] else None
    return Selection(ss["model"], weights, ss["data"], ss["device"])


def set_weights(model: str, path: str | None) -> None:
    """Attach a weights file to `model` (None detaches)."""
    st.session_state["weights"] = path
    st.session_state["weights_for"] = model if path else None

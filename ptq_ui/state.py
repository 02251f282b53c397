"""Per-user selections kept in `st.session_state` under explicit keys, and their defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st

__all__ = ["DEFAULTS", "Selection", "init_state", "selection", "set_weights"]

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
}  # the run's settings are one value, `run_form.FORM`


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
    """Put every default into the session once (never overwrites a choice)."""
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)


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

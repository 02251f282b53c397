"""What the AppTests share: a fresh app session, reading metrics and the run form, a clean-page check."""

from __future__ import annotations

import copy
import json

from streamlit.testing.v1 import AppTest
from torch import nn

from ptq_core.zoo import resnet20
from tests.support.paths import APP

# quantized layers of the app's default model (every conv and linear layer of fmnist-resnet20)
RESNET20_LAYERS = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in resnet20().modules())


def new_app(weights: str | None, page: str | None = None, /, timeout: int = 120, **state) -> AppTest:
    """A fresh session (like a new browser tab), with `state` in the session, optionally on `page`.

    `weights` is a zoo ResNet-20 weights file; a session value named `weights` (another model's) goes in `state`.
    """
    at = AppTest.from_file(APP, default_timeout=timeout)
    for key, value in state.items():
        at.session_state[key] = copy.deepcopy(value)  # the session may change it in place
    if weights:
        at.session_state["weights"] = weights
        at.session_state["weights_for"] = "fmnist-resnet20"
    at.run()
    if page:
        at.switch_page(page).run()
    return at


def metric(at: AppTest, label: str) -> str:
    """The value of the metric called `label` (first match)."""
    for m in at.metric:
        if m.label == label:
            return m.value
    raise AssertionError(f"no metric {label!r}; have {[m.label for m in at.metric]}")


def chart(at: AppTest, key_part: str) -> dict:
    """The Plotly figure (JSON) of the chart whose element id mentions `key_part`."""
    for c in at.get("plotly_chart"):
        if key_part in c.proto.id:
            return json.loads(c.proto.spec)
    raise AssertionError(f"no chart {key_part!r}")


def trace_names(fig: dict) -> list[str]:
    """The names of a Plotly figure's traces."""
    return [t.get("name") for t in fig["data"]]


def assert_clean(at: AppTest) -> None:
    """No exception and no error box on the page."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def shown_spec(at: AppTest) -> dict:
    """The run description the Quantize page shows under "Config as JSON"."""
    blocks = [c.value for c in at.code if c.language == "json"]
    assert blocks, "no run description is shown"
    return json.loads(blocks[0])


def captions(at: AppTest) -> str:
    """Every caption of the page, one per line."""
    return "\n".join(c.value for c in at.caption)

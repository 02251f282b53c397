"""Shared fixtures: a private run store per test session, seeds, the embedded data, the devices to test on.

The `device` fixture runs a test once per device: "cpu", plus "cuda" when
`torch.cuda.is_available()`. `PTQ_TEST_DEVICES=cpu,cuda` (any comma list) sets the list
instead; a listed CUDA device on a machine without one fails the test rather than
skipping it, so a GPU check cannot pass by running nothing. Every test that takes
`device` is marked `device`: `pytest -m device` runs that subset (primitives,
fake-quant, layer-input capture, reconstruction engine).
"""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

# the run store must never be the user's real one
os.environ.setdefault("PTQ_EXPLORER_HOME", tempfile.mkdtemp(prefix="ptq-test-store-"))
SEED = 0


def devices_under_test() -> list[str]:
    """The devices the `device` fixture runs on (see the module docstring)."""
    forced = os.environ.get("PTQ_TEST_DEVICES", "").strip()
    if forced:
        return [d.strip() for d in forced.split(",") if d.strip()]
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if "device" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.device)


@pytest.fixture(params=devices_under_test())
def device(request) -> torch.device:
    """A torch device to build the test's tensors and models on (one run per device)."""
    dev = torch.device(request.param)
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.fail(f"PTQ_TEST_DEVICES asks for {request.param}, but torch sees no CUDA device")
    return dev


@pytest.fixture(scope="module")
def one_thread():
    """Torch at one thread for a module: tiny tensors run fastest so, float sums depend on the thread count,
    and the tests do not fight other jobs for cores. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(SEED)


@pytest.fixture
def store_home(tmp_path, monkeypatch):
    """A fresh, empty run store directory for one test."""
    monkeypatch.setenv("PTQ_EXPLORER_HOME", str(tmp_path / "store"))
    return tmp_path / "store"


@pytest.fixture(scope="session")
def fmnist():
    """The embedded Fashion-MNIST sample (calibration draw + 10k test split)."""
    from ptq_core.data import load_embedded

    return load_embedded()


@pytest.fixture
def app_env(request, tmp_path, monkeypatch):
    """For AppTests: a private run store, fresh Streamlit data caches, and the test module's `APP_ENV`."""
    import streamlit as st

    monkeypatch.setenv("PTQ_EXPLORER_HOME", str(tmp_path / "store"))
    for key, value in getattr(request.module, "APP_ENV", {}).items():
        monkeypatch.setenv(key, value)
    st.cache_data.clear()
    yield tmp_path
    st.cache_data.clear()


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> str | None:
    """None when the zoo's resnet20 checkpoint exists, else a random-init resnet20 state_dict file."""
    from ptq_core.checkpoints import save_state_dict
    from ptq_core.data import ASSETS_DIR
    from ptq_core.zoo import resnet20

    if (ASSETS_DIR / "fmnist-resnet20.safetensors").is_file():
        return None
    torch.manual_seed(0)
    return str(save_state_dict(resnet20(), tmp_path_factory.mktemp("w") / "resnet20-random.safetensors"))


@pytest.fixture(scope="session")
def tv_weights(tmp_path_factory) -> str:
    """A random-init torchvision mobilenet_v2 state_dict file (ImageFolder data needs a torchvision model)."""
    import torchvision

    from ptq_core.checkpoints import save_state_dict

    torch.manual_seed(0)
    model = torchvision.models.get_model("mobilenet_v2", weights=None)
    return str(save_state_dict(model.state_dict(), tmp_path_factory.mktemp("tv") / "mobilenet_v2-random.safetensors"))

"""Shared fixtures: a private run store per test session, seeds, the embedded data."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

# the run store must never be the user's real one
os.environ.setdefault("PTQ_EXPLORER_HOME", tempfile.mkdtemp(prefix="ptq-test-store-"))
SEED = 0


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

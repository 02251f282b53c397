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

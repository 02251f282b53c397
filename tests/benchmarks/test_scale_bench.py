"""benchmarks/scale.py's core on a tiny setting: torchvision ResNet-18 from a saved state_dict and an ImageFolder."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scale():
    spec = importlib.util.spec_from_file_location("bench_scale", ROOT / "benchmarks" / "scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scale_cell_measures_steps_cache_and_memory(scale, tmp_path):
    torch.set_num_threads(1)
    row = scale.measure("resnet18", "qdrop", images=2, steps=2, size=32, workdir=tmp_path, observers="minmax")
    assert (tmp_path / "resnet18.pt").is_file() and len(list((tmp_path / "images_32_2").rglob("*.png"))) == 4
    assert row["units"] >= 9  # stem conv, 8 BasicBlocks, fc (graph units)
    assert row["step_s"] > 0 and row["bare_sum_s"] > 0 and math.isfinite(row["x_bare"])
    assert row["cache_mb"] > 0 and row["cache_per_image_mb"] == pytest.approx(row["cache_mb"] / 2)
    assert row["spilled_mb"] == 0 and row["peak_rss_gib"] >= row["base_rss_gib"] > 0
    table = scale.table([row])
    assert table.count("\n") == 2 and "| resnet18 | qdrop |" in table
    (line,) = scale.estimate([row], budget_mb=16384)
    assert "1024 images at 32" in line and "fits under the 16 GiB budget" in line


def test_gram_bytes_counts_groups(scale):
    from torch import nn

    net = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 4, 1), nn.Linear(10, 2))
    assert scale.gram_bytes(net) == (8 * 9 * 9 + 8 * 8 + 10 * 10) * 4

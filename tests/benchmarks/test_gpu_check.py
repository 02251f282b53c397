"""benchmarks/gpu_check.py runs on the CPU too (--device cpu --quick), so it is ready when a GPU is lent."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.support.paths import ROOT

SCRIPT = str(ROOT / "benchmarks" / "gpu_check.py")


def test_the_quick_check_runs_every_part_on_the_cpu(tmp_path):
    out_file = tmp_path / "gpu_check.md"
    res = subprocess.run(
        [sys.executable, SCRIPT, "--device", "cpu", "--quick", "--out", str(out_file)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    table = out_file.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| part")]
    assert [r.split("|")[1].strip() for r in rows] == ["device tests", "scale", "scale", "side by side"]
    assert "passed" in rows[0] and "FAILED" not in table
    assert "s per unit-step" in rows[2] and "peak RSS" in rows[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_cuda_without_a_gpu_is_refused_in_one_line():
    res = subprocess.run(
        [sys.executable, SCRIPT, "--device", "cuda"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0 and "no GPU" in res.stderr

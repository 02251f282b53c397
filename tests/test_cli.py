"""The command line: a quantize round trip, listing, and one-line errors for bad arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PTQ_EXPLORER_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "ptq_core", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def test_quantize_round_trip(tmp_path):
    out = tmp_path / "r.json"
    res = cli("quantize", "--model", "fmnist-resnet20", "--method", "rtn", "--wbits", "8", "--abits", "8",
              "--calib", "128", "--eval-limit", "1000", "--json", str(out), "--quiet", home=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    for key in ("model", "method", "wbits", "abits", "fp_top1", "top1", "top5", "seconds", "run_id", "layers"):
        assert key in data
    assert abs(data["fp_top1"] - data["top1"]) <= 0.5
    assert {"name", "mse", "sqnr_db", "cosine"} <= set(data["layers"][0])
    assert "quantized" in res.stdout and "worst layers" in res.stdout
    listing = cli("runs", "list", home=tmp_path)
    assert data["run_id"] in listing.stdout and "done" in listing.stdout
    shown = json.loads(cli("runs", "show", data["run_id"], home=tmp_path).stdout)
    assert shown["metrics"]["top1"] == pytest.approx(data["top1"])


def test_models_lists_zoo_and_torchvision(tmp_path):
    res = cli("models", home=tmp_path)
    assert res.returncode == 0
    assert "fmnist-resnet20" in res.stdout and "resnet18" in res.stdout and "ready" in res.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["--wbits", "9"], "bit-width 9 is out of range"),
        (["--abits", "1"], "bit-width 1 is out of range"),
        (["--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["--override", "layer9.*=8/8"], "match no quantizable layer"),
        (["--wbits", "four"], "bit-width must be an integer"),
    ],
)
def test_bad_arguments_exit_nonzero_with_one_line(tmp_path, args, message):
    res = cli("quantize", "--quiet", "--calib", "16", "--eval-limit", "16", *args, home=tmp_path)
    assert res.returncode != 0
    assert message in res.stderr
    assert "Traceback" not in res.stderr

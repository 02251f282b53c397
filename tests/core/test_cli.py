"""The command line: a quantize round trip, listing, and one-line errors for bad arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT


def cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PTQ_EXPLORER_HOME=str(home))
    return subprocess.run(
        [sys.executable, "-m", "ptq_core", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def test_quantize_round_trip(tmp_path):
    out = tmp_path / "r.json"
    res = cli(
        "quantize",
        "--model",
        "fmnist-resnet20",
        "--method",
        "rtn",
        "--wbits",
        "8",
        "--abits",
        "8",
        "--calib",
        "128",
        "--eval-limit",
        "1000",
        "--json",
        str(out),
        "--quiet",
        home=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    for key in ("model", "method", "wbits", "abits", "label", "spec", "run_id", "layers", "metrics"):
        assert key in data
    m = data["metrics"]
    assert abs(m["fp_top1"] - m["top1"]) <= 0.5 and m["eval_samples"] == 1000 and m["calib_samples"] == 128
    assert {"name", "mse", "sqnr_db", "cosine"} <= set(data["layers"][0])
    assert "quantized" in res.stdout and "worst layers" in res.stdout
    listing = cli("runs", "list", home=tmp_path)
    assert data["run_id"] in listing.stdout and "done" in listing.stdout
    shown = json.loads(cli("runs", "show", data["run_id"], home=tmp_path).stdout)
    assert shown == data  # one result schema: --json is what the store holds


def test_a_stored_description_reruns_bit_identically(tmp_path):
    """quantize --json a.json; runs show ID --spec > s.json; quantize --config s.json --json b.json."""
    a, s, b = tmp_path / "a.json", tmp_path / "s.json", tmp_path / "b.json"
    res = cli(
        "quantize",
        "--method",
        "rtn",
        "--wbits",
        "3",
        "--abits",
        "4",
        "--calib",
        "64",
        "--eval-limit",
        "300",
        "--override",
        "layer3.*=8/8",
        "--seed",
        "3",
        "--json",
        str(a),
        "--quiet",
        home=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    first = json.loads(a.read_text())
    shown = cli("runs", "show", first["run_id"], "--spec", home=tmp_path)
    assert shown.returncode == 0, shown.stderr
    s.write_text(shown.stdout)
    assert json.loads(shown.stdout) == first["spec"]
    res = cli("quantize", "--config", str(s), "--json", str(b), "--quiet", home=tmp_path)
    assert res.returncode == 0, res.stderr
    second = json.loads(b.read_text())
    assert second["run_id"] != first["run_id"] and second["spec"] == first["spec"]
    assert second["metrics"]["top1"] == first["metrics"]["top1"]
    assert second["layers"] == first["layers"] and second["extras"]["layers_alone"] == first["extras"]["layers_alone"]
    assert first["label"].startswith("W3A4 + ") and "overrides" in first["label"]
    changed = cli("quantize", "--config", str(s), "--abits", "8", "--json", str(b), "--quiet", home=tmp_path)
    assert changed.returncode == 0, changed.stderr
    third = json.loads(b.read_text())
    assert third["spec"]["method"]["quant"]["abits"] == 8 and third["spec"]["method"]["seed"] == 3


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
        (["--iters", "5"], "--iters applies to adaround/brecq/"),
        (["--config", "no-such-file.json"], "cannot read no-such-file.json"),
    ],
)
def test_bad_arguments_exit_nonzero_with_one_line(tmp_path, args, message):
    res = cli("quantize", "--quiet", "--calib", "16", "--eval-limit", "16", *args, home=tmp_path)
    assert res.returncode != 0
    assert message in res.stderr
    assert "Traceback" not in res.stderr


def test_a_run_killed_with_sigkill_is_listed_as_interrupted(tmp_path):
    """kill -9 of the process running a run: the store, and `runs list`, say "interrupted" (not "running")."""
    import signal
    import time

    from ptq_core.store import RunStore

    env = dict(os.environ, PTQ_EXPLORER_HOME=str(tmp_path))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ptq_core",
            "quantize",
            "--model",
            "fmnist-resnet20",
            "--method",
            "rtn",
            "--calib",
            "512",
            "--quiet",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = RunStore(tmp_path / "runs.sqlite")
    try:
        deadline = time.time() + 300
        while not store.list(status="running"):
            assert proc.poll() is None and time.time() < deadline, "the run never started"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    listing = cli("runs", "list", home=tmp_path).stdout
    assert "interrupted" in listing and "running" not in listing.split("\n")[0]
    assert f"pid {proc.pid}" in listing and "--spec" in listing
    (rec,) = store.list()
    assert rec.status == "interrupted" and rec.spec["model"] == "fmnist-resnet20"

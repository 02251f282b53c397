"""The checks to run when a GPU is at hand (issue 18), as one table.

Usage:
    python benchmarks/gpu_check.py [--device cuda] [--quick] [--out FILE] [--peer-dir DIR]

Three parts, each on `--device`:

1. **Device tests**: the test subset marked `device` (primitives, fake-quant, layer-input
   capture, reconstruction engine) with ``PTQ_TEST_DEVICES=<device>``, so a CUDA run fails
   rather than skips when torch sees no GPU.
2. **Scale**: `benchmarks/scale.py`'s cell on torchvision ResNet-18 at 224x224 (RTN, GPTQ,
   QDrop, PD-Quant at a few steps per unit): seconds per unit-step against a bare
   forward + backward, the KL path's share, cache size, peak memory.
3. **Side by side**: `benchmarks/peer_pdquant.py --equal` on the zoo's ResNet-20 at W4A4, ours
   and the authors' (when their code is at --peer-dir; else ours only, and the table says so).

``--device cpu --quick`` runs the whole script in about a minute on a laptop CPU (a few device
tests, ResNet-18 at 64x64 with 2 images and 2 steps, no side by side): the test suite runs it
that way so the script cannot rot between GPU sessions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.scale import prepare_inputs  # noqa: E402

SCALE_METHODS = ("rtn", "gptq", "qdrop", "pdquant")


def _env(device: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PTQ_TEST_DEVICES": device}


def device_tests(device: str, quick: bool) -> list[str]:
    """Run the `device`-marked tests on `device`; one table row with the counts."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "device", "-p", "no:cacheprovider", str(ROOT / "tests")]
    if quick:
        cmd += ["-k", "test_primitives"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_env(device))
    summary = (out.stdout.strip().splitlines() or ["no output"])[-1].strip("= ")
    ok = out.returncode == 0 and re.search(r"\d+ passed", summary) is not None
    status = summary if ok else f"FAILED (exit {out.returncode}): {summary}"
    return [
        f"| device tests | `pytest -m device`{' -k test_primitives' if quick else ''} | {status} | "
        f"{time.perf_counter() - t0:.0f} |"
    ]


def scale(device: str, quick: bool) -> list[str]:
    """`benchmarks/scale.py` on ResNet-18, one fresh process per method; rows with its figures."""
    size, images, steps = (64, 2, 2) if quick else (224, 32, 3)
    methods = ("rtn", "qdrop") if quick else SCALE_METHODS
    rows = []
    with tempfile.TemporaryDirectory(prefix="ptq-gpu-check-") as tmp:
        prepare_inputs("resnet18", Path(tmp), images, size)  # weights and images, shared by the cells
        for method in methods:
            rows.append(_scale_cell(method, images, steps, size, device, Path(tmp)))
    return rows


def _scale_cell(method: str, images: int, steps: int, size: int, device: str, workdir: Path) -> str:
    """One `scale.py` cell in a fresh process (its own peak memory); its table row."""
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "scale.py"),
        "--cell",
        f"resnet18,{method}",
        "--images",
        str(images),
        "--steps",
        str(steps),
        "--size",
        str(size),
        "--device",
        device,
        "--observers",
        "minmax",
        "--workdir",
        str(workdir),
    ]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_env(device))
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return f"| scale | resnet18 {method} at {size} | FAILED: {last} | {wall:.0f} |"
    r = json.loads(out.stdout.strip().splitlines()[-1])
    ratio = f", {r['x_bare']:.1f}x bare fwd+bwd" if r.get("x_bare") == r.get("x_bare") and r.get("x_bare") else ""
    kl = f", KL path {100 * r['kl_share']:.0f} %" if r.get("kl_share") else ""
    cost = f"{r['step_s']:.3g} s for the run" if method == "rtn" else f"{r['step_s']:.3g} s per unit-step"
    return (
        f"| scale | resnet18 {method} at {size}, {images} images, {steps} steps/unit | "
        f"{cost}{ratio}{kl}; largest unit cache {r['cache_mb']:.0f} MB; "
        f"peak RSS {r['peak_rss_gib']:.2f} GiB | {wall:.0f} |"
    )


def side_by_side(device: str, quick: bool, peer_dir: str | None) -> list[str]:
    """`benchmarks/peer_pdquant.py --equal` on ResNet-20 W4A4: a row per implementation."""
    if quick:
        return ["| side by side | skipped with --quick (minutes even on a GPU) | - | - |"]
    from benchmarks.peer_pdquant import PeerMissingError, find_peer

    try:
        find_peer(peer_dir)
        impl, note = "both", ""
    except PeerMissingError as exc:
        impl, note = "ours", f" (theirs not run: {exc})"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "peer_pdquant.py"),
        "--equal",
        "--steps",
        "40",
        "--models",
        "fmnist-resnet20",
        "--bits",
        "W4A4",
        "--calib",
        "256",
        "--eval-limit",
        "10000",
        "--device",
        device,
        "--impl",
        impl,
    ] + (["--peer-dir", peer_dir] if peer_dir else [])
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_env(device))
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return [f"| side by side | ResNet-20 W4A4, 40 steps/unit | FAILED: {last} | {wall:.0f} |"]
    table = [line for line in out.stdout.splitlines() if line.startswith("| fmnist-")]
    return [
        f"| side by side | {' '.join(c.strip() for c in line.strip('|').split('|')[3:4])} | "
        f"{' / '.join(c.strip() for c in line.strip('|').split('|')[4:8])}{note} | {wall:.0f} |"
        for line in table
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--quick", action="store_true", help="tiny settings: checks the script, measures nothing")
    p.add_argument("--out", default=None, help="also write the table to this file")
    p.add_argument("--peer-dir", default=None, help="the authors' PD-Quant (see benchmarks/peer_pdquant.py)")
    args = p.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda, but torch sees no GPU (use --device cpu to check the script)", file=sys.stderr)
        return 2
    where = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"CPU, {os.cpu_count()} cores"
    lines = [
        f"GPU check on {args.device} ({where}), torch {torch.__version__}{', --quick' if args.quick else ''}",
        "",
        "| part | setting | result | wall s |",
        "|---|---|---|---|",
    ]
    for part in (device_tests, scale):
        lines += part(args.device, args.quick)
        print(lines[-1], flush=True)
    lines += side_by_side(args.device, args.quick, args.peer_dir)
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(text)
    return 1 if "FAILED" in text else 0


if __name__ == "__main__":
    sys.exit(main())

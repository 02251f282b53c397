"""Time and peak memory of round-to-nearest W4A4 on each zoo model.

Usage: python benchmarks/rtn.py [--models ...] [--calib 1024] [--observer mse] [--device auto]

Each model runs in a fresh subprocess so that its peak resident memory (CPU) or
peak allocated GPU memory is its own. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.cells import cell_spec  # noqa: E402


def measure(model_name: str, calib_n: int, observer: str, device: str) -> dict:
    """Run RTN W4A4 once in this process and return its figures (and its `RunSpec`, as "spec")."""
    import torch

    from ptq_core import calibration_tensor, load_data, load_model, quantize, resolve_device
    from ptq_core.data import make_loader
    from ptq_core.metrics import evaluate

    spec = cell_spec(
        model_name, "rtn", device=device, wbits=4, abits=4, w_observer=observer, a_observer=observer, calib=calib_n
    )
    config = spec.method
    dev = resolve_device(spec.device)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model = load_model(spec.model, device=dev).model
    data = load_data(spec.data)
    calib = calibration_tensor(data, config.calib, config.seed).to(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = quantize(model, calib, config)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if dev.type == "cuda"
        else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    )
    t1 = time.perf_counter()
    acc = evaluate(res.model, make_loader(data.test, limit=spec.eval_limit), dev)["top1"]
    return {
        "model": model_name,
        "device": str(dev),
        "calib": calib_n,
        "quantize_s": seconds,
        "prepare_s": res.timings["prepare"],
        "weights_s": res.timings["weights"],
        "acts_s": res.timings["activations"],
        "peak_mb": peak,
        "eval_s": time.perf_counter() - t1,
        "top1": acc,
        "fp_top1": json.loads((ROOT / "assets" / f"{model_name}.json").read_text())["fp_top1"],
        "spec": spec.to_dict(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--models", nargs="+", default=["fmnist-resnet20", "fmnist-mobilenetv2", "fmnist-repvgg", "fmnist-vit"]
    )
    parser.add_argument("--calib", type=int, default=1024)
    parser.add_argument("--observer", default="mse")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: measure one model
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.calib, args.observer, args.device)))
        return
    print(f"RTN W4A4 ({args.observer} observer, {args.calib} calibration images); top-1 on the 10k test split\n")
    print("| model | device | quantize s (prepare / weights / acts) | peak MB | eval s | float top-1 | W4A4 top-1 |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            name,
            "--calib",
            str(args.calib),
            "--observer",
            args.observer,
            "--device",
            args.device,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"| {r['model']} | {r['device']} | {r['quantize_s']:.1f} ({r['prepare_s']:.1f} / {r['weights_s']:.1f} / "
            f"{r['acts_s']:.1f}) | {r['peak_mb']:.0f} | {r['eval_s']:.1f} | {r['fp_top1']:.2f} | {r['top1']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

"""The same grid run one cell after another and as a sweep on Ray: wall time and per-cell results.

Usage: python benchmarks/sweep_bench.py [--workers 2] [--eval-limit 500] [--models fmnist-resnet20 fmnist-mobilenetv2]

The grid: RTN (min/max observers, 64 calibration images) on two zoo models at W2A4 / W4A4 /
W8A4 with seeds 0 and 1: 12 cells. It runs three ways, each into its own run store: sequentially in this process with
torch at every core, sequentially with one thread per cell, and with `sweep` on a local Ray
with `--workers` cells at once, one CPU (one torch thread) each. A cell's metrics and per-layer
errors are compared with the one-thread sequential run (the same thread count, so the same
float sums). Prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def grid(models: list[str], eval_limit: int):
    from ptq_core.grid import Grid

    base = {
        "method": "rtn",
        "calib": 64,
        "eval_limit": eval_limit,
        "error_samples": 32,
        "w_observer": "minmax",
        "a_observer": "minmax",
    }
    axes = {"model": models, "wbits": [2, 4, 8], "seed": [0, 1]}
    return Grid.from_dict({"name": "sweep-bench", "base": base, "axes": axes})


def sequential(cells, store, threads: int) -> tuple[float, dict]:
    """Wall seconds and records by cell key, one cell after another in this process."""
    import torch

    from ptq_core.pipeline import run_quantization

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    records = {c.key: run_quantization(c.spec, store)[0] for c in cells}
    return time.perf_counter() - t0, records


def on_ray(g, store, workers: int) -> tuple[float, float, dict]:
    """Wall seconds of the sweep (Ray's start-up included), of Ray's start-up alone, and the records."""
    import ray

    from ptq_core.distributed import RayOptions
    from ptq_core.sweep import run_sweep

    t0 = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    startup = time.perf_counter() - t0
    try:
        report = run_sweep(g, store, RayOptions(workers=workers))
    finally:
        ray.shutdown()
    return time.perf_counter() - t0, startup, report.records


def _same(a, b) -> bool:
    drop = lambda m: {k: v for k, v in m.items() if k != "seconds"}  # noqa: E731
    return drop(a.metrics) == drop(b.metrics) and a.layers == b.layers


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--eval-limit", type=int, default=500)
    p.add_argument("--models", nargs="+", default=["fmnist-resnet20", "fmnist-mobilenetv2"])
    args = p.parse_args()
    from ptq_core.store import RunStore

    g = grid(args.models, args.eval_limit)
    cells = g.cells()
    tmp = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    cores = os.cpu_count()
    load = [os.getloadavg()[0]]
    seq_all, by_all = sequential(cells, RunStore(tmp / "seq-all.sqlite"), cores)
    load.append(os.getloadavg()[0])
    seq_one, by_one = sequential(cells, RunStore(tmp / "seq-one.sqlite"), 1)
    load.append(os.getloadavg()[0])
    wall, startup, by_ray = on_ray(g, RunStore(tmp / "ray.sqlite"), args.workers)
    load.append(os.getloadavg()[0])
    same = sum(_same(by_ray[c.key], by_one[c.key]) for c in cells)
    top1 = sum(by_ray[c.key].metrics["top1"] == by_all[c.key].metrics["top1"] for c in cells)
    print(f"{len(cells)} cells: RTN, calibration 64 images, first {args.eval_limit} test images, {cores} cores\n")
    print("| run | cells at once x threads | wall s | load average (1 min) before / after | per-cell results |")
    print("|---|---|---|---|---|")
    print(f"| sequential | 1 x {cores} | {seq_all:.1f} | {load[0]:.1f} / {load[1]:.1f} | reference for top-1 |")
    print(f"| sequential | 1 x 1 | {seq_one:.1f} | {load[1]:.1f} / {load[2]:.1f} | reference for every figure |")
    print(
        f"| sweep on Ray | {args.workers} x 1 | {wall:.1f} (Ray start-up {startup:.1f}) | {load[2]:.1f} / "
        f"{load[3]:.1f} | {same}/{len(cells)} identical to 1 x 1; top-1 {top1}/{len(cells)} equal to 1 x {cores} |"
    )
    print("\n| cell | top-1 sequential | top-1 sweep | seconds sequential (1 x 1) | seconds in the sweep |")
    print("|---|---|---|---|---|")
    for c in cells:
        a, b = by_one[c.key], by_ray[c.key]
        print(
            f"| {c.key} | {a.metrics['top1']:.2f} | {b.metrics['top1']:.2f} | {a.metrics['seconds']:.1f} | "
            f"{b.metrics['seconds']:.1f} |"
        )


if __name__ == "__main__":
    main()

"""Measured culprits of RTN on the zoo models: the top-3 layers, what each recovers, what applying them gives.

Usage: python benchmarks/diagnose.py [--models ...] [--bits 2/2 4/2] [--test 500] [--calib 256] [--threads 1]

For each model and W/A setting, RTN runs with the default settings (MSE observers,
per-channel weights, first and last layer at 8 bits) and `measured_culprits` ranks every
(layer, side) repair to 8 bits by the top-1 it recovers on the first `--test` test images
of the embedded Fashion-MNIST split. Then the top three repairs are applied together as
per-layer overrides, the model is quantized again from scratch with them, and its top-1
is measured on the same images. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def one(model_name: str, wbits: int, abits: int, test: int, calib_n: int) -> dict:
    """Culprits of one model at W`wbits`A`abits`, and the top three applied."""
    from ptq_core import QuantSpec, calibration_tensor, load_data, load_model
    from ptq_core.analysis import culprits
    from ptq_core.analysis.sensitivity import rtn_model
    from ptq_core.data import make_loader
    from ptq_core.metrics import evaluate
    from ptq_core.overrides import parse_overrides

    loaded = load_model(model_name)
    data = load_data("fmnist-sample", loaded.transform)
    calib = calibration_tensor(data, calib_n)
    loader = make_loader(data.test, limit=test)
    spec = QuantSpec(wbits=wbits, abits=abits)
    t0 = time.perf_counter()
    res = culprits.measured_culprits(loaded.model, calib, loader, spec, culprits.CulpritConfig(lookahead=2))
    seconds = time.perf_counter() - t0
    top3 = res["candidates"][:3]
    layer_bits = {c["layer"]: (wbits, abits) for c in res["candidates"]}
    text = culprits.repair_overrides(top3, layer_bits)
    applied = rtn_model(loaded.model, calib, dataclasses.replace(spec, overrides=parse_overrides(text))).model
    top1 = evaluate(applied, loader)["top1"]
    return {
        "model": model_name,
        "bits": f"W{wbits}A{abits}",
        "fp": res["fp_top1"],
        "rtn": res["top1"],
        "split": res["split"],
        "top3": top3,
        "applied": top1,
        "overrides": text,
        "chosen": res["chosen"],
        "seconds": seconds,
        "evaluations": res["evaluations"],
        "samples": res["samples"],
    }


def row(r: dict) -> str:
    """One Markdown table row."""
    tops = "; ".join(f"{c['layer']} {c['side'][0]} +{c['recovered']:.1f}" for c in r["top3"])
    greedy = " + ".join(f"{c['layer']} {c['side'][0]}" for c in r["chosen"]) or "none"
    last = r["chosen"][-1]["cumulative_top1"] if r["chosen"] else r["rtn"]
    return (
        f"| {r['model']} | {r['bits']} | {r['fp']:.2f} | {r['rtn']:.2f} | {r['split']['weights']:.1f} / "
        f"{r['split']['activations']:.1f} | {tops} | {r['applied']:.2f} ({r['applied'] - r['rtn']:+.1f}) | "
        f"{greedy} → {last:.2f} | {r['evaluations']} evals, {r['seconds']:.0f} s |"
    )


def main() -> None:
    """Parse options, run every cell, print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["fmnist-resnet20", "fmnist-mobilenetv2"])
    p.add_argument("--bits", nargs="+", default=["2/2", "4/2"], help="W/A pairs")
    p.add_argument("--test", type=int, default=500, help="first N test images")
    p.add_argument("--calib", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(
        f"RTN (MSE observers, per-channel weights, first/last 8-bit), calibration {args.calib} images, top-1 "
        f"on the first {args.test} test images of fmnist-sample. Split = points lost with only the weights / "
        "only the activations quantized. Recovered = top-1 gain with only that layer's side (w/a) at 8 bits.\n"
    )
    print(
        "| model | bits | float | RTN | split w / a | top-3 culprits (recovered pts) | top-3 applied | "
        "greedy set (≥50 % of the loss) | cost |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for model in args.models:
        for bits in args.bits:
            w, a = (int(b) for b in bits.split("/"))
            print(row(one(model, w, a, args.test, args.calib)), flush=True)


if __name__ == "__main__":
    main()

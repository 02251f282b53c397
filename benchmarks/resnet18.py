"""The method order on the zoo's real-size network: torchvision ResNet-18 on Fashion-MNIST at 3x64x64 (issue 18).

Usage:
    python benchmarks/resnet18.py [--bits W4A4 W2A2] [--seed 0] [--eval-limit N] [--quick] [--cached-only]

ResNet-18 is the seed papers' own architecture (AdaRound, BRECQ, QDrop and PD-Quant all
report it on ImageNet), so the order they publish at W2A2 can be checked on it:
RTN < AdaRound < BRECQ < QDrop < PD-Quant. Every cell is one seed: RTN with its defaults
(min-max weights, 1 024 calibration images), the reconstruction methods with the fast preset
(512 images, 500 steps per unit), and CAT (K = 64, fitted on 1 024 further calibration
images) over RTN and PD-Quant. Top-1 on the 10k test split unless --eval-limit.
RTN and PD-Quant run once, with CAT: CAT is fitted after the method on further images, so
the run's base top-1 is the method's own result (a plain cell stored earlier is used first).

The cells run as sweep "bench-resnet18" (benchmarks/sweeps.py): an interrupted table resumes,
and the runs show on the app's Compare runs page. The table rewrites its section of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results import write_results  # noqa: E402
from benchmarks.sweeps import add_sweep_arguments, cell_spec, figures, run_cells  # noqa: E402

MODEL = "fmnist-resnet18"
BITS = {"W4A4": (4, 4), "W2A2": (2, 2), "W2A4": (2, 4), "W4A2": (4, 2)}
METHODS = ("rtn", "adaround", "brecq", "qdrop", "pdquant")
WITH_CAT = ("rtn", "pdquant")
NAMES = {"rtn": "RTN", "adaround": "AdaRound", "brecq": "BRECQ", "qdrop": "QDrop", "pdquant": "PD-Quant"}


def cell_key(method: str, bits: str, seed: int, cat: bool) -> str:
    """The sweep key of one cell."""
    return f"{method}{'+cat' if cat else ''}/{bits}/seed{seed}"


def specs(args: argparse.Namespace) -> dict[str, object]:
    """Every cell's `RunSpec`, by key."""
    from ptq_core.cat import CATOptions

    out = {}
    quick = {"iters": 2, "calib": 32} if args.quick else {}
    for bits in args.bits:
        w, a = BITS[bits]
        for method in args.methods:
            cat = method in WITH_CAT  # RTN and PD-Quant: one run, with CAT (its base top-1 is the method's)
            preset = None if method == "rtn" else "fast"
            values = dict(quick) if method != "rtn" else ({"calib": 32} if args.quick else {})
            options = CATOptions(fit_size=64 if args.quick else 1024) if cat else None
            out[cell_key(method, bits, args.seed, cat)] = cell_spec(
                MODEL,
                method,
                preset=preset,
                device=args.device,
                eval_limit=args.eval_limit,
                wbits=w,
                abits=a,
                seed=args.seed,
                cat=options,
                **values,
            )
    return out


def table(records: dict[str, object], args: argparse.Namespace) -> str:
    """Markdown: one row per bits and method, with CAT's gain where it ran."""
    lines = ["| bits | method | top-1 | + CAT | method s | CPU s | peak MB |", "|---|---|---|---|---|---|---|"]
    fp = None
    for bits in args.bits:
        for method in args.methods:
            cat_rec = records.get(cell_key(method, bits, args.seed, True))
            rec = records.get(cell_key(method, bits, args.seed, False)) or cat_rec
            if rec is None:
                continue
            f = figures(rec)
            fp = f["fp_top1"]
            top1 = rec.metrics.get("top1_base", f["top1"]) if rec is cat_rec else f["top1"]
            cat = "-"
            if cat_rec is not None:
                cat = f"{cat_rec.metrics['top1']:.2f} ({cat_rec.metrics['top1'] - top1:+.2f})"
            lines.append(
                f"| {bits} | {NAMES[method]} | {top1:.2f} | {cat} | {f['seconds']:.0f} | "
                f"{f['cpu_s']:.0f} | {f['peak_mb']:.0f} |"
            )
    head = f"Float top-1 {fp:.2f}." if fp is not None else ""
    return head + "\n\n" + "\n".join(lines)


def stored(sweep: str, args: argparse.Namespace) -> dict[str, object]:
    """The finished cells of `sweep` in the store, by key."""
    from ptq_core.store import RunStore
    from ptq_core.sweep import sweep_records

    return {r.cell: r for r in sweep_records(RunStore(args.store), sweep) if r.status == "done"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bits", nargs="+", default=["W4A4", "W2A2"], choices=list(BITS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--eval-limit", type=int, default=None, help="test images (default: all 10k)")
    p.add_argument("--quick", action="store_true", help="tiny settings, to check the script runs (writes nothing)")
    p.add_argument("--rerun", action="store_true", help="run cells again even when the store has them")
    p.add_argument("--cached-only", action="store_true", help="the table of the cells the store has; run nothing")
    add_sweep_arguments(p)
    args = p.parse_args()
    if args.quick:
        args.eval_limit = args.eval_limit or 64
    sweep = "bench-resnet18" + ("-quick" if args.quick else "")
    records = stored(sweep, args) if args.cached_only else run_cells(sweep, specs(args), args)
    body = table(records, args)
    missing = [key for key in specs(args) if key not in records]
    if missing:
        body += "\n\nNot measured yet (run the script again to resume the sweep): " + ", ".join(missing) + "."
    images = f"the first {args.eval_limit}" if args.eval_limit else "all 10k"
    notes = (
        "One seed. RTN: defaults (1 024 calibration images); AdaRound, BRECQ, QDrop, PD-Quant: fast preset "
        "(512 images, 500 steps per unit); CAT: K = 64 on 1 024 further calibration images. 'method s' is the "
        "quantization's wall time, CPU s and peak MB the whole cell's worker process (loading, quantizing, "
        f"evaluating), on {images} test images."
    )
    print(body + "\n\n" + notes, flush=True)
    if not args.quick:
        write_results(
            "Method order on torchvision ResNet-18, Fashion-MNIST 3x64x64 (issue 18)",
            body + "\n\n" + notes,
            "python benchmarks/resnet18.py " + " ".join(sys.argv[1:]),
        )


if __name__ == "__main__":
    main()

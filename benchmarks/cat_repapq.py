"""CAT and RepAPQ evidence (issue 5). Each part prints Markdown and rewrites its section of benchmarks/RESULTS.md.

Usage:
    python benchmarks/cat_repapq.py cat [...]      the CAT part (see its --help)
    python benchmarks/cat_repapq.py repapq [--bits W6A6 W8A8 W4A4] [--methods ...] [--seeds 0]
        fmnist-repvgg at W8A8, W6A6, W4A4 with the fast preset: RTN (MSE observer, 1024
        images), BRECQ and QDrop on the merged model (fmnist-repvgg-deploy), RepAPQ (given the
        train form, merges it) and its ablations (no affine, MSE instead of MAE, no stage
        term, the affine's learning rate at 0.1 and 1e-3 instead of 1e-2), plus RTN on the
        unmerged branches for context; top-1 on the 10k test split, wall and CPU seconds,
        peak memory.
        The missing cells run together as sweep "bench-repapq" (benchmarks/sweeps.py; resumable,
        Ray on this machine or --address); the cells measured earlier are read from the archive
        benchmarks/cells/repapq.jsonl (read-only; --rerun ignores it). --quick checks the script runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results import write_results  # noqa: E402
from benchmarks.sweeps import (  # noqa: E402
    add_sweep_arguments,
    archived,
    args_cell_spec,
    figures,
    mean_std,
    run_cells,
)

# ----------------------------------------------------------------------------------------------------------
# CAT part (written separately; see issue 5)
# ----------------------------------------------------------------------------------------------------------


def add_cat_parser(sub: argparse._SubParsersAction) -> None:
    """The `cat` subcommand."""
    from benchmarks.cat_bench import add_arguments, run

    p = sub.add_parser("cat", help="CAT evidence (issue 5): base methods with and without CAT, and K = 1")
    add_arguments(p)
    p.set_defaults(func=lambda args: run(args, write_results))


# ----------------------------------------------------------------------------------------------------------
# RepAPQ part
# ----------------------------------------------------------------------------------------------------------

REPAPQ_ARCHIVE = archived("repapq")
REPAPQ_MODEL = "fmnist-repvgg"
REPAPQ_BITS = {"W8A8": (8, 8), "W6A6": (6, 6), "W4A4": (4, 4)}
# Baselines quantize the merged (deployable) model, as in the paper's comparisons; RepAPQ gets the train
# form and merges it itself, into the same function. "rtn, branches" quantizes the unmerged train form
# (each branch's conv+BN folded and quantized on its own, identity BN left in float): not deployable as
# one conv, shown for context only.
# table row -> (registered method, model name, settings over the preset: make_config values)
REPAPQ_VARIANTS: dict[str, tuple[str, str, dict]] = {
    "rtn (mse)": ("rtn", "fmnist-repvgg-deploy", {}),
    "brecq": ("brecq", "fmnist-repvgg-deploy", {}),
    "qdrop": ("qdrop", "fmnist-repvgg-deploy", {}),
    "repapq": ("repapq", "fmnist-repvgg", {}),
    "repapq: no affine": ("repapq", "fmnist-repvgg", {"affine": False}),
    "repapq: MSE not MAE": ("repapq", "fmnist-repvgg", {"distortion": "mse"}),
    "repapq: no stage term": ("repapq", "fmnist-repvgg", {"stage_weight": 0.0}),
    "repapq: affine lr 0.1": ("repapq", "fmnist-repvgg", {"affine_lr": 0.1}),  # the released code's
    "repapq: affine lr 1e-3": ("repapq", "fmnist-repvgg", {"affine_lr": 1e-3}),
    "rtn (mse), branches unmerged": ("rtn", "fmnist-repvgg", {}),
}
_SHORT = {
    "rtn (mse)": "rtn",
    "brecq": "brecq",
    "qdrop": "qdrop",
    "repapq": "repapq",
    "repapq: no affine": "repapq-noaffine",
    "repapq: MSE not MAE": "repapq-mse",
    "repapq: no stage term": "repapq-nostage",
    "repapq: affine lr 0.1": "repapq-affine0.1",
    "repapq: affine lr 1e-3": "repapq-affine0.001",
    "rtn (mse), branches unmerged": "rtn-branches",
}
_BY_SHORT = {v: k for k, v in _SHORT.items()}


def _repapq_spec(variant: str, bits: str, seed: int, args: argparse.Namespace):
    """One cell's `RunSpec`."""
    method, model_name, extra = REPAPQ_VARIANTS[_BY_SHORT[variant]]
    return args_cell_spec(args, model_name, method, REPAPQ_BITS[bits], seed, calib=args.calib, **extra)


def _repapq_key(variant: str, bits: str, seed: int, args: argparse.Namespace) -> str:
    model_name = REPAPQ_VARIANTS[_BY_SHORT[variant]][1]
    return json.dumps([model_name, variant, bits, seed, args.preset, args.iters, args.calib, args.eval_limit])


def _repapq_cells(args: argparse.Namespace) -> dict[tuple, dict]:
    """Every cell: from the archive benchmarks/cells/repapq.jsonl when measured there, else run now as a sweep."""
    archive = {} if args.rerun or args.quick else REPAPQ_ARCHIVE
    found, missing = {}, {}
    for bits in args.bits:
        for variant in args.methods:
            for seed in args.seeds:
                key = _repapq_key(variant, bits, seed, args)
                if key in archive:
                    found[(variant, bits, seed)] = archive[key]
                elif not args.cached_only:
                    missing[key] = (variant, bits, seed)
    specs = {key: _repapq_spec(*cell, args) for key, cell in missing.items()}
    for key, rec in run_cells("bench-repapq", specs, args).items():
        found[missing[key]] = figures(rec)
    return found


def repapq_table(args: argparse.Namespace) -> str:
    """Run every cell (printing rows as they finish) and return the Markdown table."""
    lines = [
        "| model | bits | method | float top-1 | top-1 (mean ± std) | seeds | wall s | CPU s | peak MB | "
        "calib / iters |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    cells = _repapq_cells(args)
    for bits in args.bits:
        for variant in args.methods:
            runs = [r for s in args.seeds if (r := cells.get((variant, bits, s))) is not None]
            if not runs:
                continue
            name = _BY_SHORT[variant]
            secs, cpu = statistics.mean(r["seconds"] for r in runs), statistics.mean(r["cpu_s"] for r in runs)
            row = (
                f"| {REPAPQ_VARIANTS[name][1]} | {bits} | {name} | {runs[0]['fp_top1']:.2f} | "
                f"{mean_std([r['top1'] for r in runs])} | {len(runs)} | {secs:.1f} | {cpu:.0f} | "
                f"{max(r['peak_mb'] for r in runs):.0f} | {runs[0]['calib']} / {runs[0]['iters']} |"
            )
            lines.append(row)
            print(row, flush=True)
    return "\n".join(lines)


def add_repapq_parser(sub: argparse._SubParsersAction) -> None:
    """The `repapq` subcommand."""
    p = sub.add_parser("repapq", help="RepAPQ evidence on fmnist-repvgg (issue 5)")
    p.add_argument("--device", default="auto")
    p.add_argument("--bits", nargs="+", default=list(REPAPQ_BITS), choices=list(REPAPQ_BITS))
    p.add_argument("--methods", nargs="+", default=list(_BY_SHORT), choices=list(_BY_SHORT))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--preset", default="fast", choices=("fast", "paper"))
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--calib", type=int, default=None)
    p.add_argument("--eval-limit", type=int, default=None, help="evaluate on the first N test images")
    p.add_argument("--rerun", action="store_true", help="run every cell again (archived and stored ones too)")
    p.add_argument("--no-write", action="store_true", help="print only; do not write RESULTS.md")
    p.add_argument("--cached-only", action="store_true", help="table of the cells already run; run nothing")
    p.add_argument("--quick", action="store_true", help="one tiny setting, to check the script runs")
    add_sweep_arguments(p)
    p.set_defaults(func=run_repapq)


def run_repapq(args: argparse.Namespace) -> None:
    args.eval_limit = args.eval_limit or None
    if args.quick:
        args.bits, args.seeds, args.iters, args.calib, args.eval_limit = ["W4A4"], [0], 4, 64, 256
    print(f"\nRepAPQ evidence: {REPAPQ_MODEL}, preset {args.preset}, seeds {args.seeds}\n")
    body = repapq_table(args)
    if not args.no_write:
        title = "RepAPQ on fmnist-repvgg" + (
            " (quick check, not a measurement)" if args.quick else f" (preset {args.preset})"
        )
        write_results(title, body, "python benchmarks/cat_repapq.py " + " ".join(sys.argv[1:]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="part", required=True)
    add_cat_parser(sub)
    add_repapq_parser(sub)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()

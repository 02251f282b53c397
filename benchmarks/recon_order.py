"""Why BRECQ does not beat AdaRound at W2A2 on fmnist-resnet20 (issue 3): each lead as a BRECQ variant.

Usage:
    python benchmarks/recon_order.py [--variants ...] [--seeds 0 1 2] [--bits W2A2] [--cached-only] [--quick]

The papers predict AdaRound < BRECQ at W2A2; the evidence table (`recon.py table`) has them
tied (90.88 vs 90.81). The leads, each changing one thing in BRECQ's fast preset:
    act-aware:  the rounding pass sees the quantized activations (MSE ranges), as AdaRound's
                and QDrop's do; BRECQ's released code learns the rounding in float.
    act-1000:   1 000 step-size steps per unit instead of the fast preset's 200.
    fisher:     the Fisher-diagonal weighted loss instead of the block-output MSE.
    calib-1024: 1 024 calibration images instead of 512.
Plain BRECQ and AdaRound come from the archive benchmarks/cells/recon.jsonl (the same settings
and seeds). The variants' cells measured earlier are read from the archive
benchmarks/cells/recon_order.jsonl (read-only); missing ones run together as sweep
"bench-recon-order" (benchmarks/sweeps.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results import write_results  # noqa: E402
from benchmarks.sweeps import (  # noqa: E402
    add_sweep_arguments,
    archived,
    cell_spec,
    figures,
    mean_std,
    run_cells,
)

ARCHIVE = archived("recon_order")
RECON_ARCHIVE = archived("recon")
MODEL = "fmnist-resnet20"
BITS = {"W2A2": (2, 2), "W2A4": (2, 4), "W4A4": (4, 4)}
VARIANTS: dict[str, dict] = {  # BRECQ settings over the fast preset (make_config values)
    "act-aware": {"act_aware_rounding": True},
    "act-1000": {"act_iters": 1000},
    "fisher": {"loss": "fisher"},
    "calib-1024": {"calib": 1024},
}


def _spec(variant: str, bits: str, seed: int, quick: bool):
    """One cell's `RunSpec`: BRECQ's fast preset with the variant's change."""
    over = dict(VARIANTS[variant]) | ({"iters": 4, "calib": 64} if quick else {})
    return cell_spec(
        MODEL,
        "brecq",
        preset="fast",
        eval_limit=256 if quick else None,
        wbits=BITS[bits][0],
        abits=BITS[bits][1],
        seed=seed,
        **over,
    )


def _baseline(method: str, bits: str, seed: int) -> dict | None:
    return RECON_ARCHIVE.get(json.dumps([MODEL, method, bits, seed, "fast", None, None, None]))


def _cells(args: argparse.Namespace) -> dict[tuple, dict]:
    """The variants' cells: archived in benchmarks/cells/recon_order.jsonl, else run now as one sweep."""
    found, missing = {}, {}
    for bits in args.bits:
        for variant in args.variants:
            for seed in args.seeds:
                key = json.dumps([MODEL, variant, bits, seed])
                if not args.quick and key in ARCHIVE:
                    found[(variant, bits, seed)] = ARCHIVE[key]
                elif not args.cached_only:
                    missing[key] = (variant, bits, seed)
    specs = {key: _spec(*cell, args.quick) for key, cell in missing.items()}
    for key, rec in run_cells("bench-recon-order", specs, args).items():
        found[missing[key]] = figures(rec)
    return found


def table(args: argparse.Namespace) -> str:
    """Run the missing cells and return the Markdown table (top-1 mean ± std and the gain over BRECQ)."""
    lines = ["| bits | variant | seeds | top-1 | vs BRECQ (paired) | wall s |", "|---|---|---|---|---|---|"]
    cells = _cells(args)
    for bits in args.bits:
        brecq = {s: c["top1"] for s in args.seeds if (c := _baseline("brecq", bits, s))}
        rows = {
            "AdaRound (recon.py)": {s: c for s in args.seeds if (c := _baseline("adaround", bits, s))},
            "BRECQ (recon.py)": {s: c for s in args.seeds if (c := _baseline("brecq", bits, s))},
        }
        for variant in args.variants:
            rows[f"BRECQ {variant}"] = {s: c for s in args.seeds if (c := cells.get((variant, bits, s)))}
        for name, cells in rows.items():
            if not cells:
                continue
            top1 = [c["top1"] for c in cells.values()]
            paired = [cells[s]["top1"] - brecq[s] for s in cells if s in brecq]
            gain = mean_std(paired, signed=True) if paired and not args.quick else "-"
            secs = sum(c["seconds"] for c in cells.values()) / len(cells)
            lines.append(f"| {bits} | {name} | {','.join(map(str, cells))} | {mean_std(top1)} | {gain} | {secs:.0f} |")
            print(lines[-1], flush=True)
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--bits", nargs="+", default=["W2A2"], choices=list(BITS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--quick", action="store_true", help="one tiny setting, to check the script runs")
    p.add_argument("--cached-only", action="store_true", help="table of the cells already run; run nothing")
    add_sweep_arguments(p)
    args = p.parse_args()
    args.rerun = False
    if args.quick:
        args.variants, args.seeds = args.variants[:1], [0]
    print(f"\nBRECQ variants on {MODEL}, fast preset\n")
    body = table(args)
    notes = (
        "Fast preset (512 images, 500 steps per unit, 200 step-size steps) unless the variant changes it; "
        "top-1 on the 10k test split; 'vs BRECQ' is paired by seed; wall seconds of the quantization on 1 thread "
        "(shared machine)."
    )
    print("\n" + notes)
    if not args.quick:
        write_results(
            "Why BRECQ ties AdaRound at W2A2 (issue 3)",
            body + "\n\n" + notes,
            "python benchmarks/recon_order.py " + " ".join(sys.argv[1:]),
        )


if __name__ == "__main__":
    main()

"""The CAT part of benchmarks/cat_repapq.py (issue 5): CAT's gain over each base method.

For every (model, bits, base method, seed) cell the base method runs (its calibration
images: the first ones of the seeded calibration permutation); CAT is then fitted on the
next 1024 calibration images (disjoint) with K = 64 and with K = 1 (one plain affine map),
alpha 0.4, no PCA, and measured on the 10k test split. A cell is two runs (`RunSpec`s with
CAT's options), both recording the base method's top-1; the missing cells run together as
sweep "bench-cat" (benchmarks/sweeps.py). The cells measured earlier, one quantization per
cell, are read from the archive benchmarks/cells/cat.jsonl (read-only); their base-run
figures (wall and CPU seconds, peak memory) are what benchmarks/recon.py reuses for its
W2A2 base runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.sweeps import add_sweep_arguments, archived, args_cell_spec, mean_std, run_cells  # noqa: E402

ARCHIVE = archived("cat")
MODELS = ("fmnist-resnet20", "fmnist-mobilenetv2")
BITS = {"W2A2": (2, 2), "W4A2": (4, 2)}
BASES = ("rtn", "brecq", "qdrop", "pdquant")
VARIANTS = {"cat": {"k": 64}, "k1": {"k": 1}}  # CATOptions overrides; alpha 0.4, no PCA, 1024 fitting images


def _cat_spec(model_name: str, bits: str, method: str, seed: int, variant: str, args: argparse.Namespace):
    """The `RunSpec` of one CAT variant of a cell: the base method, then CAT with the variant's options."""
    from ptq_core.cat import CATOptions

    # RTN keeps its 1024 calibration images by default
    return args_cell_spec(
        args, model_name, method, BITS[bits], seed, cat=CATOptions(fit_size=args.fit, **VARIANTS[variant])
    )


def _row(model: str, bits: str, method: str, seed: int, records: dict[str, Any]) -> dict:
    """A cell in the archived format from its two runs (CAT with K = 64 and K = 1)."""
    first = records["cat"]
    row = {
        "model": model,
        "bits": bits,
        "method": method,
        "seed": seed,
        "calib": first.metrics["calib_samples"],
        "iters": first.spec["method"].get("iters", 0),
        "fit": first.extras["data"]["cat_fit"],
        "eval": first.metrics["eval_samples"],
        "fp_top1": first.metrics["fp_top1"],
        "base_top1": first.metrics["top1_base"],
    }
    for name, rec in records.items():
        cat = rec.extras["method"]["cat"]
        row[name] = {
            "top1": rec.metrics["top1"],
            "fixes": cat["fixes"],
            "breaks": cat["breaks"],
            "fallback": len(cat["fallback"]),
            "capped": cat["capped"],
            "kl_before": cat["gap_before"]["kl"],
            "kl_after": cat["gap_after"]["kl"],
            "spec": rec.spec,
            "run_id": rec.run_id,
        }
    return row


def _key(model: str, bits: str, method: str, seed: int, args: argparse.Namespace) -> str:
    return json.dumps([model, bits, method, seed, args.preset, args.iters, args.fit, args.eval_limit])


def recon_cell(
    model: str, bits: str, method: str, seed: int, preset: str, iters: int | None, eval_limit: int | None
) -> dict | None:
    """This setting's base run, from an archived CAT cell, in benchmarks/recon.py's cell format (or None).

    Only cells run in their own process carry the base run's figures (``"base"``). The fitting
    set does not change the base run, so a cell with any fitting-set size will do.
    """
    want = [model, bits, method, seed, preset, iters]
    for r in reversed(list(ARCHIVE.values())):
        key = json.loads(r["key"])
        if "base" in r and key[:6] == want and key[7] == eval_limit:
            return {
                "top1": r["base_top1"],
                "fp_top1": r["fp_top1"],
                "seconds": r["base_seconds"],
                **r["base"],
                "calib": r["calib"],
                "iters": r["iters"],
                "source": "cat.jsonl " + r["key"],
                **({"spec": r["spec"]} if "spec" in r else {}),
            }
    return None


def cells(args: argparse.Namespace) -> list[dict]:
    """Every cell: archived when already measured, else its two runs (K = 64 and K = 1) in one sweep."""
    archive = {} if args.rerun or args.quick else ARCHIVE
    rows, missing, order = {}, {}, []
    for model in args.models:  # seed-major: every method at seed 0 before any second seed
        for seed in args.seeds:
            for method in args.methods:
                for bits in args.bits:
                    key = _key(model, bits, method, seed, args)
                    order.append(key)
                    if key in archive:
                        rows[key] = archive[key]
                    else:
                        missing[key] = (model, bits, method, seed)
    specs = {f"{key} {v}": _cat_spec(*cell, v, args) for key, cell in missing.items() for v in VARIANTS}
    done = run_cells("bench-cat", specs, args)
    for key, cell in missing.items():
        if all(f"{key} {v}" in done for v in VARIANTS):
            rows[key] = _row(*cell, {v: done[f"{key} {v}"] for v in VARIANTS})
    return [rows[k] for k in order if k in rows]


def table(rows: list[dict]) -> str:
    """Markdown: one line per (model, bits, base) with the seeds that finished."""
    head = [
        "| model | bits | base | seeds | float | base top-1 | + CAT (K=64) | + plain affine (K=1) | "
        "CAT gain | K=1 gain | CAT fixes / breaks | calib / fit / eval |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines = list(head)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["bits"], r["method"]), []).append(r)
    for (model, bits, method), rs in groups.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        base = [r["base_top1"] for r in rs]
        cat, k1 = [r["cat"]["top1"] for r in rs], [r["k1"]["top1"] for r in rs]
        gain = mean_std([c - b for c, b in zip(cat, base, strict=True)], signed=True)
        gain_k1 = mean_std([c - b for c, b in zip(k1, base, strict=True)], signed=True)
        fixes = sum(r["cat"]["fixes"] for r in rs) / len(rs)
        breaks = sum(r["cat"]["breaks"] for r in rs) / len(rs)
        lines.append(
            f"| {model} | {bits} | {method} | {','.join(str(r['seed']) for r in rs)} | "
            f"{rs[0]['fp_top1']:.2f} | {mean_std(base)} | {mean_std(cat)} | {mean_std(k1)} | "
            f"{gain} | {gain_k1} | {fixes:.0f} / {breaks:.0f} | "
            f"{rs[0]['calib']} / {rs[0]['fit']['size']} / {rs[0]['eval']} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace, write) -> None:
    """Run (or resume) every cell, print the table and write its section of RESULTS.md."""
    if args.quick:
        args.models, args.bits, args.methods, args.seeds = ["fmnist-resnet20"], ["W4A2"], ["rtn"], [0]
        args.eval_limit, args.fit = 500, 256
    args.eval_limit = args.eval_limit or None
    if args.table_only:
        rows = [r for r in ARCHIVE.values() if r["model"] in args.models]
    else:
        rows = cells(args)
    body = table(rows)
    notes = (
        "CAT fitted on calibration-split images disjoint from the base method's (the next images of the "
        "same seeded permutation); alpha 0.4, no PCA, identity for clusters of < 2 fitting samples, slopes "
        "capped at |10|. Top-1 on the test split; mean ± std over the seeds listed; gains are paired per "
        "seed. Base methods: RTN with the MSE observer (1024 images), BRECQ / QDrop / PD-Quant with the "
        "fast preset (512 images, 500 steps per unit). Fixes / breaks: test images CAT (K=64) turns from "
        "wrong to right / right to wrong, mean per seed."
    )
    print("\n" + body + "\n\n" + notes, flush=True)
    if not args.no_write and rows:
        title = "CAT on top of base methods" + (" (quick check, not a measurement)" if args.quick else "")
        write(title, body + "\n\n" + notes, "python benchmarks/cat_repapq.py " + " ".join(sys.argv[1:]))


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `cat` subcommand's flags."""
    p.add_argument("--device", default="auto")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--bits", nargs="+", default=list(BITS), choices=list(BITS))
    p.add_argument("--methods", nargs="+", default=list(BASES), choices=BASES)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--preset", default="fast", choices=("fast", "paper"))
    p.add_argument("--iters", type=int, default=None, help="reconstruction steps per unit (overrides the preset)")
    p.add_argument("--fit", type=int, default=1024, help="CAT fitting images")
    p.add_argument("--eval-limit", type=int, default=None, help="evaluate on the first N test images")
    p.add_argument("--rerun", action="store_true", help="run every cell again (archived and stored ones too)")
    p.add_argument("--table-only", action="store_true", help="run nothing new; tabulate every archived cell")
    p.add_argument("--no-write", action="store_true", help="print only; do not write RESULTS.md")
    p.add_argument("--quick", action="store_true", help="one tiny setting, to check the script runs")
    add_sweep_arguments(p)

"""The CAT part of benchmarks/cat_repapq.py (issue 5): CAT's gain over each base method.

For every (model, bits, base method, seed) cell the base method runs once (its
calibration images: the first ones of the seeded calibration permutation); CAT is
then fitted on the next 1024 calibration images (disjoint) with K = 64 and with
K = 1 (one plain affine map), alpha 0.4, no PCA, and all three are measured on the
10k test split from the same logits. Each cell runs in its own process; finished
cells are appended to benchmarks/cells/cat.jsonl and skipped on the next run (--rerun
ignores them). A cell also records the base run's own figures (wall and CPU seconds,
peak memory), so benchmarks/recon.py reuses its W2A2 base runs instead of repeating them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.cells import CellStore, Meter, cell_spec, mean_std  # noqa: E402

CELLS = CellStore(ROOT / "benchmarks" / "cells" / "cat.jsonl")
FLOAT_CACHE = ROOT / "benchmarks" / "cells" / "cache"  # float test logits per model (not in git)
MODELS = ("fmnist-resnet20", "fmnist-mobilenetv2")
BITS = {"W2A2": (2, 2), "W4A2": (4, 2)}
BASES = ("rtn", "brecq", "qdrop", "pdquant")
VARIANTS = {"cat": {"k": 64}, "k1": {"k": 1}}  # CATOptions overrides; alpha 0.4, no PCA, 1024 fitting images


def run_cell(model_name: str, bits: str, method: str, seed: int, args: argparse.Namespace) -> dict:
    """Quantize once, fit both CAT variants, measure base / CAT / K=1 on the test split.

    The row carries the base run's `RunSpec` ("spec", no CAT) and each variant's (with its CAT options).
    """
    import dataclasses

    import torch

    from ptq_core import calibration_tensor, load_data, load_model, quantize, resolve_device
    from ptq_core.cat import CATOptions, apply_cat, build_result, fit_set, model_logits
    from ptq_core.data import make_loader

    torch.set_num_threads(args.threads)
    steps = {} if method == "rtn" else {"iters": args.iters}  # RTN has no steps (and 1024 images by default)
    spec = cell_spec(model_name, method, preset=args.preset, device=args.device, eval_limit=args.eval_limit,
                     wbits=BITS[bits][0], abits=BITS[bits][1], seed=seed, **steps)  # fmt: skip
    config = spec.method
    dev = resolve_device(spec.device)
    meter = Meter(dev)
    loaded = load_model(spec.model, device=dev)
    model = loaded.model.eval()
    bundle = load_data(spec.data, loaded.transform)
    calib = calibration_tensor(bundle, config.calib, config.seed).to(dev)
    t0 = time.perf_counter()
    with meter:
        qres = quantize(model, calib, config)
    base_s = time.perf_counter() - t0
    fs = fit_set(bundle, config.calib, args.fit, config.seed)
    images = fs.images.to(dev)
    ev = _test_logits(model_name, model, qres.model, make_loader(bundle.test, limit=spec.eval_limit), dev,
                      spec.eval_limit)  # fmt: skip
    fit_zq = model_logits(qres.model, images)
    row = {"model": model_name, "bits": bits, "method": method, "seed": seed, "calib": config.calib,
           "iters": getattr(config, "iters", 0), "fit": fs.description, "eval": len(ev.labels),
           "base_seconds": base_s, "base": meter.figures(), "spec": spec.to_dict()}  # fmt: skip
    for name, over in VARIANTS.items():
        cat_spec = dataclasses.replace(spec, cat=CATOptions(fit_size=args.fit, **over))
        t1 = time.perf_counter()
        _, fit = apply_cat(model, qres.model, images, cat_spec.cat)
        res = build_result(fit, ev.q, ev.fp, ev.labels, fit_zq=fit_zq)
        row["fp_top1"], row["base_top1"] = res.fp_top1, res.top1_base
        row[name] = {"top1": res.top1, "fixes": res.fixes, "breaks": res.breaks, "fallback": len(res.fallback),
                     "capped": res.capped, "kl_before": res.gap_before["kl"], "kl_after": res.gap_after["kl"],
                     "fit_seconds": time.perf_counter() - t1, "spec": cat_spec.to_dict()}  # fmt: skip
    return row


def _test_logits(model_name: str, model, qmodel, loader, dev, eval_limit: int | None):
    """Float and quantized logits on the test split; the float ones are computed once per model.

    They are the same in every cell, so they are kept in benchmarks/cells/cache/ (not in git),
    which saves one full float evaluation per cell.
    """
    import torch

    from ptq_core.cat import EvalLogits, eval_logits

    path = FLOAT_CACHE / f"{model_name}-{eval_limit or 'all'}.pt"
    if not path.exists():
        ev = eval_logits(model, qmodel, loader, dev)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"fp": ev.fp, "labels": ev.labels}, path)
        return ev
    known = torch.load(path, weights_only=True)
    with torch.no_grad():
        q = torch.cat([qmodel.eval()(x.to(dev)).float().cpu() for x, _ in loader])
    return EvalLogits(known["fp"], q, known["labels"])


def _key(model: str, bits: str, method: str, seed: int, args: argparse.Namespace) -> str:
    return json.dumps([model, bits, method, seed, args.preset, args.iters, args.fit, args.eval_limit])


def recon_cell(model: str, bits: str, method: str, seed: int, preset: str, iters: int | None,
               eval_limit: int | None) -> dict | None:  # fmt: skip
    """This setting's base run, from a finished CAT cell, in benchmarks/recon.py's cell format (or None).

    Only cells run in their own process carry the base run's figures (``"base"``). The fitting
    set does not change the base run, so a cell with any fitting-set size will do.
    """
    want = [model, bits, method, seed, preset, iters]
    for r in reversed(CELLS.rows()):
        key = json.loads(r["key"])
        if "base" in r and key[:6] == want and key[7] == eval_limit:
            return {"top1": r["base_top1"], "fp_top1": r["fp_top1"], "seconds": r["base_seconds"], **r["base"],
                    "calib": r["calib"], "iters": r["iters"], "source": "cat.jsonl " + r["key"],
                    **({"spec": r["spec"]} if "spec" in r else {})}  # fmt: skip
    return None


def cell(model: str, bits: str, method: str, seed: int, args: argparse.Namespace) -> dict | None:
    """A finished cell from benchmarks/cells/cat.jsonl, or run it now in its own process (None if it fails)."""
    key = _key(model, bits, method, seed, args)
    if not args.rerun and not args.quick and (hit := CELLS.get(key)):
        return hit
    script = str(ROOT / "benchmarks" / "cat_repapq.py")
    cmd = [sys.executable, script, "cat", "--one", f"{model},{bits},{method},{seed}", "--device", args.device,
           "--preset", args.preset, "--fit", str(args.fit), "--threads", str(args.threads),
           "--eval-limit", str(args.eval_limit or 0)]  # fmt: skip
    cmd += ["--iters", str(args.iters)] if args.iters else []
    if (row := CELLS.run(key, cmd, f"{model} {bits} {method} seed {seed}", keep=not args.quick)) is None:
        return None
    print(f"<!-- done {model} {bits} {method} seed {seed}: base {row['base_top1']:.2f} cat {row['cat']['top1']:.2f} "
          f"k1 {row['k1']['top1']:.2f} ({row['base_seconds']:.0f} s) -->", flush=True)  # fmt: skip
    return row


def table(rows: list[dict]) -> str:
    """Markdown: one line per (model, bits, base) with the seeds that finished."""
    head = ["| model | bits | base | seeds | float | base top-1 | + CAT (K=64) | + plain affine (K=1) | "
            "CAT gain | K=1 gain | CAT fixes / breaks | calib / fit / eval |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
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
        lines.append(f"| {model} | {bits} | {method} | {','.join(str(r['seed']) for r in rs)} | "
                     f"{rs[0]['fp_top1']:.2f} | {mean_std(base)} | {mean_std(cat)} | {mean_std(k1)} | "
                     f"{gain} | {gain_k1} | {fixes:.0f} / {breaks:.0f} | "
                     f"{rs[0]['calib']} / {rs[0]['fit']['size']} / {rs[0]['eval']} |")  # fmt: skip
    return "\n".join(lines)


def run(args: argparse.Namespace, append) -> None:
    """Run (or resume) every cell, print the table and append it to RESULTS.md."""
    if args.quick:
        args.models, args.bits, args.methods, args.seeds = ["fmnist-resnet20"], ["W4A2"], ["rtn"], [0]
        args.eval_limit, args.fit = 500, 256
    args.eval_limit = args.eval_limit or None
    if args.one:
        model, bits, method, seed = args.one.split(",")
        print(json.dumps(run_cell(model, bits, method, int(seed), args)))
        return
    rows = []
    if args.table_only:
        rows = [r for r in {r["key"]: r for r in CELLS.rows()}.values() if r["model"] in args.models]
    else:
        for model in args.models:  # seed-major: every method at seed 0 before any second seed
            for seed in args.seeds:
                for method in args.methods:
                    for bits in args.bits:
                        if (r := cell(model, bits, method, seed, args)) is not None:
                            rows.append(r)
    body = table(rows)
    notes = ("CAT fitted on calibration-split images disjoint from the base method's (the next images of the "
             "same seeded permutation); alpha 0.4, no PCA, identity for clusters of < 2 fitting samples, slopes "
             "capped at |10|. Top-1 on the test split; mean ± std over the seeds listed; gains are paired per "
             "seed. Base methods: RTN with the MSE observer (1024 images), BRECQ / QDrop / PD-Quant with the "
             "fast preset (512 images, 500 steps per unit). Fixes / breaks: test images CAT (K=64) turns from "
             "wrong to right / right to wrong, mean per seed.")  # fmt: skip
    print("\n" + body + "\n\n" + notes, flush=True)
    if not args.no_append and rows:
        title = "CAT on top of base methods" + (" (quick check, not a measurement)" if args.quick else "")
        append(title, body + "\n\n" + notes, "python benchmarks/cat_repapq.py " + " ".join(sys.argv[1:]))


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
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rerun", action="store_true", help="ignore the cells already in benchmarks/cells/cat.jsonl")
    p.add_argument("--table-only", action="store_true", help="run nothing new; tabulate every finished cell")
    p.add_argument("--no-append", action="store_true", help="print only; do not append to RESULTS.md")
    p.add_argument("--quick", action="store_true", help="one tiny setting, to check the script runs")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)

"""Reconstruction methods: cost of one step, and the evidence table (issue 3).

Usage:
    python benchmarks/recon.py [step|dc|table|all] [--device auto] [--quick]
        step:  one reconstruction step of ResNet-20 blocks at batch 32 against a bare
               forward + backward of the same float block, plus PD-Quant's KL path.
        dc:    PD-Quant's distribution correction of ResNet-20 block inputs, group by
               group of 32 (the authors' loop) against all groups batched at once.
        table: fmnist-resnet20 and fmnist-mobilenetv2 at W4A4, W2A4, W2A2 with the fast
               preset and seeds 0-2: RTN (MSE), AdaRound, BRECQ, QDrop, PD-Quant; top-1
               mean +- std on the 10k test split, wall time and peak memory.
    --quick checks that the script runs (one tiny setting; the numbers mean nothing).

The table's missing cells run together as a sweep (benchmarks/sweeps.py: Ray on this machine
or --address, one fresh worker process per cell, so its peak resident memory is its own) into
the run store as sweep "bench-recon"; the cells measured earlier are read from the archive
benchmarks/cells/recon.jsonl (read-only). Both parts print Markdown and append it to
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
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

ARCHIVE = archived("recon")
METHODS = ("rtn", "adaround", "brecq", "qdrop", "pdquant")
BITS = {"W4A4": (4, 4), "W2A4": (2, 4), "W2A2": (2, 2)}


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def _per_call(fn, dev, n: int) -> float:
    """Seconds per call of fn over n calls (after two warm-up calls)."""
    fn()
    fn()
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    _sync(dev)
    return (time.perf_counter() - t0) / n


def _bare_step(block, cache, batch: int, input_grad: bool = True):
    """Forward + backward of the float block (weights trainable) on a batch of cached inputs.

    With `input_grad` the backward also gives the gradient for the block's input, as it
    does for every block inside a network during training.
    """
    import torch

    blk = copy.deepcopy(block).requires_grad_(True)

    def run() -> None:
        idx = torch.randint(len(cache), (batch,))
        x, y = cache.take(idx, "x_fp", "y_fp")
        loss = (blk(x.requires_grad_(input_grad)) - y).square().sum(1).mean()
        loss.backward()
        blk.zero_grad(set_to_none=True)

    return run


def _recon_step_time(ctx, unit, cache, layers, opts, dev, n: int) -> float:
    """Seconds per engine step (`UnitTrainer.step`) with the unit's trainables installed."""
    import torch

    from ptq_core.recon.engine import UnitTrainer
    from ptq_core.recon.step import StepInputs
    from ptq_core.recon.trainables import unit_trainables

    for layer in layers:
        layer.set_quant_state(True, opts.quant_act)
    module = ctx.qmodel.get_submodule(unit.name)
    with unit_trainables(layers, opts) as tr:
        logits = ctx.tails if opts.kl_weight > 0 else None
        inputs = StepInputs(ctx.qmodel, unit.name, module, cache, ctx.images, ctx.fp_logits, tr.rounders, logits)
        trainer = UnitTrainer(inputs, tr, opts)
        count = iter(range(1, 10**9))
        return _per_call(lambda: trainer.step(next(count), torch.randint(len(cache), (opts.batch_size,))), dev, n)


VARIANTS = {
    "brecq": dict(learn_rounding=True, quant_act=False),
    "qdrop": dict(learn_rounding=True, learn_act_scale=True, drop_prob=0.5),
    "pdquant": dict(learn_rounding=True, learn_act_scale=True, drop_prob=0.5, kl_weight=10.0, temperature=4.0),
}


def step_cost(device: str, iters: int, blocks: list[str], rounds: int = 5) -> list[dict]:
    """Seconds per step: bare block, BRECQ / QDrop step, and QDrop step + PD-Quant's KL path.

    Every figure is the best of `rounds` interleaved rounds of `iters` steps, so a busy
    machine slows all of them alike and the minimum is the quiet-machine cost.
    """
    from ptq_core import load_model, make_config, resolve_device
    from ptq_core.methods.recon_base import prepare_for_reconstruction
    from ptq_core.recon import ReconContext, ReconOptions, float_logits, units_for
    from ptq_core.recon.prepare_cache import build_unit_cache

    dev = resolve_device(device)
    try:
        model, weights = load_model("fmnist-resnet20", device=dev).model, "trained"
    except Exception:  # checkpoint not built yet: the cost does not depend on the weights
        from ptq_core.zoo import resnet20

        model, weights = resnet20().to(dev).eval(), "random init"
    calib = _calib(256, 0, dev)
    qmodel, _ = prepare_for_reconstruction(model, calib, make_config("qdrop", wbits=4, abits=4))
    ctx = ReconContext(qmodel, model, calib, float_logits(model, calib))
    units = units_for(qmodel, calib[:2], "block")
    ctx.tail_runner(units)
    rows = []
    for i, unit in enumerate(units):
        if unit.name not in blocks:
            continue
        for prev in units[:i]:  # the prefix is quantized, as during a real run
            for n in prev.layers:
                qmodel.get_submodule(n).set_quant_state(True, True)
        layers = [qmodel.get_submodule(n) for n in unit.layers]
        cache, _ = build_unit_cache(ctx, unit, i, len(units), ReconOptions())
        bare = _bare_step(model.get_submodule(unit.name), cache, 32)
        bare_w = _bare_step(model.get_submodule(unit.name), cache, 32, input_grad=False)
        best = {k: float("inf") for k in ("bare", "bare_w", *VARIANTS)}
        for _ in range(rounds):
            best["bare"] = min(best["bare"], _per_call(bare, dev, iters))
            best["bare_w"] = min(best["bare_w"], _per_call(bare_w, dev, iters))
            for name, kw in VARIANTS.items():
                t = _recon_step_time(ctx, unit, cache, layers, ReconOptions(iters=10**6, **kw), dev, iters)
                best[name] = min(best[name], t)
        rows.append({"block": unit.name, "weights": weights, "device": str(dev), **best})
    return rows


def dc_cost(device: str, blocks: list[str], samples: int, steps: int) -> list[dict]:
    """Seconds of PD-Quant's distribution correction, group by group (the authors' loop) vs batched.

    Both correct `samples` float block inputs of fmnist-resnet20 for `steps` Adam steps with
    the paper's per-group loss and schedule (groups of 32); they give the same corrected inputs
    (`tests/core/recon/test_recon.py::test_batched_dc_equals_per_batch_dc`), only the batching differs.
    """
    import torch

    from ptq_core import load_model, resolve_device
    from ptq_core.recon.correction import correct_distribution

    dev = resolve_device(device)
    model = load_model("fmnist-resnet20", device=dev).model
    x = _calib(samples, 0, dev)
    rows = []
    for name in blocks:
        block, seen = model.get_submodule(name), []
        handle = block.register_forward_pre_hook(lambda _m, args, seen=seen: seen.append(args[0].detach()))
        with torch.no_grad():
            model(x)
        handle.remove()
        times = {}
        for label, chunk in (("per group", 32), ("batched", samples)):
            _sync(dev)
            t0 = time.perf_counter()
            correct_distribution(block, seen[0], lambda_c=0.02, steps=steps, group=32, chunk=chunk)
            _sync(dev)
            times[label] = time.perf_counter() - t0
        rows.append({"block": name, "shape": list(seen[0].shape[1:]), "device": str(dev), **times})
    return rows


def dc_table(rows: list[dict], samples: int, steps: int) -> str:
    """Markdown for the distribution-correction rows."""
    out = [
        f"| block | input | device | per group of 32, s | batched ({samples} at once), s | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        shape = " x ".join(map(str, r["shape"]))
        speedup = r["per group"] / r["batched"]
        out.append(
            f"| {r['block']} | {shape} | {r['device']} | {r['per group']:.1f} | {r['batched']:.1f} | {speedup:.2f}x |"
        )
    out.append(
        f"\n{samples} calibration images, {steps} Adam steps per group, lambda_c 0.02, "
        f"{__import__('torch').get_num_threads()} thread(s)."
    )
    return "\n".join(out)


def _calib(n: int, seed: int, dev):
    from ptq_core import calibration_tensor, load_data

    return calibration_tensor(load_data("fmnist-sample"), n, seed).to(dev)


def step_table(rows: list[dict]) -> str:
    """Markdown for the step-cost rows (ratios against the bare step with input gradient)."""
    out = [
        "| block | weights | device | bare fwd+bwd ms (weights only) | BRECQ step ms (x bare) | "
        "QDrop step ms (x bare) | PD-Quant step ms (x bare) | KL path ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b = r["bare"]
        cells = [f"{1e3 * r[k]:.2f} ({r[k] / b:.2f}x)" for k in ("brecq", "qdrop", "pdquant")]
        out.append(
            f"| {r['block']} | {r['weights']} | {r['device']} | {1e3 * b:.2f} ({1e3 * r['bare_w']:.2f}) | "
            f"{' | '.join(cells)} | {1e3 * (r['pdquant'] - r['qdrop']):.2f} |"
        )
    out.append(
        "\nbare: the float block (BatchNorm unfolded) with weight and input gradients, as inside a network; "
        "in brackets weights only. BRECQ: rounding only, activations float. QDrop: rounding + step sizes + "
        "dropping. PD-Quant: QDrop's step plus the KL path through the rest of the network (last column)."
    )
    return "\n".join(out)


def _cell_key(model_name: str, method: str, bits: str, seed: int, args: argparse.Namespace) -> str:
    return json.dumps([model_name, method, bits, seed, args.preset, args.iters, args.calib, args.eval_limit])


def _spec(model_name: str, method: str, bits: str, seed: int, args: argparse.Namespace):
    """The cell's `RunSpec`: RTN with 1024 calibration images unless --calib, the others from the preset."""
    calib = args.calib or 1024 if method == "rtn" else args.calib
    return args_cell_spec(args, model_name, method, BITS[bits], seed, calib=calib)


def _from_cat(model_name: str, method: str, bits: str, seed: int, args: argparse.Namespace) -> dict | None:
    """The same quantization run by the CAT benchmark (its base method), as a table cell, or None.

    The CAT benchmark quantizes W2A2 with the same configs, calibration images and seeds, each cell
    in its own process, and recorded the base run's figures; reusing them saves running it twice.
    """
    if args.calib is not None:
        return None
    from benchmarks.cat_bench import recon_cell

    return recon_cell(model_name, bits, method, seed, args.preset, args.iters, args.eval_limit)


def _cells(args: argparse.Namespace) -> dict[tuple, dict]:
    """Every cell of the table: archived when already measured, else run now as one sweep."""
    archive = {} if args.rerun or args.quick else ARCHIVE
    found, missing = {}, {}
    for model_name in args.models:
        for bits in args.bits:
            for method in args.methods:
                for seed in args.seeds:
                    key = _cell_key(model_name, method, bits, seed, args)
                    hit = archive.get(key) or (
                        None if args.rerun or args.quick else _from_cat(model_name, method, bits, seed, args)
                    )
                    if hit:
                        found[(model_name, bits, method, seed)] = hit
                    elif not args.cached_only:
                        missing[key] = (model_name, bits, method, seed)
    specs = {key: _spec(m, meth, b, s, args) for key, (m, b, meth, s) in missing.items()}
    for key, rec in run_cells("bench-recon", specs, args).items():
        found[missing[key]] = figures(rec)
    return found


def evidence_table(args: argparse.Namespace) -> str:
    """Run every cell (printing rows as they finish) and return the Markdown table."""
    lines = [
        "| model | bits | method | seeds | float top-1 | top-1 mean ± std | wall s | CPU s | peak MB | calib / iters |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    cells = _cells(args)
    for model_name in args.models:
        for bits in args.bits:
            means = {}
            for method in args.methods:
                by_seed = {s: r for s in args.seeds if (r := cells.get((model_name, bits, method, s))) is not None}
                runs = list(by_seed.values())
                if not runs:
                    continue
                means[method] = statistics.mean(r["top1"] for r in runs)
                secs, peak = statistics.mean(r["seconds"] for r in runs), max(r["peak_mb"] for r in runs)
                cpu = statistics.mean(r.get("cpu_s", float("nan")) for r in runs)
                seeds = ",".join(map(str, by_seed))
                row = (
                    f"| {model_name} | {bits} | {method} | {seeds} | {runs[0]['fp_top1']:.2f} | "
                    f"{mean_std([r['top1'] for r in runs])} | {secs:.1f} | {cpu:.0f} | {peak:.0f} | "
                    f"{runs[0]['calib']} / {runs[0]['iters']} |"
                )
                lines.append(row)
                print(row, flush=True)
            order = " < ".join(sorted(means, key=means.get))
            print(f"<!-- {model_name} {bits} ascending: {order} -->", flush=True)
            lines.append(f"|  | {bits} | ascending order: {order} |  |  |  |  |  |  |  |")
    return "\n".join(lines)


def _command() -> str:
    return "python benchmarks/recon.py " + " ".join(sys.argv[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", nargs="?", default="all", choices=("step", "dc", "table", "all"))
    p.add_argument("--device", default="auto")
    p.add_argument("--models", nargs="+", default=["fmnist-resnet20", "fmnist-mobilenetv2"])
    p.add_argument("--bits", nargs="+", default=list(BITS), choices=list(BITS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--preset", default="fast", choices=("fast", "paper"))
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--calib", type=int, default=None)
    p.add_argument("--eval-limit", type=int, default=None, help="evaluate on the first N test images")
    p.add_argument("--step-iters", type=int, default=20, help="timed steps per round in the step part")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds in the step part (best is kept)")
    p.add_argument("--blocks", nargs="+", default=["layer1.1", "layer2.1", "layer3.1"])
    p.add_argument("--dc-samples", type=int, default=512, help="images corrected in the dc part")
    p.add_argument("--dc-steps", type=int, default=100, help="Adam steps per group in the dc part")
    p.add_argument("--rerun", action="store_true", help="run every cell again (archived and stored ones too)")
    p.add_argument("--quick", action="store_true", help="one tiny setting, to check the script runs")
    p.add_argument("--cached-only", action="store_true", help="table of the cells already run; run nothing")
    add_sweep_arguments(p)
    args = p.parse_args()
    args.eval_limit = args.eval_limit or None
    if args.quick:
        args.models, args.bits, args.seeds = args.models[:1], ["W4A4"], [0, 1]
        args.iters, args.calib, args.eval_limit = 4, 64, 256
        args.step_iters, args.rounds, args.blocks = 3, 1, args.blocks[:1]
    if args.part in ("step", "all"):
        print(
            f"One reconstruction step at batch 32 vs a bare forward + backward of the float block "
            f"(best of {args.rounds} rounds of {args.step_iters} steps)\n"
        )
        body = step_table(step_cost(args.device, args.step_iters, args.blocks, args.rounds))
        print(body, flush=True)
        quick = " (quick check, not a measurement)" if args.quick else ""
        write_results("Reconstruction step cost" + quick, body, _command())
    if args.part in ("dc", "all"):
        if args.quick:
            args.dc_samples, args.dc_steps = 64, 3
        print(f"\nDistribution correction: group by group vs batched ({args.dc_steps} steps)\n")
        body = dc_table(
            dc_cost(args.device, args.blocks, args.dc_samples, args.dc_steps), args.dc_samples, args.dc_steps
        )
        print(body, flush=True)
        quick = " (quick check, not a measurement)" if args.quick else ""
        write_results("PD-Quant distribution correction, per group vs batched" + quick, body, _command())
    if args.part in ("table", "all"):
        print(f"\nEvidence table: preset {args.preset}, seeds {args.seeds}\n")
        body = evidence_table(args)
        quick = " (quick check, not a measurement)" if args.quick else f" (preset {args.preset})"
        write_results("Reconstruction methods, evidence table" + quick, body, _command())


if __name__ == "__main__":
    main()

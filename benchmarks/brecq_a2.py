"""Where BRECQ loses at 2-bit activations on fmnist-mobilenetv2 (issue 3): its stage 2, one change at a time.

Usage:
    python benchmarks/brecq_a2.py [--variants ...] [--bits W4A2] [--iters 100] [--eval-limit 2000]

BRECQ learns the rounding with activations in float, then re-observes every unit's activation
ranges on the quantized model's inputs and learns the step sizes (stage 2). At A2 on
MobileNetV2 the fast preset ends far below RTN. Variants (seed 0; shorter rounding pass to
keep it cheap; top-1 on the first `--eval-limit` test images):
    rtn:           round-to-nearest, MSE ranges observed on the float model (1024 images)
    no-stage-2:    BRECQ's rounding, then RTN's activation ranges kept (act_iters 0)
    re-observed:   stage 2 with a vanishing step-size lr: the re-observed ranges alone
    stage-2:       the fast preset's stage 2 (200 steps, lr 4e-4)
    stage-2-lr:    stage 2 with lr 1e-2 (25x: the paper's 5 000-step budget in 200 steps)
    act-aware:     rounding learned with activations quantized (`act_aware_rounding`)
    qdrop:         QDrop's fast preset with the same rounding steps
Prints a Markdown table; nothing is cached (about 2-3 CPU-minutes per variant).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.cells import cell_spec  # noqa: E402

MODEL = "fmnist-mobilenetv2"
BITS = {"W4A2": (4, 2), "W2A2": (2, 2)}
VARIANTS: dict[str, tuple[str, dict]] = {  # variant -> (method, settings over the fast preset)
    "rtn": ("rtn", {"calib": 1024}),
    "no-stage-2": ("brecq", {"act_iters": 0}),
    "re-observed": ("brecq", {"act_lr": 1e-12}),
    "stage-2": ("brecq", {}),
    "stage-2-lr": ("brecq", {"act_lr": 1e-2}),
    "act-aware": ("brecq", {"act_aware_rounding": True}),
    "qdrop": ("qdrop", {}),
}


def run_one(variant: str, bits: str, iters: int, eval_limit: int) -> dict:
    """Quantize with one variant and evaluate, in this process (the row carries its `RunSpec`)."""
    import torch

    from ptq_core import calibration_tensor, load_data, load_model, quantize
    from ptq_core.data import make_loader
    from ptq_core.metrics import evaluate

    torch.set_num_threads(1)
    method, extra = VARIANTS[variant]
    steps = {} if method == "rtn" else {"iters": iters}
    spec = cell_spec(
        MODEL,
        method,
        preset="fast",
        device="cpu",
        eval_limit=eval_limit,
        wbits=BITS[bits][0],
        abits=BITS[bits][1],
        seed=0,
        **steps,
        **extra,
    )
    cfg = spec.method
    model = load_model(spec.model).model
    data = load_data(spec.data)
    res = quantize(model, calibration_tensor(data, cfg.calib, cfg.seed), cfg)
    return {
        "top1": evaluate(res.model, make_loader(data.test, limit=spec.eval_limit))["top1"],
        "seconds": res.seconds,
        "spec": spec.to_dict(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--bits", default="W4A2", choices=list(BITS))
    p.add_argument("--iters", type=int, default=100, help="rounding steps per unit")
    p.add_argument("--eval-limit", type=int, default=2000)
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.bits, args.iters, args.eval_limit)))
        return
    print(
        f"| {MODEL} {args.bits}, {args.iters} rounding steps per unit, seed 0 | top-1 (first {args.eval_limit}) "
        "| wall s |\n|---|---|---|",
        flush=True,
    )
    for v in args.variants:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            v,
            "--bits",
            args.bits,
            "--iters",
            str(args.iters),
            "--eval-limit",
            str(args.eval_limit),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            print(f"| {v} | failed: {out.stderr.strip().splitlines()[-1:]} | |", flush=True)
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {v} | {r['top1']:.2f} | {r['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()

"""Layer-wise solvers (issue 4): the evidence table and per-layer speed of COMQ against GPTQ.

Usage:
    python benchmarks/layerwise.py [table|speed|objective|all] [--models ...] [--calib 512] [--eval-limit N] [--quick]
        table: weight-only W4, W3, W2 (activations float) on each model with RTN (MSE),
               GPTQ, COMQ and multipoint at 0 %, 5 % and 10 % extra points: top-1 on the
               10k test split, mean per-layer output error and wall time. Multipoint cells
               also check the deployable form (expanded layer + channel merge) against the
               fake-quant model.
        speed: milliseconds per layer of COMQ and GPTQ on the same layers and Gram matrices.
        objective: (diagnostic, not in `all`) the mean relative layer error of RTN, GPTQ and
               COMQ variants (K=3, no scale update, natural order, start at nearest) on the
               same float-input Gram matrices.
    --quick checks that the script runs (tiny settings; RESULTS.md is not written).

The table's missing cells run together as sweep "bench-layerwise" (benchmarks/sweeps.py:
resumable, Ray on this machine or --address, one fresh process and one thread per cell), so
each cell's wall time is what a run on its own costs (its float-input capture included).
The cells measured earlier are read from the archive benchmarks/cells/layerwise.jsonl
(read-only); those were run one model per process with the float-input Gram matrices shared
(`gram_cache`) and the capture time added to every cell, and they also carry the check of
multipoint's deployable form, which a sweep's run does not measure (tests/core/layerwise/test_layerwise.py
checks it). Both parts print Markdown and rewrite their section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results import write_results  # noqa: E402
from benchmarks.sweeps import add_sweep_arguments, archived, cell_spec, run_cells  # noqa: E402

ARCHIVE = archived("layerwise")
MODELS = ("fmnist-resnet20", "fmnist-mobilenetv2", "fmnist-vit")
BITS = (4, 3, 2)
METHODS = {  # label -> (method, extra settings: make_config values)
    "RTN (MSE)": ("rtn", {}),
    "GPTQ": ("gptq", {}),
    "COMQ": ("comq", {}),
    "MP 0 %": ("multipoint", {"budget": 0.0}),
    "MP 5 %": ("multipoint", {"budget": 5.0}),
    "MP 10 %": ("multipoint", {"budget": 10.0}),
}


def _key(*parts) -> str:
    return json.dumps(parts)


def _spec(name: str, label: str, bits: int, calib: int, eval_limit: int | None):
    """The cell's `RunSpec`: weight-only (activations float) on the CPU."""
    method, extra = METHODS[label]
    return cell_spec(name, method, device="cpu", eval_limit=eval_limit, wbits=bits, abits=32, calib=calib, **extra)


def _mean_rel_error(model, x) -> float:
    """Mean over layers of the relative squared output error with that layer alone quantized, in %.

    The same figure as `metrics.layer_errors(model, x, "alone")` in one forward pass: with
    every other layer in float, a layer's input is its float input, so each layer's
    float and quantized outputs are both computed inside its hook (`forward`, not
    `__call__`, so the hook does not fire again).
    """
    import torch

    from ptq_core.hooks import scoped
    from ptq_core.modules import quant_layers, set_quant_state

    layers = dict(quant_layers(model))
    state = {n: (m.quant_weight, m.quant_act) for n, m in layers.items()}
    rel: list[float] = []

    def hook(name):
        def f(m, args, out):
            m.set_quant_state(*state[name])
            q = m.forward(args[0])
            m.set_quant_state(False, False)
            rel.append(100.0 * float((q - out).double().square().sum() / out.double().square().sum().clamp(min=1e-30)))

        return f

    set_quant_state(model, False, False)
    try:
        with scoped([m.register_forward_hook(hook(n)) for n, m in layers.items()]), torch.no_grad():
            model(x)
    finally:
        for n, m in layers.items():
            m.set_quant_state(*state[n])
    return sum(rel) / len(rel)


def _cell(rec) -> dict:
    """A finished run as a table cell: top-1, mean layer error (each layer alone), the method's seconds."""
    alone = [e["sqnr_db"] for e in rec.extras["layers_alone"]]
    rel = [0.0 if s is None else 100.0 * 10 ** (-s / 10) for s in alone]  # None: infinite SQNR (no error)
    cell = {
        "top1": rec.metrics["top1"],
        "fp_top1": rec.metrics["fp_top1"],
        "layer_err_pct": sum(rel) / len(rel),
        "seconds": rec.timings["method"],
        "timings": rec.timings,
        "spec": rec.spec,
        "run_id": rec.run_id,
    }
    overhead = rec.extras["method"].get("overhead")
    if overhead:
        cell["extra_pct"] = overhead["extra_percent"]
    return cell


def _cells(models, calib_n: int, limits: dict[str, int | None], bits_list, labels, args) -> dict[str, dict]:
    """Every cell by key: archived in benchmarks/cells/layerwise.jsonl, else run now as one sweep.

    A run on its own measures the float top-1 too; it stands for the model's float cell when
    the archive has none.
    """
    done = {} if args.quick else dict(ARCHIVE)
    missing = {}
    for name in models:
        for bits in bits_list:
            for label in labels:
                key = _key(name, label, bits, calib_n, limits.get(name))
                if key not in done:
                    missing[key] = _spec(name, label, bits, calib_n, limits.get(name))
    for key, rec in run_cells("bench-layerwise", missing, args).items():
        done[key] = _cell(rec)
        done.setdefault(_key(rec.model, "float", limits.get(rec.model)), {"top1": rec.metrics["fp_top1"]})
    return done


def _row(cells: list[dict | None], fmt: str, key: str) -> str:
    return " | ".join("-" if c is None else fmt.format(c[key]) for c in cells)


def table(models, calib_n: int, limits: dict[str, int | None], args, bits_list=BITS, labels=tuple(METHODS)) -> str:
    """Run (or resume) every cell and return the Markdown table (`limits`: test images per model)."""
    done = _cells(models, calib_n, limits, bits_list, labels, args)
    limited = ", ".join(f"{n}: first {k}" for n, k in limits.items() if k and n in models)
    scope = f"the 10k test split ({limited} test images)" if limited else "the 10k test split"
    lines = [
        f"Weight-only (activations float), first/last layer 8-bit, {calib_n} calibration images, top-1 (%) on "
        f"{scope}; layer err = mean over layers of ||ΔY||²/||Y||² (%) with that layer alone "
        "quantized, 128 test images; s = wall seconds of the method on 1 CPU thread (float-input capture included).",
        "",
        "| model | method | "
        + " | ".join(f"W{b} top-1" for b in bits_list)
        + " | "
        + " | ".join(f"W{b} layer err %" for b in bits_list)
        + " | "
        + " | ".join(f"W{b} s" for b in bits_list)
        + " |",
        "|---|---|" + "---|" * (3 * len(bits_list)),
    ]
    notes = []
    for name in models:
        eval_limit = limits.get(name)
        fp = done.get(_key(name, "float", eval_limit), {}).get("top1", float("nan"))
        lines.append(
            f"| {name} | float | " + " | ".join(f"{fp:.2f}" for _ in bits_list) + " |" + " |" * (2 * len(bits_list))
        )
        for label in labels:
            cs = [done.get(_key(name, label, b, calib_n, eval_limit)) for b in bits_list]
            lines.append(
                f"| {name} | {label} | {_row(cs, '{:.2f}', 'top1')} | {_row(cs, '{:.3g}', 'layer_err_pct')} | "
                f"{_row(cs, '{:.1f}', 'seconds')} |"
            )
            for b, c in zip(bits_list, cs, strict=True):
                if c and "extra_pct" in c:
                    check = f"{c['deploy_max_diff']:.2e}" if "deploy_max_diff" in c else "not measured in a sweep"
                    notes.append(
                        f"{name} W{b} {label}: {c['extra_pct']:.2f} % extra points, deploy form max |Δlogit| {check}"
                    )
    return "\n".join(
        lines
        + [
            "",
            "Multipoint overhead (extra b-bit output channels, one float coefficient per "
            "point) and deployable-form check (expanded layer + channel merge vs fake-quant, "
            "128 test images):",
            "",
        ]
        + [f"- {n}" for n in notes]
    )


def _best_ms(fn, rounds: int) -> float:
    best = math.inf
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return 1000 * best


def speed(models, calib_n: int, bits: int = 3, rounds: int = 3) -> str:
    """COMQ vs GPTQ solve time per layer on the same Gram matrices (layers of one shape grouped)."""
    import torch

    from ptq_core import QuantSpec, calibration_tensor, load_data, load_model, prepare
    from ptq_core.calibrate import calibrate_weights
    from ptq_core.layerwise import capture_grams, comq_solve, gptq_solve, weight_groups

    torch.set_num_threads(1)
    lines = [
        f"COMQ (greedy order, 1 sweep, scale update) vs GPTQ (block 128, 1 % damping) per layer at W{bits}, "
        f"same H from {calib_n} images, best of {rounds}, 1 CPU thread; layers of one shape are grouped "
        "(G groups x m rows x d inputs).",
        "",
        "| model | layer shape G x m x d | layers | COMQ ms/layer | GPTQ ms/layer | COMQ / GPTQ |",
        "|---|---|---|---|---|---|",
    ]
    data = load_data("fmnist-sample")
    for name in models:
        model = load_model(name).model
        calib = calibration_tensor(data, calib_n)
        qmodel, report = prepare(model, QuantSpec(wbits=bits, abits=32), calib[:8])
        calibrate_weights(qmodel)
        names = [info.name for info in report.layers]
        grams = capture_grams(qmodel, names, calib, 128)
        shapes: dict[tuple, list[float]] = {}
        for n in names:
            layer = qmodel.get_submodule(n)
            fq, w, h = layer.weight_quantizer, weight_groups(layer).detach(), grams[n]
            args = (w, h, fq.scale, fq.zero_point, fq.scheme.qmin, fq.scheme.qmax)
            tc = _best_ms(lambda: comq_solve(*args, per_channel=fq.scheme.per_channel), rounds)  # noqa: B023
            tg = _best_ms(lambda: gptq_solve(*args), rounds)  # noqa: B023
            shapes.setdefault(tuple(w.shape), []).append((tc, tg))
        tot_c = tot_g = 0.0
        for shape, ts in sorted(shapes.items(), key=lambda kv: -sum(t[1] for t in kv[1])):
            c, g = sum(t[0] for t in ts) / len(ts), sum(t[1] for t in ts) / len(ts)
            tot_c, tot_g = tot_c + c * len(ts), tot_g + g * len(ts)
            lines.append(f"| {name} | {' x '.join(map(str, shape))} | {len(ts)} | {c:.1f} | {g:.1f} | {c / g:.2f} |")
        lines.append(
            f"| {name} | **all layers** | {len(names)} | {tot_c:.0f} (total) | {tot_g:.0f} (total) | "
            f"**{tot_c / tot_g:.2f}** |"
        )
    return "\n".join(lines)


SOLVERS = {  # label -> solve(args, per_channel) returning [G, m, d] codes, on the same H
    "RTN (nearest)": lambda a, pc: None,
    "GPTQ": lambda a, pc: _gptq(a),
    "GPTQ act-order": lambda a, pc: _gptq(a, act_order=True),
    "COMQ": lambda a, pc: _comq(a, pc),
    "COMQ K=3": lambda a, pc: _comq(a, pc, sweeps=3),
    "COMQ no scale update": lambda a, pc: _comq(a, pc, update_scale=False),
    "COMQ natural order": lambda a, pc: _comq(a, pc, order="natural"),
    "COMQ from nearest": lambda a, pc: _comq(a, pc, start="nearest"),
}


def _gptq(args, **kw):
    from ptq_core.layerwise import gptq_solve

    return gptq_solve(*args, **kw), args[2]


def _comq(args, per_channel, **kw):
    from ptq_core.layerwise import comq_solve

    sol = comq_solve(*args, per_channel=per_channel, **kw)
    return sol.codes.reshape(args[0].shape), sol.scale


def objective(models, calib_n: int, bits_list=BITS) -> str:
    """Mean relative layer error of each solver on the same float-input H (no evaluation)."""
    import torch

    from ptq_core import QuantSpec, calibration_tensor, load_data, load_model, prepare
    from ptq_core.calibrate import calibrate_weights
    from ptq_core.layerwise import capture_grams, weight_groups

    torch.set_num_threads(1)
    data = load_data("fmnist-sample")
    head = f"Mean over layers of (w - q)ᵀH(w - q) / wᵀHw (%), all solvers on the same float-input H ({calib_n} images)."
    lines = [head, "", "| model | bits | " + " | ".join(SOLVERS) + " |", "|---|---|" + "---|" * len(SOLVERS)]
    for name in models:
        model = load_model(name).model
        calib = calibration_tensor(data, calib_n)
        grams = None
        for bits in bits_list:
            qmodel, report = prepare(model, QuantSpec(wbits=bits, abits=32), calib[:8])
            calibrate_weights(qmodel)
            names = [info.name for info in report.layers]
            grams = grams or capture_grams(qmodel, names, calib, 128)
            rel = {k: [] for k in SOLVERS}
            for n in names:
                layer = qmodel.get_submodule(n)
                fq, w, h = layer.weight_quantizer, weight_groups(layer).detach(), grams[n]
                args = (w, h, fq.scale, fq.zero_point, fq.scheme.qmin, fq.scheme.qmax)
                ref = float((w.double() @ h.double() * w.double()).sum())
                for label, solve in SOLVERS.items():
                    out = solve(args, fq.scheme.per_channel)
                    if out is None:
                        q = weight_groups(layer, fq(layer.weight.detach()))
                    else:
                        codes, scale = out
                        zp = fq.zero_point.reshape(-1).expand(codes.shape[0] * codes.shape[1]).reshape(codes.shape[:2])
                        sc = scale.reshape(-1).expand(codes.shape[0] * codes.shape[1]).reshape(codes.shape[:2])
                        q = (codes - zp[..., None]) * sc[..., None]
                    diff = (w - q).double()
                    rel[label].append(100 * float((diff @ h.double() * diff).sum()) / ref)
            cells = " | ".join(f"{sum(v) / len(v):.3g}" for v in rel.values())
            lines.append(f"| {name} | W{bits} | {cells} |")
    return "\n".join(lines)


def _emit(title: str, command: str, body: str, write: bool) -> None:
    print(f"\n## {title}\n\n`{command}`\n\n{body}\n", flush=True)
    if write:
        write_results(title, body, command)


def _limits(items: list[str]) -> dict[str, int]:
    return {k: int(v) for k, _, v in (item.partition("=") for item in items)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", nargs="?", choices=("table", "speed", "objective", "all"), default="all")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--calib", type=int, default=512)
    parser.add_argument("--eval-limit", type=int, default=None)
    parser.add_argument("--eval-limits", nargs="*", default=[], metavar="MODEL=N", help="per-model test images")
    parser.add_argument("--quick", action="store_true")
    add_sweep_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        print(table(["fmnist-vit"], 32, {"fmnist-vit": 200}, args, (3,), ("RTN (MSE)", "GPTQ", "COMQ", "MP 5 %")))
        print(speed(["fmnist-vit"], 32, rounds=1))
        return
    cmd = "python benchmarks/layerwise.py"
    if args.part in ("table", "all"):
        limits = {n: args.eval_limit for n in args.models} | _limits(args.eval_limits)
        body = table(args.models, args.calib, limits, args)
        _emit(
            "Layer-wise solvers: COMQ, GPTQ, multipoint (issue 4)",
            f"{cmd} table --calib {args.calib}" + "".join(f" --eval-limits {e}" for e in args.eval_limits),
            body,
            True,
        )
    if args.part == "objective":  # a diagnostic, run on its own
        _emit("Layer objective of each solver (issue 4)", f"{cmd} objective", objective(args.models, 256), True)
    if args.part in ("speed", "all"):
        _emit("COMQ vs GPTQ per-layer cost (issue 4)", f"{cmd} speed", speed(args.models, 256), True)


if __name__ == "__main__":
    main()

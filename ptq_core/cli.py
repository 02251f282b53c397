"""Command line: `python -m ptq_core {models,quantize,units,runs} ...`.

Bad arguments exit non-zero with a one-line message (never a stack trace).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .errors import PTQError
from .methods import METHODS, ProgressEvent, ReconMethodConfig
from .methods.recon_base import PRESETS
from .observers import OBSERVERS
from .prepare import QuantSpec

__all__ = ["main", "build_parser"]


def _bits(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bit-width must be an integer, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    p = argparse.ArgumentParser(prog="python -m ptq_core", description="Post-training quantization workbench.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list loadable models and their weights' status")
    q = sub.add_parser("quantize", help="quantize a model and report accuracy and per-layer error")
    q.add_argument("--model", default="fmnist-resnet20", help="zoo name, torchvision name, or file.py:factory")
    q.add_argument("--weights", default=None, help="state_dict file (safetensors or torch, loaded safely)")
    q.add_argument("--data", default="fmnist-sample", help="fmnist-sample, fmnist-full or imagefolder:<path>")
    q.add_argument("--method", default="rtn", choices=list(METHODS))
    q.add_argument("--observer", default="mse", choices=list(OBSERVERS), help="range estimator (weights and acts)")
    q.add_argument("--wbits", type=_bits, default=4, help="2-8, or 32 to keep weights in float")
    q.add_argument("--abits", type=_bits, default=4, help="2-8, or 32 to keep activations in float")
    q.add_argument("--granularity", choices=("channel", "tensor"), default="channel", help="weight granularity")
    q.add_argument("--first-last-bits", type=_bits, default=8, help="bits of first/last layer (0: no special case)")
    q.add_argument("--override", action="append", default=[], metavar="PATTERN=W/A",
                   help="per-layer bits by name pattern, e.g. 'layer3.*=8/8' (repeatable)")  # fmt: skip
    q.add_argument("--device", default="auto", help="auto, cpu or cuda")
    q.add_argument("--calib", type=int, default=None,
                   help="calibration images (default: the preset's, 1024 for paper)")  # fmt: skip
    q.add_argument("--preset", choices=PRESETS, default="paper",
                   help="reconstruction methods: paper settings or the fast CPU/zoo preset")  # fmt: skip
    q.add_argument("--iters", type=int, default=None, help="reconstruction steps per unit (overrides the preset)")
    q.add_argument("--fisher", action="store_true", help="brecq: Fisher-diagonal weighted loss instead of MSE")
    q.add_argument("--act-aware-rounding", action="store_true",
                   help="brecq: learn the rounding with activations quantized (released code: float)")  # fmt: skip
    q.add_argument("--dc", action=argparse.BooleanOptionalAction, default=None,
                   help="pdquant: distribution correction on (default) or off")  # fmt: skip
    q.add_argument("--sweeps", type=int, default=None, help="comq: passes over all coordinates (default 1)")
    q.add_argument("--act-order", action="store_true", help="gptq: quantize columns by decreasing H_jj")
    q.add_argument("--mp-budget", type=float, default=None, help="multipoint: %% extra points (default 5)")
    q.add_argument("--inputs", choices=("float", "quantized"), default=None,
                   help="comq/gptq/multipoint: inputs from the float or the partly quantized model")  # fmt: skip
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--cat", action="store_true", help="add CAT's cluster-wise logit correction after the method")
    q.add_argument("--cat-k", type=int, default=None, help="CAT clusters (default 64; 1 = one plain affine map)")
    q.add_argument("--cat-alpha", type=float, default=None, help="CAT blend factor in [0, 1] (default 0.4)")
    q.add_argument("--cat-pca", type=int, default=None, help="CAT: PCA dimensions before k-means (default: none)")
    q.add_argument("--cat-fit", type=int, default=None,
                   help="CAT fitting images, taken from the calibration split after the method's (default 1024)")
    q.add_argument("--refine-base", default=None, help="cat_refine: the method run before it (default pdquant)")
    q.add_argument("--eval-limit", type=int, default=None, help="evaluate on the first N test images only")
    q.add_argument("--json", default=None, metavar="PATH", help="write the full result as JSON")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.add_argument("--unit", action="append", default=[], metavar="PATTERN",
                   help="reconstruction methods: modules matching PATTERN become units (repeatable)")  # fmt: skip
    _add_units_parser(sub)
    r = sub.add_parser("runs", help="list, show, delete or export saved runs")
    r.add_argument("action", choices=("list", "show", "delete", "export"), nargs="?", default="list")
    r.add_argument("run_ids", nargs="*")
    r.add_argument("--format", choices=("json", "csv"), default="json")
    return p


def _add_units_parser(sub) -> None:
    u = sub.add_parser("units", help="print a model's reconstruction units and the KL path each will use")
    u.add_argument("--model", default="fmnist-resnet20", help="zoo name, torchvision name, or file.py:factory")
    u.add_argument("--weights", default=None, help="state_dict file (required for file.py:factory)")
    u.add_argument("--data", default="fmnist-sample", help="where the example images come from")
    u.add_argument("--source", choices=("graph", "blocks", "layers"), default="graph", help="where units come from")
    u.add_argument("--unit", action="append", default=[], metavar="PATTERN",
                   help="modules matching PATTERN become units (repeatable)")  # fmt: skip


def _cmd_units(args: argparse.Namespace) -> int:
    from .units_report import format_units_report, units_report

    print(format_units_report(units_report(args.model, args.weights, args.data, args.source, args.unit)))
    return 0


def _overrides(items: list[str]) -> dict[str, dict[str, int]]:
    out = {}
    for item in items:
        pattern, _, bits = item.rpartition("=")
        w, _, a = bits.partition("/")
        if not pattern or not w.isdigit() or not a.isdigit():
            raise PTQError(f"--override {item!r} must look like PATTERN=W/A, e.g. 'layer3.*=8/8'")
        out[pattern] = {"wbits": int(w), "abits": int(a)}
    return out


def _config(args: argparse.Namespace):
    spec = QuantSpec(wbits=args.wbits, abits=args.abits, w_observer=args.observer, a_observer=args.observer,
                     w_per_channel=args.granularity == "channel", first_last_bits=args.first_last_bits or None,
                     overrides=_overrides(args.override))  # fmt: skip
    cls = METHODS[args.method][0]
    extra = _method_flags(args)
    if issubclass(cls, ReconMethodConfig):
        return cls.from_preset(args.preset, quant=spec, seed=args.seed, calib=args.calib, iters=args.iters, **extra)
    if args.iters is not None:
        raise PTQError(f"--iters applies to reconstruction methods, not {args.method}")
    return cls(quant=spec, calib=1024 if args.calib is None else args.calib, seed=args.seed, **extra)


def _method_flags(args: argparse.Namespace) -> dict[str, object]:
    """Method-specific flags, refused for the other methods."""
    extra: dict[str, object] = {}
    if args.fisher:
        if args.method != "brecq":
            raise PTQError("--fisher applies to brecq only")
        extra["loss"] = "fisher"
    if args.act_aware_rounding:
        if args.method != "brecq":
            raise PTQError("--act-aware-rounding applies to brecq only")
        extra["act_aware_rounding"] = True
    if args.unit:
        if not issubclass(METHODS[args.method][0], ReconMethodConfig):
            raise PTQError("--unit applies to reconstruction methods only")
        extra["unit_patterns"] = list(args.unit)
    if args.dc is not None:
        if args.method != "pdquant":
            raise PTQError("--dc/--no-dc applies to pdquant only")
        extra["dc"] = args.dc
    extra.update(_layerwise_flags(args))
    if args.method == "cat_refine":  # --preset is the base method's, --iters the refinement's
        extra["base_preset"] = args.preset
        if args.refine_base:
            extra["base"] = args.refine_base
        if args.iters is not None:
            extra["iters"], args.iters = args.iters, None
    elif args.refine_base:
        raise PTQError("--refine-base applies to cat_refine only")
    return extra


def _layerwise_flags(args: argparse.Namespace) -> dict[str, object]:
    """--sweeps (comq), --act-order (gptq), --mp-budget (multipoint), --inputs (all three)."""
    extra: dict[str, object] = {}
    for flag, key, value, methods in (("--sweeps", "sweeps", args.sweeps, ("comq",)),
                                      ("--act-order", "act_order", args.act_order or None, ("gptq",)),
                                      ("--mp-budget", "budget", args.mp_budget, ("multipoint",)),
                                      ("--inputs", "inputs", args.inputs, ("comq", "gptq", "multipoint"))):  # fmt: skip
        if value is not None:
            if args.method not in methods:
                raise PTQError(f"{flag} applies to {'/'.join(methods)} only")
            extra[key] = value
    return extra


def _cat_options(args: argparse.Namespace):
    """CATOptions from the --cat flags (None without --cat)."""
    knobs = {"k": args.cat_k, "alpha": args.cat_alpha, "pca": args.cat_pca, "fit_size": args.cat_fit}
    if not args.cat:
        if any(v is not None for v in knobs.values()):
            raise PTQError("--cat-k, --cat-alpha, --cat-pca and --cat-fit need --cat")
        return None
    from .cat import CATOptions

    return CATOptions(**{k: v for k, v in knobs.items() if v is not None})


class _Bar:
    """A progress bar on stderr driven by ProgressEvents."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.bar, self.key = quiet, None, None

    def __call__(self, ev: ProgressEvent) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        key = (ev.stage, ev.unit, ev.message)
        if key != self.key:
            self.close()
            label = " ".join(x for x in (ev.stage, ev.unit or ev.message) if x)
            self.bar, self.key = tqdm(total=ev.total, desc=label, file=sys.stderr, leave=False), key
        self.bar.n = ev.step
        if ev.losses:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in ev.losses.items()}, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _print_result(res) -> None:
    mb = lambda bits: bits / 8 / 1e6  # noqa: E731
    print(f"model {res.model}  method {res.method}  W{res.wbits}A{res.abits}  device {res.device}  run {res.run_id}")
    print(f"{'':12}{'top-1':>8}{'top-5':>8}{'size MB':>10}")
    print(f"{'float':12}{res.fp_top1:8.2f}{res.fp_top5:8.2f}{mb(res.fp_size_bits):10.3f}")
    if res.top1_base is not None:
        print(f"{'without CAT':12}{res.top1_base:8.2f}")
    print(f"{'quantized':12}{res.top1:8.2f}{res.top5:8.2f}{mb(res.size_bits):10.3f}")
    print(f"evaluated on {res.eval_samples} images in {res.seconds:.1f} s")
    worst = sorted(res.layers, key=lambda e: e["sqnr_db"])[:5]
    if worst:
        print("worst layers (all quantized):")
        print(f"  {'layer':32}{'W/A':>7}{'SQNR dB':>9}{'cosine':>8}{'MSE':>11}")
        for e in worst:
            bits = f"{e['wbits']:>3}/{e['abits']:<3}"
            print(f"  {e['name']:32}{bits}{e['sqnr_db']:9.2f}{e['cosine']:8.4f}{e['mse']:11.3e}")
    if res.report.get("unsupported"):
        print("left in float (unsupported): " + ", ".join(f"{n} ({t})" for n, t in res.report["unsupported"]))


def _cmd_models() -> int:
    from .models import list_models

    print(f"{'name':24}{'source':13}{'status':12}{'float top-1':>12}  detail")
    for e in list_models():
        acc = f"{e.card['fp_top1']:.2f}" if "fp_top1" in e.card else ""
        print(f"{e.name:24}{e.source:13}{e.status:12}{acc:>12}  {e.detail}")
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from .pipeline import run_quantization

    config = _config(args)
    cat = _cat_options(args)
    bar = _Bar(args.quiet)
    try:
        res, _ = run_quantization(args.model, config, args.data, args.device, args.weights, progress=bar,
                                  eval_limit=args.eval_limit, cat=cat)  # fmt: skip
    finally:
        bar.close()
    _print_result(res)
    if args.json:
        with open(args.json, "w") as f:
            f.write(_dumps(res.to_dict()))
    return 0


def _dumps(d: dict) -> str:
    from .store import to_jsonable

    return json.dumps(to_jsonable(d), indent=2)


def _cmd_runs(args: argparse.Namespace) -> int:
    from .store import RunStore

    store = RunStore()
    if args.action == "list":
        for r in store.list():
            top1 = r.metrics.get("top1")
            acc = f"{top1:6.2f}" if isinstance(top1, (int, float)) else "     -"
            print(f"{r.run_id}  {r.status:9} {r.model:22} {r.method:9} W{r.wbits}A{r.abits}  top-1 {acc}")
    elif args.action == "show":
        for rid in args.run_ids:
            print(_dumps(store.get(rid).to_dict()))
    elif args.action == "delete":
        print(f"deleted {store.delete(args.run_ids)} run(s)")
    else:
        ids = args.run_ids or None
        print(store.export_json(ids) if args.format == "json" else store.export_csv(ids))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "models":
            return _cmd_models()
        if args.command == "quantize":
            return _cmd_quantize(args)
        if args.command == "units":
            return _cmd_units(args)
        return _cmd_runs(args)
    except PTQError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130

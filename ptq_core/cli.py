"""Command line: `python -m ptq_core {models,quantize,units,export,report,sweep,runs} ...`.

Bad arguments exit non-zero with a one-line message (never a stack trace).
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any

from .cat.options import CATOptions
from .distributed import RayOptions
from .errors import PTQError
from .grid import load_grid
from .methods import METHODS, MethodConfig, ProgressEvent, config_from_dict
from .models import list_models
from .observers import OBSERVERS
from .overrides import parse_overrides
from .pipeline import run_quantization
from .prepare import QuantSpec
from .rebuild import rebuild_run, stored_spec
from .report import write_report
from .run_export import FORMATS, SUFFIX, write_artifact
from .settings import Setting, settings
from .spec import RunSpec, make_config
from .store import RunRecord, RunStore, to_jsonable
from .sweep import cell_identity, run_sweep
from .units_report import format_units_report, units_report

__all__ = ["main", "build_parser", "spec_from_args", "method_settings"]


# Options that are spelled differently from the field they set: flag -> (field, value or None = the given value)
_ALIASES = {
    "--observer": ("w_observer+a_observer", None),
    "--granularity": ("w_per_channel", None),
    "--override": ("overrides", None),
    "--fisher": ("loss", "fisher"),
    "--mp-budget": ("budget", None),
    "--refine-base": ("base", None),
}
_PRESET_FIELDS = {"calib", "iters", "round_lr", "act_lr", "act_iters", "dc_steps", "dc_lr", "recon_batch", "affine_lr"}
_RUN_FIELDS = ("model", "weights", "data", "device", "eval_limit", "error_samples")


def _scalar(kind: Any, optional: bool, name: str) -> Callable[[str], Any]:
    """The argparse type of a setting: ints and floats with a one-line error; 'none' unsets an optional one."""

    def parse(text: str) -> Any:
        if optional and text.lower() in ("none", "unset"):
            return None
        if kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                what = "bit-width" if name.endswith("bits") else name
                raise argparse.ArgumentTypeError(
                    f"{what} must be {'an integer' if kind is int else 'a number'}, got {text!r}"
                ) from None
        return text

    return parse


def method_settings() -> dict[str, tuple[Setting, list[str]]]:
    """Every setting of the quantization spec and of every registered method: name -> (setting, methods)."""
    found: dict[str, tuple[Setting, list[str]]] = {s.name: (s, list(METHODS)) for s in settings(QuantSpec)}
    for method, (cls, _fn) in METHODS.items():
        for s in settings(cls):
            if s.nested:
                continue
            if s.name in found and found[s.name][0].kind != s.kind:
                raise TypeError(f"setting {s.name!r} has two types ({found[s.name][0].kind} and {s.kind})")
            found.setdefault(s.name, (s, []))[1].append(method)
    return found


def _defaults(name: str, owners: list[str]) -> str:
    """The default of setting `name`, or each method's when they differ."""
    by_method: dict[str, list[str]] = {}
    for method in owners:
        cls = METHODS[method][0]
        value = next(s.default for s in settings(cls) if s.name == name)
        by_method.setdefault("none" if isinstance(value, dict) else str(value), []).append(method)
    if len(by_method) == 1:
        return f"default {next(iter(by_method))}"
    return "defaults: " + "; ".join(f"{'/'.join(ms)} {v}" for v, ms in by_method.items())


def _add_setting(group: argparse._ArgumentGroup, s: Setting, flag: str, dest: str, owners: list[str]) -> None:
    where = "" if len(owners) == len(METHODS) else f" [{'/'.join(owners)}]"
    if owners == ["cat"] or s.name in QuantSpec.__dataclass_fields__:
        default = "default " + (str(s.default) if not isinstance(s.default, dict) else "none")
    else:
        default = _defaults(s.name, owners)
    preset = "; the fast preset changes it" if s.name in _PRESET_FIELDS else ""
    help_ = f"{s.help}{where} ({default}{preset})"
    if s.kind is bool:
        group.add_argument(
            flag, dest=dest, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_
        )
    elif s.name == "overrides" or typing.get_origin(s.kind) is list:
        alias = {"overrides": ["--override"], "unit_patterns": ["--unit"]}.get(s.name, [])
        metavar = "PATTERN=W/A" if s.name == "overrides" else "PATTERN"
        group.add_argument(
            flag,
            *alias,
            dest=dest,
            action="append",
            default=argparse.SUPPRESS,
            metavar=metavar,
            help=help_ + "; repeatable",
        )
    else:
        choices = s.choices if s.kind is str else None
        group.add_argument(
            flag,
            dest=dest,
            type=_scalar(s.kind, s.optional, s.name),
            choices=choices,
            default=argparse.SUPPRESS,
            metavar=None if choices else s.name.upper(),
            help=help_,
        )


def _quantize_parser(sub: Any) -> None:
    q = sub.add_parser(
        "quantize",
        help="quantize a model and report accuracy and per-layer error",
        description="Every setting of the run description has an option; --config runs a stored "
        "description and the options given change it.",
    )
    run = q.add_argument_group("run")
    run.add_argument("--config", default=None, metavar="SPEC.json", help="a run description (runs show ID --spec)")
    run.add_argument("--model", default=argparse.SUPPRESS, help="zoo name, torchvision name, or file.py:factory")
    run.add_argument("--weights", default=argparse.SUPPRESS, help="state_dict file (safetensors or torch, safe)")
    run.add_argument("--data", default=argparse.SUPPRESS, help="fmnist-sample, fmnist-full or imagefolder:<path>")
    run.add_argument("--device", default=argparse.SUPPRESS, help="auto, cpu or cuda")
    run.add_argument(
        "--eval-limit",
        type=_scalar(int, True, "eval_limit"),
        default=argparse.SUPPRESS,
        help="evaluate on the first N test images only (default: all)",
    )
    run.add_argument(
        "--error-samples",
        type=_scalar(int, False, "error_samples"),
        default=argparse.SUPPRESS,
        help="test images of the per-layer error tables (default 256)",
    )
    run.add_argument("--method", default=argparse.SUPPRESS, choices=list(METHODS))
    run.add_argument("--json", default=None, metavar="PATH", help="write the stored run (as runs show ID) as JSON")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    quant = q.add_argument_group("quantization and method settings (each names the methods it applies to)")
    quant.add_argument(
        "--observer",
        dest="alias_observer",
        choices=list(OBSERVERS),
        default=argparse.SUPPRESS,
        help="range estimator of weights and activations (sets both observers)",
    )
    quant.add_argument(
        "--granularity",
        dest="alias_granularity",
        choices=("channel", "tensor"),
        default=argparse.SUPPRESS,
        help="weight granularity (sets --w-per-channel)",
    )
    quant.add_argument(
        "--fisher",
        dest="alias_fisher",
        action="store_true",
        default=argparse.SUPPRESS,
        help="brecq: Fisher-diagonal weighted loss (--loss fisher)",
    )
    quant.add_argument(
        "--mp-budget",
        dest="alias_mp_budget",
        type=_scalar(float, True, "budget"),
        default=argparse.SUPPRESS,
        metavar="PERCENT",
        help="multipoint: the same as --budget",
    )
    quant.add_argument(
        "--refine-base",
        dest="alias_refine_base",
        default=argparse.SUPPRESS,
        metavar="METHOD",
        help="cat_refine: the same as --base",
    )
    for name, (s, owners) in method_settings().items():
        _add_setting(quant, s, s.flag, f"set_{name}", owners)
    cat = q.add_argument_group("CAT's correction after the method")
    cat.add_argument(
        "--cat",
        action="store_true",
        default=argparse.SUPPRESS,
        help="add CAT's cluster-wise logit correction after the method",
    )
    for s in settings(CATOptions):
        flag = "--cat-" + s.name.replace("_", "-")
        _add_setting(cat, s, flag, f"cat_{s.name}", ["cat"])
        if s.name == "fit_size":
            cat.add_argument(
                "--cat-fit", dest="cat_fit_size", type=int, default=argparse.SUPPRESS, help="same as --cat-fit-size"
            )


def _sweep_parser(sub: Any) -> None:
    s = sub.add_parser(
        "sweep",
        help="run a grid of runs on Ray (this machine, or a cluster with --address)",
        description="Run every cell of a grid (a base run description and axes to vary) as a Ray "
        "task; each cell is stored as a run tagged with the sweep's name. Cells already "
        "done are skipped, so running the same grid again resumes it.",
    )
    s.add_argument("grid", metavar="GRID", help="grid file (.json, or .yaml with PyYAML): {name, base, axes}")
    s.add_argument("--name", default=None, help="the sweep's name (default: the grid's name, else the file's)")
    s.add_argument(
        "--address",
        default=None,
        help="a running Ray cluster (host:6379 or ray://host:10001); default: start Ray on this machine",
    )
    s.add_argument(
        "--workers",
        type=_scalar(int, True, "workers"),
        default=None,
        help="cells at once (default: as many as Ray's CPUs allow)",
    )
    s.add_argument(
        "--cpus-per-cell",
        type=_scalar(int, False, "cpus_per_cell"),
        default=1,
        help="CPUs each cell asks Ray for, and its torch threads (default 1)",
    )
    s.add_argument("--isolate", action="store_true", help="a fresh worker process per cell (its own memory)")
    s.add_argument("--rerun", action="store_true", help="run every cell, even those already done")
    s.add_argument("--dry-run", action="store_true", help="list the cells and whether each is done; run nothing")
    s.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    p = argparse.ArgumentParser(prog="python -m ptq_core", description="Post-training quantization workbench.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list loadable models and their weights' status")
    _quantize_parser(sub)
    _add_units_parser(sub)
    e = sub.add_parser(
        "export",
        help="rebuild a saved run and export it (ONNX, integer checkpoint, encodings), "
        "checked against the stored top-1",
    )
    e.add_argument("run_id")
    e.add_argument("--format", choices=("onnx", "int", "encodings", "all"), default="onnx")
    e.add_argument("-o", "--output", default=None, help="file to write (with --format all: a prefix; default RUN_ID)")
    e.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    _sweep_parser(sub)
    r = sub.add_parser("runs", help="list, show, delete or export saved runs")
    r.add_argument("action", choices=("list", "show", "delete", "export"), nargs="?", default="list")
    r.add_argument("run_ids", nargs="*")
    r.add_argument("--format", choices=("json", "csv"), default="json")
    r.add_argument("--spec", action="store_true", help="show: print only the run's description (for --config)")
    rep = sub.add_parser(
        "report",
        help="rebuild a stored run from its description and write one self-contained "
        "HTML report (spec, accuracy, per-layer errors, diagnosis, scales/zero points, histograms)",
    )
    rep.add_argument("run_id")
    rep.add_argument("-o", "--output", default=None, help="HTML file to write (default: report-RUN_ID.html)")
    rep.add_argument(
        "--culprits",
        type=int,
        default=None,
        metavar="N",
        help="also measure the culprits on the first N test images (one evaluation per layer)",
    )
    rep.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--sweep", default=None, metavar="NAME", help="list / export: only the cells of this sweep")
    return p


def _add_units_parser(sub) -> None:
    u = sub.add_parser("units", help="print a model's reconstruction units and the KL path each will use")
    u.add_argument("--model", default="fmnist-resnet20", help="zoo name, torchvision name, or file.py:factory")
    u.add_argument("--weights", default=None, help="state_dict file (required for file.py:factory)")
    u.add_argument("--data", default="fmnist-sample", help="where the example images come from")
    u.add_argument("--source", choices=("graph", "blocks", "layers"), default="graph", help="where units come from")
    u.add_argument(
        "--unit",
        action="append",
        default=[],
        metavar="PATTERN",
        help="modules matching PATTERN become units (repeatable)",
    )


def _cmd_units(args: argparse.Namespace) -> int:
    print(format_units_report(units_report(args.model, args.weights, args.data, args.source, args.unit)))
    return 0


def _given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The method and quantization settings given on the command line, aliases resolved."""
    values = {k[4:]: v for k, v in vars(args).items() if k.startswith("set_")}
    aliases = {k[6:]: v for k, v in vars(args).items() if k.startswith("alias_")}
    if "observer" in aliases:
        values.setdefault("w_observer", aliases["observer"])
        values.setdefault("a_observer", aliases["observer"])
    if "granularity" in aliases:
        values.setdefault("w_per_channel", aliases["granularity"] == "channel")
    if aliases.get("fisher"):
        values.setdefault("loss", "fisher")
    if "mp_budget" in aliases:
        values.setdefault("budget", aliases["mp_budget"])
    if "refine_base" in aliases:
        values.setdefault("base", aliases["refine_base"])
    if "overrides" in values:
        values["overrides"] = parse_overrides(values["overrides"])
    if values.get("first_last_bits") == 0:  # 0: no special case for the first and last layer
        values["first_last_bits"] = None
    return values


def _config(args: argparse.Namespace, base: MethodConfig | None = None) -> MethodConfig:
    """The method config of a `quantize` command line (on top of `base`, a stored run's, when given)."""
    values = _given_settings(args)
    method = getattr(args, "method", None) or (base.method if base is not None else "rtn")
    known = method_settings()
    own = {s.name for s in settings(METHODS[method][0])} | {s.name for s in settings(QuantSpec)}
    for name in values:
        if name not in own:
            flag = known[name][0].flag if name in known else name
            raise PTQError(f"{flag} applies to {'/'.join(known[name][1])} only")
    if method == "cat_refine" and "preset" in values:  # --preset is the base method's
        values["base_preset"] = values.pop("preset")
    if base is not None and base.method == method:
        stored = base.to_dict()
        quant_names = {s.name for s in settings(QuantSpec)}
        quant = {**stored.pop("quant"), **{k: values.pop(k) for k in list(values) if k in quant_names}}
        return config_from_dict({**stored, **values, "quant": quant})
    return make_config(method, **values)


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    """The run description of a `quantize` command line (`--config` first, then the options given)."""
    base = RunSpec.from_json(_read(args.config)) if args.config else RunSpec()
    run = {k: getattr(args, k) for k in _RUN_FIELDS if hasattr(args, k)}
    cat_values = {k[4:]: v for k, v in vars(args).items() if k.startswith("cat_")}
    cat = base.cat
    if getattr(args, "cat", False) or cat_values:
        if cat is None and not getattr(args, "cat", False):
            raise PTQError("--cat-k, --cat-alpha, --cat-pca and --cat-fit need --cat")
        cat = CATOptions.from_dict({**(cat.to_dict() if cat else {}), **cat_values})
    return _spec(base, run, _config(args, base.method), cat)


def _spec(base: RunSpec, run: dict[str, Any], method: MethodConfig, cat: CATOptions | None) -> RunSpec:
    fields = {k: getattr(base, k) for k in _RUN_FIELDS} | run
    return RunSpec(method=method, cat=cat, **fields)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError as exc:
        raise PTQError(f"cannot read {path}: {exc.strerror}") from None


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


def _print_result(rec: RunRecord) -> None:
    m, extras = rec.metrics, rec.extras
    mb = lambda bits: bits / 8 / 1e6  # noqa: E731
    print(f"model {rec.model}  method {rec.method}  {rec.bits_label}  device {extras.get('device')}  run {rec.run_id}")
    print(f"{'':12}{'top-1':>8}{'top-5':>8}{'size MB':>10}")
    print(f"{'float':12}{m['fp_top1']:8.2f}{m['fp_top5']:8.2f}{mb(m['fp_size_bits']):10.3f}")
    if "top1_base" in m:
        print(f"{'without CAT':12}{m['top1_base']:8.2f}")
    print(f"{'quantized':12}{m['top1']:8.2f}{m['top5']:8.2f}{mb(m['size_bits']):10.3f}")
    print(
        f"evaluated on the first {m['eval_samples']} test images of {extras['data']['name']}, calibrated on "
        f"{m['calib_samples']} images, in {m['seconds']:.1f} s"
    )
    worst = sorted(rec.layers, key=lambda e: e["sqnr_db"] if e["sqnr_db"] is not None else float("inf"))[:5]
    if worst:
        print("worst layers (all quantized):")
        print(f"  {'layer':32}{'W/A':>7}{'SQNR dB':>9}{'cosine':>8}{'MSE':>11}")
        for e in worst:
            bits = f"{e['wbits']:>3}/{e['abits']:<3}"
            print(f"  {e['name']:32}{bits}{e['sqnr_db']:9.2f}{e['cosine']:8.4f}{e['mse']:11.3e}")
    unsupported = extras.get("report", {}).get("unsupported")
    if unsupported:
        print("left in float (unsupported): " + ", ".join(f"{n} ({t})" for n, t in unsupported))


def _cmd_models() -> int:
    print(f"{'name':24}{'source':13}{'status':12}{'float top-1':>12}  detail")
    for e in list_models():
        acc = f"{e.card['fp_top1']:.2f}" if "fp_top1" in e.card else ""
        print(f"{e.name:24}{e.source:13}{e.status:12}{acc:>12}  {e.detail}")
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    bar = _Bar(args.quiet)
    try:
        record, _ = run_quantization(spec, progress=bar)
    finally:
        bar.close()
    _print_result(record)
    if args.json:
        with open(args.json, "w") as f:
            f.write(_dumps(record.to_dict()))
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    grid = load_grid(args.grid, args.name)
    store = RunStore()
    if args.dry_run:
        done = {(r.cell, cell_identity(r.spec)) for r in store.list(status="done", sweep=grid.name)}
        for cell in grid.cells():
            status = "done" if (cell.key, cell_identity(cell.spec.to_dict())) in done else "to run"
            print(f"{status:7} {cell.key:40} {cell.spec.title()}")
        return 0
    options = RayOptions(
        address=args.address, workers=args.workers, cpus_per_task=args.cpus_per_cell, isolate=args.isolate
    )
    bar = _SweepBar(args.quiet)
    try:
        report = run_sweep(grid, store, options, bar, rerun=args.rerun)
    finally:
        bar.close()
    for key, rec in report.records.items():
        top1 = rec.metrics.get("top1")
        result = f"top-1 {top1:6.2f}" if isinstance(top1, (int, float)) else f"failed: {rec.error}"
        print(f"{rec.run_id}  {key:40} {result}")
    print(
        f"sweep {grid.name}: {len(report.records) - len(report.failed)} done, {len(report.failed)} failed, "
        f"{len(report.skipped)} already done" + (" (cancelled: run it again to resume)" if report.cancelled else "")
    )
    return 130 if report.cancelled else (1 if report.failed else 0)


class _SweepBar:
    """Cells done / running / failed and the time left, on stderr."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.bar = quiet, None

    def __call__(self, state: Any) -> None:
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=state.total - state.skipped, desc="cells", unit="cell", file=sys.stderr)
        self.bar.n = state.finished
        self.bar.set_postfix(running=state.running, failed=state.failed, skipped=state.skipped, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _dumps(d: dict) -> str:
    return json.dumps(to_jsonable(d), indent=2)


def _cmd_runs(args: argparse.Namespace) -> int:
    store = RunStore()
    if args.spec and args.action != "show":
        raise PTQError("--spec goes with runs show")
    if args.action == "list":
        for r in store.list(sweep=args.sweep):
            top1 = r.metrics.get("top1")
            acc = f"{top1:6.2f}" if isinstance(top1, (int, float)) else "     -"
            n = r.metrics.get("eval_samples")
            on = f" on {n} test images" if n else ""
            who = f"  by {r.owner}" if r.owner else ""
            cell = f"  [{r.sweep}: {r.cell}]" if r.sweep else ""
            print(f"{r.run_id}  {r.status:11} {r.model:22} {r.method:10} {r.bits_label:12} top-1 {acc}{on}{who}{cell}")
            if r.status == "interrupted":
                print(f"    {r.error}; re-run: runs show {r.run_id} --spec > run.json && quantize --config run.json")
    elif args.action == "show":
        for rid in args.run_ids:
            record = store.get(rid)
            print(_dumps(stored_spec(record).to_dict() if args.spec else record.to_dict()))
    elif args.action == "delete":
        print(f"deleted {store.delete(args.run_ids)} run(s)")
    else:
        ids = args.run_ids or ([r.run_id for r in store.list(sweep=args.sweep)] if args.sweep else None)
        print(store.export_json(ids) if args.format == "json" else store.export_csv(ids))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    record = RunStore().get(args.run_id)
    formats = FORMATS if args.format == "all" else (args.format,)
    out = args.output or f"{args.run_id}"
    bar = _Bar(args.quiet)
    try:
        rebuilt = rebuild_run(record, bar)
    finally:
        bar.close()
    ok = True
    for fmt in formats:
        path = out if len(formats) == 1 and args.output else out + SUFFIX[fmt]
        report = write_artifact(rebuilt, fmt, path, args.opset)
        print("\n".join(report.lines()))
        ok &= report.passed
    if not ok:
        print("error: an exported file does not agree with the stored run (see above)", file=sys.stderr)
    return 0 if ok else 1


def _cmd_report(args: argparse.Namespace) -> int:
    path = args.output or f"report-{args.run_id}.html"
    bar = _Bar(args.quiet)
    try:
        data = write_report(args.run_id, path, progress=bar, culprit_images=args.culprits)
    finally:
        bar.close()
    same = "equals" if data["reproduced"] else "DIFFERS FROM"
    print(f"wrote {path}: rebuilt top-1 {data['rebuilt_top1']:.2f}% {same} the stored {data['stored_top1']:.2f}%")
    return 0 if data["reproduced"] else 1


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
        if args.command == "export":
            return _cmd_export(args)
        if args.command == "report":
            return _cmd_report(args)
        if args.command == "sweep":
            return _cmd_sweep(args)
        return _cmd_runs(args)
    except PTQError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130

"""Cost at ImageNet size on the CPU (issue 18): torchvision networks at 224x224, per method.

Usage:
    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/scale.py \\
        [--models resnet18,mobilenet_v2,resnet50] [--methods rtn,gptq,comq,qdrop,pdquant] \\
        [--images 32] [--steps 3] [--size 224] [--observers minmax] [--write]

For each architecture the script builds it with ``weights=None`` (seeded), saves its
state_dict to a temporary file and loads it back through
``ptq_core.models.load_model(name, weights=file)`` (no network), writes an ImageFolder
of synthetic images (smooth random colour fields, a few classes) and reads the
calibration tensor through ``ptq_core.data`` with the model's own transform. Every
(model, method) cell runs in a fresh process, so its peak resident memory is its own.

Per method it reports:

- seconds per unit-step (reconstruction: median over units of the optimisation step,
  from the step progress events; layer-wise: median seconds of one layer's solve;
  RTN: the whole run), and against a bare forward + backward of the float unit
  (BatchNorm kept, weights and input trainable) on the same batch: the sum over units
  of step seconds over the sum of bare seconds;
- the KL path's share of PD-Quant's step: the time inside the rest of the network
  (`TailRunner` or the full forward) over the step time, forward only, and the share
  implied by PD-Quant's step minus QDrop's when both ran;
- peak resident memory of the process, and how much the method added to it;
- the largest unit cache (reconstruction: x_q, x_fp, y_fp, ... for all images;
  layer-wise: every layer's Gram matrix, which does not grow with the images), and
  from it an estimate for 1,024 images at this size against the cache budget.

Prints a Markdown table; `--write` also rewrites its section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

MODELS = ("resnet18", "mobilenet_v2", "resnet50")
METHODS = ("rtn", "gptq", "comq", "qdrop", "pdquant")
RECON = ("qdrop", "pdquant")
LAYERWISE = ("gptq", "comq")
CLASSES = 4
TARGET_IMAGES = 1024
TARGET_GIB = 24
COLUMNS = """Random-init torchvision weights (`weights=None`, saved and loaded back through `load_model(name,
weights=file)`), an ImageFolder of synthetic 224x224 images, W4 (A8 for RTN, QDrop and PD-Quant), the
observers of the command, fast preset with the command's steps per unit and batch min(32, images), one
thread per cell, each cell in a fresh process. 'total s' is wall time and includes waiting for a core:
'load' is the machine's 5-minute load average when the cell ended (2 cores; '–' where not recorded).
'x bare fwd+bwd' and the KL shares are ratios measured inside one process, the steadier figures on a
busy machine. 'largest cache MB' is the largest unit's reconstruction cache (x_q, x_fp, y_fp, plus
PD-Quant's correction and tail tensors) or, for GPTQ/COMQ, all layers' Gram matrices; 'spilled MB'
is what went past the budget to memory-mapped disk files."""


def write_weights(name: str, path: Path, seed: int = 0) -> None:
    """The torchvision architecture `name`, randomly initialised (seeded), saved as a state_dict."""
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.get_model(name, weights=None)
    torch.save(model.state_dict(), path)


def write_imagefolder(root: Path, n: int, size: int, classes: int = CLASSES, seed: int = 0) -> None:
    """`n` synthetic RGB PNGs of size x size in `classes` sub-folders (smooth fields plus noise)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / f"class_{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.uniform(0, 255, (8, 8, 3))
        field = np.kron(coarse, np.ones((math.ceil(size / 8), math.ceil(size / 8), 1)))[:size, :size]
        img = np.clip(field + rng.normal(0, 20, field.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img_{i:04d}.png")


def prepare_inputs(name: str, workdir: Path, images: int, size: int) -> tuple[Path, Path]:
    """Weights file and ImageFolder of `name` under `workdir` (written once, reused by every cell)."""
    weights, folder = workdir / f"{name}.pt", workdir / f"images_{size}_{images}"
    if not weights.exists():
        write_weights(name, weights)
    if not folder.exists():
        write_imagefolder(folder, 2 * images, size)  # load_imagefolder keeps half for calibration
    return weights, folder


def load_inputs(
    name: str, weights: Path, folder: Path, images: int, size: int, device: str = "cpu"
) -> tuple[nn.Module, torch.Tensor]:
    """The float model loaded from `weights` and `images` calibration images at `size`, on `device`."""
    from torchvision import transforms

    from ptq_core.data import calibration_tensor, load_data
    from ptq_core.models import load_model

    loaded = load_model(name, weights=weights, device=device)
    tf = transforms.Compose(
        [
            transforms.Resize(size),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    bundle = load_data(f"imagefolder:{folder}", tf)
    return loaded.model, calibration_tensor(bundle, images).to(device)


def make_method_config(method: str, images: int, steps: int, budget_mb: float | None, observers: str | None = None):
    """The method's config at W4 (A8 where the method quantizes activations), `steps` steps per unit.

    `observers` replaces the default weight and activation observers (e.g. "minmax": cheap, for tests).
    """
    from ptq_core import make_config

    if observers is not None:
        return _with_observers(make_method_config(method, images, steps, budget_mb), observers)
    if method in RECON:
        extra = {"cache_budget_mb": budget_mb} if budget_mb is not None else {}
        return make_config(
            method,
            preset="fast",
            wbits=4,
            abits=8,
            iters=steps,
            calib=images,
            recon_batch=min(32, images),
            progress_every=1,
            **extra,
        )
    if method in LAYERWISE:
        return make_config(method, wbits=4, calib=images)
    return make_config(method, wbits=4, abits=8, calib=images)


def _with_observers(config, observers: str):
    import dataclasses

    config.quant = dataclasses.replace(config.quant, w_observer=observers, a_observer=observers)
    return config


def gram_bytes(model: nn.Module) -> int:
    """Bytes of every Conv2d / Linear layer's float32 Gram matrix (the layer-wise solvers' cache)."""
    total = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            d = m.in_channels // m.groups * math.prod(m.kernel_size)
            total += m.groups * d * d * 4
        elif isinstance(m, nn.Linear):
            total += m.in_features**2 * 4
    return total


@torch.no_grad()
def unit_inputs(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each named module's input when the float model runs on `x` (one forward pass)."""
    seen: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(n).register_forward_pre_hook(
            lambda _m, args, n=n: seen.setdefault(n, args[0].detach().clone())
        )
        for n in names
    ]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def bare_seconds(module: nn.Module, x: torch.Tensor, reps: int = 2) -> float:
    """Seconds of one forward + backward of `module` (weights and input trainable), best of `reps`."""
    import copy

    blk = copy.deepcopy(module).train(False).requires_grad_(True)
    best = float("inf")
    for _ in range(reps + 1):  # the first call warms up
        xi = x.clone().requires_grad_(True)
        t0 = time.perf_counter()
        out = blk(xi)
        out.float().square().mean().backward()
        best = min(best, time.perf_counter() - t0) if _ else best
        blk.zero_grad(set_to_none=True)
    return best


class _KLTimer:
    """Wall time spent inside the KL path (the network's rest after a unit), while installed."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._orig = None

    def __enter__(self) -> _KLTimer:
        from ptq_core.recon import step as step_mod
        from ptq_core.recon.tail import TailRunner

        self._orig = (TailRunner.__call__, step_mod.logits_with_unit_output)
        timer = self

        def timed(fn):
            def run(*args, **kwargs):
                t0 = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    timer.seconds += time.perf_counter() - t0

            return run

        TailRunner.__call__ = timed(self._orig[0])
        step_mod.logits_with_unit_output = timed(self._orig[1])
        return self

    def __exit__(self, *exc: object) -> None:
        from ptq_core.recon import step as step_mod
        from ptq_core.recon.tail import TailRunner

        TailRunner.__call__, step_mod.logits_with_unit_output = self._orig


def _rss_gib() -> float:
    """Current resident memory of this process, GiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def measure(
    model_name: str,
    method: str,
    images: int,
    steps: int,
    size: int = 224,
    workdir: Path | None = None,
    budget_mb: float | None = None,
    observers: str | None = None,
    device: str = "cpu",
) -> dict:
    """One cell: run `method` on `model_name` at `size` and return its cost figures (see the module docstring).

    Args:
        model_name: A torchvision name of `ptq_core.models.TORCHVISION_MODELS`.
        method: rtn, gptq, comq, qdrop or pdquant.
        images: Calibration images.
        steps: Optimisation steps per unit (reconstruction; at least 2, so a step can be timed alone).
        size: Image side.
        workdir: Where weights and images go (default: a temporary directory).
        budget_mb: The reconstruction cache budget (None: the config's default).
        observers: Replace the method's weight/activation observers (None: its defaults).
        device: Where the model, the images and the method run ("cpu", "cuda").
    """
    from ptq_core import quantize

    if steps < 2:
        raise ValueError("steps must be at least 2 (the first step of a unit includes its setup)")
    with tempfile.TemporaryDirectory(prefix="ptq-scale-") as tmp:
        weights, folder = prepare_inputs(model_name, Path(workdir or tmp), images, size)
        model, calib = load_inputs(model_name, weights, folder, images, size, device)
        config = make_method_config(method, images, steps, budget_mb, observers)
        stamps: dict[tuple[int, int], float] = {}

        def progress(ev) -> None:
            if ev.stage == "reconstruct":
                stamps[(ev.unit_index, ev.step)] = time.perf_counter()

        base_rss = _rss_gib()
        t0 = time.perf_counter()
        with _KLTimer() as kl:
            result = quantize(model, calib, config, progress)
        total = time.perf_counter() - t0
        row = {
            "model": model_name,
            "method": method,
            "images": images,
            "steps": steps,
            "size": size,
            "seconds": total,
            "peak_rss_gib": _peak_rss_gib(),
            "base_rss_gib": base_rss,
            "threads": torch.get_num_threads(),
            "device": device,
        }
        if method in RECON:
            row.update(_recon_figures(model, calib, result, stamps, steps, config.recon_batch, kl.seconds))
        elif method in LAYERWISE:
            solves = [r["seconds"] for r in result.extras["layer_solutions"]]
            row.update(
                units=len(solves),
                step_s=statistics.median(solves),
                cache_mb=gram_bytes(model) / 2**20,
                cache_per_image_mb=0.0,
            )
        else:
            row.update(units=0, step_s=total, cache_mb=0.0, cache_per_image_mb=0.0)
    return row


def _recon_figures(
    model: nn.Module, calib: torch.Tensor, result, stamps: dict, steps: int, batch: int, kl_seconds: float
) -> dict:
    rec = result.extras["recon"]
    units = rec["units"]
    per_unit = []
    for i in range(len(units)):
        if (i, 1) in stamps and (i, steps) in stamps:
            per_unit.append((stamps[(i, steps)] - stamps[(i, 1)]) / (steps - 1))
    names = [u["name"] for u in units]
    x = calib[:batch]
    inputs = unit_inputs(model, names, x)
    bare = [bare_seconds(model.get_submodule(n), inputs[n]) for n in names]
    step_total = sum(per_unit)
    return {
        "units": len(units),
        "step_s": statistics.median(per_unit) if per_unit else float("nan"),
        "step_sum_s": step_total,
        "bare_sum_s": sum(bare),
        "x_bare": step_total / sum(bare) if bare else float("nan"),
        "kl_share": kl_seconds / (step_total * steps) if kl_seconds and step_total else 0.0,
        "cache_mb": rec["peak_cache_mb"],
        "cache_per_image_mb": rec["peak_cache_mb"] / len(calib),
        "budget_mb": rec["cache_budget_mb"],
        "spilled_mb": rec["spilled_mb"],
        "kl_paths": sorted({u["kl_path"].split(":")[0] for u in units if u["kl_path"]}),
    }


def estimate(rows: list[dict], budget_mb: float) -> list[str]:
    """Per model: the largest unit cache for 1,024 images at this size, against the budget and 24 GiB."""
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        recon = [r for r in rows if r["model"] == model and r.get("cache_per_image_mb")]
        if not recon:
            continue
        worst = max(recon, key=lambda r: r["cache_per_image_mb"])
        gib = worst["cache_per_image_mb"] * TARGET_IMAGES / 1024
        images_gib = TARGET_IMAGES * 3 * worst["size"] ** 2 * 4 / 2**30
        budget_gib = budget_mb / 1024
        over = gib - budget_gib
        where = "fits under" if budget_mb == 0 or over <= 0 else f"spills {over:.1f} GiB to disk over"
        lines.append(
            f"- {model}: {TARGET_IMAGES} images at {worst['size']}: largest unit cache ({worst['method']}) "
            f"{worst['cache_per_image_mb']:.2f} MB/image x {TARGET_IMAGES} = {gib:.1f} GiB, {where} the "
            f"{budget_gib:.0f} GiB budget; with the calibration images ({images_gib:.1f} GiB) "
            f"{min(gib, budget_gib or gib) + images_gib:.1f} GiB in memory "
            f"({'within' if min(gib, budget_gib or gib) + images_gib <= TARGET_GIB else 'over'} "
            f"{TARGET_GIB} GiB)"
        )
        for r in rows:
            if r["model"] == model and r["images"] >= TARGET_IMAGES:
                lines.append(
                    f"- {model}: measured with {r['images']} images ({r['method']}): largest cache "
                    f"{r['cache_mb'] / 1024:.1f} GiB, {r['spilled_mb'] / 1024:.1f} GiB of it spilled, process peak "
                    f"{r['peak_rss_gib']:.1f} GiB ({'within' if r['peak_rss_gib'] <= TARGET_GIB else 'over'} "
                    f"{TARGET_GIB} GiB)"
                )
    return lines


def _fmt(v, spec: str = ".3g") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return format(v, spec)


def table(rows: list[dict]) -> str:
    """The Markdown table of the cells."""
    head = (
        "| model | method | images | units | s per unit-step | x bare fwd+bwd | KL share (fwd / PD−QDrop) | total s "
        "| peak RSS GiB (+method) | largest cache MB | MB/image/unit | budget MB / spilled MB | load |"
    )
    out = [head, "|---" * (head.count("|") - 1) + "|"]
    qdrop = {(r["model"], r["images"]): r for r in rows if r["method"] == "qdrop"}
    models = list(dict.fromkeys(r["model"] for r in rows))
    order = {m: i for i, m in enumerate(METHODS)}
    for r in sorted(rows, key=lambda r: (models.index(r["model"]), r["images"], order.get(r["method"], len(order)))):
        kl = "–"
        if r["method"] == "pdquant":
            diff = "–"
            q = qdrop.get((r["model"], r["images"]))
            if q and q.get("step_sum_s") and r.get("step_sum_s"):
                diff = f"{1 - q['step_sum_s'] / r['step_sum_s']:.0%}"
            kl = f"{r['kl_share']:.0%} / {diff}"
        kind = " (solve)" if r["method"] in LAYERWISE else " (run)" if r["method"] == "rtn" else ""
        step = _fmt(r["step_s"]) + kind
        spill = f"{r['budget_mb']:.0f} / {r['spilled_mb']:.0f}" if "budget_mb" in r else "–"
        out.append(
            f"| {r['model']} | {r['method']} | {r['images']} | {r['units']} | {step} | {_fmt(r.get('x_bare'), '.1f')} "
            f"| {kl} | {r['seconds']:.0f} | {r['peak_rss_gib']:.2f} (+{r['peak_rss_gib'] - r['base_rss_gib']:.2f}) "
            f"| {r['cache_mb']:.0f} | {_fmt(r['cache_per_image_mb'], '.2f')} | {spill} | {_fmt(r.get('load'), '.1f')} |"
        )
    return "\n".join(out)


def _run_cell(args: argparse.Namespace, model: str, method: str, workdir: Path) -> dict:
    """One cell in a fresh process (its own peak memory)."""
    cmd = [
        sys.executable,
        __file__,
        "--cell",
        f"{model},{method}",
        "--images",
        str(args.images),
        "--steps",
        str(args.steps),
        "--size",
        str(args.size),
        "--workdir",
        str(workdir),
        "--device",
        args.device,
    ]
    if args.budget_mb is not None:
        cmd += ["--budget-mb", str(args.budget_mb)]
    if args.observers is not None:
        cmd += ["--observers", args.observers]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--images", type=int, default=32, help="calibration images")
    parser.add_argument("--steps", type=int, default=3, help="optimisation steps per unit (at least 2)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--budget-mb", type=float, default=None, help="cache budget (default: the config's)")
    parser.add_argument(
        "--observers",
        default=None,
        help="weight and activation observers for every method "
        "(default: each method's own; minmax skips the MSE range search)",
    )
    parser.add_argument("--write", action="store_true", help="rewrite the table's section of benchmarks/RESULTS.md")
    parser.add_argument("--rows", help="also append each finished cell to this JSON-lines file")
    parser.add_argument("--from-rows", help="print the table of the cells in this JSON-lines file (runs nothing)")
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        model, method = args.cell.split(",")
        row = measure(
            model,
            method,
            args.images,
            args.steps,
            args.size,
            Path(args.workdir),
            args.budget_mb,
            args.observers,
            args.device,
        )
        print(json.dumps(row))
        return
    from ptq_core.methods.recon_base import ReconMethodConfig

    budget = args.budget_mb if args.budget_mb is not None else ReconMethodConfig().cache_budget_mb
    rows = []
    if args.from_rows:
        rows = [json.loads(line) for line in Path(args.from_rows).read_text().splitlines() if line.strip()]
    else:
        with tempfile.TemporaryDirectory(prefix="ptq-scale-") as tmp:
            for model in args.models.split(","):
                prepare_inputs(model, Path(tmp), args.images, args.size)
                for method in args.methods.split(","):
                    t0 = time.perf_counter()
                    rows.append({**_run_cell(args, model, method, Path(tmp)), "load": os.getloadavg()[1]})
                    print(f"{model} {method}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
                    if args.rows:
                        with open(args.rows, "a") as f:
                            f.write(json.dumps(rows[-1]) + "\n")
    body = table(rows) + "\n\n" + "\n".join(estimate(rows, budget)) + "\n\n" + COLUMNS
    print(body)
    if args.write:
        from benchmarks.results import write_results

        command = "nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/scale.py " + " ".join(sys.argv[1:])
        write_results("Cost at ImageNet size on CPU (issue 18)", body, command.replace(" --write", ""))


if __name__ == "__main__":
    main()

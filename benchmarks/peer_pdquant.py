"""Our PD-Quant side by side with the authors' official code (issue 18).

Usage:
    python benchmarks/peer_pdquant.py [--equal] [--fast-vs-full] [--peer-dir DIR]
        [--models fmnist-resnet20,fmnist-mobilenetv2] [--bits W4A4,W2A4] [--calib 256]
        [--steps 40] [--full-steps 200] [--eval-limit 2000] [--seed 0] [--peer-log FILE]
        [--impl both|theirs|ours]

    --equal         both implementations at the same steps per unit (--steps), our
                    ``paper`` preset (the authors' learning rates, DC 500 steps at lr 1e-3).
    --fast-vs-full  our ``fast`` preset against theirs at --full-steps per unit.
    Without either flag, both modes run. --impl runs one side only (e.g. the two sides as
    two processes when the machine is too busy to wait for one after the other).

The authors' code (github.com/hustvl/PD-Quant) is not part of this project. Get it
once, outside the repository, and point --peer-dir (or PTQ_PEER_PDQUANT) at it:

    git clone https://github.com/hustvl/PD-Quant /work/peer/PD-Quant

Their package ``quant`` (and the ``models`` package it imports for its block types) is
imported at run time from that folder; none of it is copied here. Their ImageNet driver
script is not used: `run_theirs` makes the same calls it makes, in the same order
(float ``QuantModel`` without BN folding for the targets, quantized ``QuantModel`` with
folding, first/last layer weights and the last layer's input at 8 bits, network output
unquantized, MSE weight ranges, then layer or block reconstruction unit by unit).

Both implementations get the same zoo model (`ptq_core.models.load_model`), the same
calibration images (`calibration_tensor` of the embedded Fashion-MNIST sample, seeded),
the same bits, steps per unit, seed and per-architecture hyper-parameters (AdaRound
weight, KL temperature T, DC weight lambda_c: the authors' run script, as in
`ptq_core.recon.arch`), and are evaluated by the same function on the same test images
(the first --eval-limit of the sample's 10 000 test images). They run one after the other
in this process, theirs first; wall and CPU seconds (`time.process_time`, this process) cover the
quantization only, not the evaluation.

Shims (`peer_shims`), needed to run their code on this machine and undone afterwards:

- ``Tensor.cuda()`` / ``Module.cuda()`` move to the chosen device (CPU here), and
  ``Tensor.to("cuda")`` (their reconstruction loops move each batch to the string
  ``'cuda'``) goes to that device too.
- ``ReduceLROnPlateau(..., verbose=...)``: recent PyTorch removed ``verbose``; it is dropped.
- their per-batch ``tqdm`` progress bar over the DC batches is replaced by ``range``.
- their ``specials`` table maps *their* block classes to their block quantizers; our zoo
  blocks are added to it by adapters (`resnet_block_view`, `mobilenet_block_view`) that
  present a zoo block with the attribute layout their block quantizers read (a flat
  ``conv`` list for the inverted residual, ``downsample=None`` for an identity shortcut).
- their distribution-correction entry points (``get_dc_fp_init`` as bound in their layer
  and block reconstruction modules) are wrapped by a timer, for the "DC s" column.
  Their console output goes to --peer-log.

Differences that remain (not shims; they are how the two implementations quantize):

- Activation quantizer placement. Theirs quantizes each layer's *output* (after its
  activation) and, in a residual block, the block output after the add; the last conv of a
  residual branch and the shortcut conv are not quantized on their own. Ours quantizes each
  layer's *input*, so a residual block's identity shortcut carries the float input and a
  tensor read by two layers (block output feeding conv1 and the shortcut conv) gets two
  quantizers. The first layer's input (the image) stays float in both (ours via an
  override, ``abits=32`` on the first layer; its weights stay 8-bit).
- Units: theirs reconstructs the stem conv, every block and the head as separate units
  (the zoo MobileNet's final 1x1 conv too); ours takes its units from the dataflow graph.
  The "units" column gives each count.
- DC batching: theirs corrects one batch of 32 after another; ours corrects all groups of
  32 at once, each group with its own Adam step size and plateau schedule (same per-sample
  path, see `ptq_core.recon.correction`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

DEFAULT_PEER = Path("/work/peer/PD-Quant")
PEER_ENV = "PTQ_PEER_PDQUANT"
PEER_URL = "https://github.com/hustvl/PD-Quant"
MODELS = ("fmnist-resnet20", "fmnist-mobilenetv2")
FIRST_LAYER = {"fmnist-resnet20": "conv1", "fmnist-mobilenetv2": "features.0.0"}

__all__ = [
    "Row",
    "PeerMissingError",
    "find_peer",
    "format_table",
    "goals",
    "save_row",
    "load_rows",
    "peer_shims",
    "resnet_block_view",
    "mobilenet_block_view",
    "parse_bits",
    "import_peer",
    "zoo_specials",
    "run_ours",
    "run_theirs",
    "main",
]


class PeerMissingError(RuntimeError):
    """The authors' code is not where the script looks for it."""


@dataclass
class Row:
    """One implementation's run of one setting."""

    model: str
    bits: str
    setting: str
    impl: str
    top1: float
    wall_s: float
    cpu_s: float
    dc_s: float
    units: int
    calib: int = 0
    load: float = float("nan")


def find_peer(path: str | os.PathLike | None = None) -> Path:
    """The folder with the authors' ``quant`` package: `path`, else $PTQ_PEER_PDQUANT, else the default.

    Raises:
        PeerMissingError: one line naming the folder and how to get the code.
    """
    folder = Path(path or os.environ.get(PEER_ENV) or DEFAULT_PEER).expanduser()
    if not (folder / "quant" / "__init__.py").is_file() or not (folder / "models").is_dir():
        raise PeerMissingError(
            f"the authors' PD-Quant code is not in {folder} (no quant/ package there): get it with "
            f"`git clone {PEER_URL} {folder}`, or pass --peer-dir / set {PEER_ENV}"
        )
    return folder


def parse_bits(text: str) -> list[tuple[int, int]]:
    """``"W4A4,W2A4"`` -> [(4, 4), (2, 4)] (ValueError on anything else)."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        head, sep, a = item.upper().removeprefix("W").partition("A")
        if not sep or not head.isdigit() or not a.isdigit():
            raise ValueError(f"bits must look like W4A4, got {item!r}")
        out.append((int(head), int(a)))
    if not out:
        raise ValueError("no bits given")
    return out


def format_table(rows: list[Row]) -> str:
    """A Markdown table of the rows, in their order."""
    head = (
        "| model | bits | images | setting | implementation | top-1 % | wall s | CPU s | DC s | DC share | units "
        "| load |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        share = f"{100 * r.dc_s / r.wall_s:.0f} %" if r.wall_s > 0 else "-"
        load = "-" if math.isnan(r.load) else f"{r.load:.1f}"
        lines.append(
            f"| {r.model} | {r.bits} | {r.calib or '?'} | {r.setting} | {r.impl} | {r.top1:.2f} | {r.wall_s:.1f} | "
            f"{r.cpu_s:.1f} | {r.dc_s:.1f} | {share} | {r.units} | {load} |"
        )
    return "\n".join(lines)


def save_row(path: str | os.PathLike, row: Row) -> None:
    """Append `row` to a JSON-lines file (so runs made in separate processes make one table)."""
    with open(path, "a") as f:
        f.write(json.dumps(asdict(row)) + "\n")


def load_rows(path: str | os.PathLike) -> list[Row]:
    """The rows of a JSON-lines file written by `save_row`."""
    return [Row(**json.loads(line)) for line in Path(path).read_text().splitlines() if line.strip()]


def goals(rows: list[Row]) -> str:
    """The issue's goals, read from each pair of runs (theirs, ours) of one model, bits, setting and image count.

    Equal settings: ours at most theirs' CPU seconds and within 0.3 top-1 points below theirs.
    Our fast preset against their full steps: within 0.5 points below theirs in at most a tenth
    of their CPU seconds. CPU seconds, because the two sides may have run as separate processes.
    """
    lines = [
        "| model | bits | images | setting | top-1 ours - theirs | CPU ours / theirs | accuracy goal | time goal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    pairs: dict[tuple, dict[str, Row]] = {}
    for r in rows:
        pairs.setdefault((r.model, r.bits, r.calib, r.setting), {})[r.impl.split()[0]] = r
    for (model, bits, calib, setting), both in pairs.items():
        if set(both) != {"theirs", "ours"}:
            continue
        ours, theirs = both["ours"], both["theirs"]
        equal = setting.startswith("equal")
        gap, ratio = ours.top1 - theirs.top1, ours.cpu_s / theirs.cpu_s
        acc_ok = gap >= (-0.3 if equal else -0.5)
        time_ok = ratio <= (1.0 if equal else 0.1)
        lines.append(
            f"| {model} | {bits} | {calib or '?'} | {setting} | {gap:+.2f} | {ratio:.2f} | "
            f"{'met' if acc_ok else 'not met'} ({'>= -0.3' if equal else '>= -0.5'}) | "
            f"{'met' if time_ok else 'not met'} ({'<= 1' if equal else '<= 0.1'}) |"
        )
    return "\n".join(lines)


# ---- adapters: our zoo blocks in the layout their block quantizers read ----------------------------


def resnet_block_view(block: nn.Module) -> SimpleNamespace:
    """A zoo ResNet BasicBlock as conv1/bn1/relu1/conv2/bn2/downsample/relu2, shortcut None when identity."""
    shortcut = None if isinstance(block.downsample, nn.Identity) else block.downsample
    return SimpleNamespace(
        conv1=block.conv1,
        bn1=block.bn1,
        relu1=block.relu1,
        conv2=block.conv2,
        bn2=block.bn2,
        downsample=shortcut,
        relu2=block.relu2,
    )


def mobilenet_block_view(block: nn.Module) -> SimpleNamespace:
    """A zoo InvertedResidual as a flat ``conv`` list (conv, BN, ReLU6, ..., conv, BN) plus its flags.

    The zoo block nests one (conv, BN[, ReLU6]) sequence per stage; the flat list puts the
    convs at 0, 3 (and 6) and their BNs right after, as in the usual MobileNetV2 block.
    """
    flat = [m for stage in block.conv for m in stage]
    first = block.conv[0][0]
    expand = 1 if len(block.conv) == 2 else first.out_channels // first.in_channels
    return SimpleNamespace(use_res_connect=block.use_res_connect, expand_ratio=expand, conv=flat)


def _zoo_specials(quant_block: Any) -> dict[type, Callable[..., nn.Module]]:
    """Our zoo block classes -> builders of their block quantizers, through the views."""
    from ptq_core.zoo.mobilenetv2 import InvertedResidual
    from ptq_core.zoo.resnet import BasicBlock

    def basic(block, wq, aq):
        return quant_block.QuantBasicBlock(resnet_block_view(block), wq, aq)

    def inverted(block, wq, aq):
        return quant_block.QuantInvertedResidual(mobilenet_block_view(block), wq, aq)

    return {BasicBlock: basic, InvertedResidual: inverted}


# ---- shims -----------------------------------------------------------------------------------------


def _is_cuda(dev: Any) -> bool:
    return (isinstance(dev, str) and dev.startswith("cuda")) or (isinstance(dev, torch.device) and dev.type == "cuda")


class _Plateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """ReduceLROnPlateau that accepts (and ignores) the ``verbose`` keyword older PyTorch had."""

    def __init__(self, *args: Any, verbose: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)


@contextlib.contextmanager
def peer_shims(device: torch.device | str = "cpu") -> Iterator[None]:
    """Within the block: ``.cuda()`` and ``.to("cuda")`` go to `device` (when it is not CUDA) and
    ``ReduceLROnPlateau`` takes ``verbose``. Everything is restored on exit."""
    device = torch.device(device)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau
    saved = (torch.Tensor.cuda, torch.Tensor.to, nn.Module.cuda)
    torch.optim.lr_scheduler.ReduceLROnPlateau = _Plateau
    if device.type != "cuda":
        tensor_to = saved[1]

        def to(self, *args, **kwargs):
            args = tuple(device if _is_cuda(a) else a for a in args)
            if _is_cuda(kwargs.get("device")):
                kwargs["device"] = device
            return tensor_to(self, *args, **kwargs)

        torch.Tensor.to = to
        torch.Tensor.cuda = lambda self, *a, **k: tensor_to(self, device)
        nn.Module.cuda = lambda self, *a, **k: self.to(device)
    try:
        yield
    finally:
        torch.optim.lr_scheduler.ReduceLROnPlateau = plateau
        torch.Tensor.cuda, torch.Tensor.to, nn.Module.cuda = saved


@contextlib.contextmanager
def _patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def import_peer(folder: Path) -> SimpleNamespace:
    """Their ``quant`` package and its modules, imported from `folder`."""
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    import importlib

    names = ("quant", "quant.quant_block", "quant.block_recon", "quant.layer_recon", "quant.data_utils")
    mods = [importlib.import_module(n) for n in names]
    origin = Path(mods[0].__file__).resolve().parent.parent
    if origin != folder.resolve():
        raise PeerMissingError(f"a different `quant` package was imported ({origin}), not the one in {folder}")
    return SimpleNamespace(quant=mods[0], block=mods[1], block_recon=mods[2], layer_recon=mods[3], data=mods[4])


@contextlib.contextmanager
def _patched_dict(d: dict, key: Any, value: Any) -> Iterator[None]:
    had, old = key in d, d.get(key)
    d[key] = value
    try:
        yield
    finally:
        if had:
            d[key] = old
        else:
            d.pop(key, None)


@contextlib.contextmanager
def zoo_specials(peer: SimpleNamespace) -> Iterator[None]:
    """Within the block, their ``specials`` table also maps our zoo blocks to their block quantizers."""
    with contextlib.ExitStack() as stack:
        for cls, build in _zoo_specials(peer.block).items():
            stack.enter_context(_patched_dict(peer.block.specials, cls, build))
        yield


# ---- the two runs ----------------------------------------------------------------------------------


def _seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # numpy is optional here
        pass


def _measure(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def run_theirs(
    model: nn.Module,
    calib: torch.Tensor,
    wbits: int,
    abits: int,
    steps: int,
    seed: int,
    arch: Any,
    folder: Path,
    log: io.TextIOBase,
) -> tuple[nn.Module, float, float, float, int]:
    """Their PD-Quant on a copy of `model`.

    Returns (quantized model, wall s, CPU s, DC s, units reconstructed).
    """
    peer = import_peer(folder)
    q = peer.quant
    dc_time = [0.0]
    units = [0]

    def timed(fn):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                dc_time[0] += time.perf_counter() - t

        return wrapper

    wq = {"n_bits": wbits, "channel_wise": True, "scale_method": "mse"}
    aq = {"n_bits": abits, "channel_wise": False, "scale_method": "mse", "leaf_param": True, "prob": 0.5}
    kwargs = dict(
        cali_data=calib,
        iters=steps,
        weight=arch.round_weight,
        b_range=(20, 2),
        warmup=0.2,
        opt_mode="mse",
        lr=4e-5,
        input_prob=0.5,
        keep_gpu=True,
        lamb_r=0.1,
        T=arch.temperature,
        bn_lr=1e-3,
        lamb_c=arch.dc_lambda,
    )

    def build_and_reconstruct():
        fp = q.QuantModel(copy.deepcopy(model), wq, aq, is_fusing=False).eval()
        fp.set_quant_state(False, False)
        qnn = q.QuantModel(copy.deepcopy(model), wq, aq).eval()
        qnn.set_first_last_layer_to_8bit()
        qnn.disable_network_output_quantization()
        q.set_weight_quantize_params(qnn)

        def walk(mod: nn.Module, fp_mod: nn.Module) -> None:
            for (_, m), (_, f) in zip(mod.named_children(), fp_mod.named_children(), strict=True):
                if isinstance(m, q.QuantModule):
                    q.layer_reconstruction(qnn, fp, m, f, **kwargs)
                    units[0] += 1
                elif isinstance(m, q.BaseQuantBlock):
                    q.block_reconstruction(qnn, fp, m, f, **kwargs)
                    units[0] += 1
                else:
                    walk(m, f)

        walk(qnn, fp)
        qnn.set_quant_state(True, True)
        return qnn

    with contextlib.ExitStack() as stack:
        stack.enter_context(peer_shims(calib.device))
        stack.enter_context(zoo_specials(peer))
        stack.enter_context(_patched(peer.block_recon, "get_dc_fp_init", timed(peer.block_recon.get_dc_fp_init)))
        stack.enter_context(_patched(peer.layer_recon, "get_dc_fp_init", timed(peer.layer_recon.get_dc_fp_init)))
        stack.enter_context(_patched(peer.data, "trange", range))
        stack.enter_context(contextlib.redirect_stdout(log))
        stack.enter_context(contextlib.redirect_stderr(log))
        _seed(seed)
        qnn, wall, cpu = _measure(build_and_reconstruct)
    return qnn, wall, cpu, dc_time[0], units[0]


def run_ours(model: nn.Module, calib: torch.Tensor, config: Any) -> tuple[nn.Module, float, float, float, int]:
    """Our PD-Quant (`ptq_core.methods.quantize`); returns (model, wall s, CPU s, DC s, units)."""
    from ptq_core.methods import quantize

    _seed(config.seed)
    res, wall, cpu = _measure(lambda: quantize(model, calib, config))
    return res.model, wall, cpu, res.timings.get("correct", 0.0), len(res.extras["recon"]["units"])


def _our_config(name: str, preset: str, wbits: int, abits: int, calib: int, seed: int, steps: int | None):
    from ptq_core.spec import make_config

    overrides = {FIRST_LAYER[name]: {"abits": 32}}  # the image stays float, as in theirs
    return make_config(
        "pdquant", preset=preset, wbits=wbits, abits=abits, calib=calib, seed=seed, iters=steps, overrides=overrides
    )


# ---- driver ----------------------------------------------------------------------------------------


def _load() -> float:
    """The machine's load average over the last 5 minutes (how contended the run was)."""
    return os.getloadavg()[1]


def _keep(args: argparse.Namespace, row: Row) -> None:
    if args.rows:
        save_row(args.rows, row)


SECTION = "Side by side with the authors' PD-Quant (issue 18)"
ABOUT = """Their code: github.com/hustvl/PD-Quant at e12038e, outside the repository, imported at run time
with the shims this script's docstring lists (`.cuda()` / `.to("cuda")` to the chosen device,
`ReduceLROnPlateau(verbose=)` accepted, their tqdm bar off, our zoo blocks given to their block
quantizers through two adapters, their distribution correction (DC) timed). Same zoo model,
calibration images, bits, steps per unit, seed and per-architecture hyper-parameters on both sides;
top-1 on the first 2 000 test images of the embedded sample; seconds cover the quantization only.
Both placements of activation quantizers differ by design (theirs: layer outputs and block outputs
after the add; ours: layer inputs), see the script's docstring. One seed per row.

Each pair of rows: `PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/peer_pdquant.py --equal --steps 40
(or --fast-vs-full) --models M --bits B --calib N --eval-limit 2000 --rows ROWS`, theirs then ours in
one process (the first pair at 32 images ran as two processes, `--impl`, at the same time).
Runs were made one command at a time, often beside other jobs on the 2 cores ('load' is the
machine's 5-minute load average at the end of the run): CPU seconds are the figure to compare, wall
seconds include waiting for a core."""


def report(rows: list[Row], write: bool) -> int:
    """Print (and with `write`, store in RESULTS.md) the table of `rows` and the goals they meet."""
    body = f"{ABOUT}\n\n{format_table(rows)}\n\nGoals (issue 18), per pair of runs:\n\n{goals(rows)}"
    print(body)
    if write:
        from benchmarks.results import write_results

        command = "python benchmarks/peer_pdquant.py --from-rows benchmarks/rows/peer_pdquant.jsonl --write"
        write_results(SECTION, body, command)
    return 0


def _settings(args: argparse.Namespace) -> list[tuple[str, str, int | None, int]]:
    """(setting label, our preset, our steps (None: the preset's), their steps) for each mode asked."""
    both = not args.equal and not args.fast_vs_full
    out = []
    if args.equal or both:
        out.append((f"equal, {args.steps} steps/unit", "paper", args.steps, args.steps))
    if args.fast_vs_full or both:
        out.append((f"ours fast vs theirs {args.full_steps} steps/unit", "fast", None, args.full_steps))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peer-dir", default=None, help=f"the authors' code (default ${PEER_ENV} or {DEFAULT_PEER})")
    p.add_argument("--equal", action="store_true", help="both at --steps steps per unit")
    p.add_argument("--fast-vs-full", action="store_true", help="our fast preset vs theirs at --full-steps")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--bits", default="W4A4,W2A4")
    p.add_argument("--calib", type=int, default=256, help="calibration images (a multiple of 32)")
    p.add_argument("--steps", type=int, default=40, help="steps per unit in --equal")
    p.add_argument("--full-steps", type=int, default=200, help="their steps per unit in --fast-vs-full")
    p.add_argument("--eval-limit", type=int, default=2000, help="the first N of the 10 000 test images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda (their code runs there without the CPU shims)")
    p.add_argument("--peer-log", default=os.devnull, help="where their console output goes")
    p.add_argument(
        "--impl",
        choices=("both", "theirs", "ours"),
        default="both",
        help="run only one implementation (ours needs no --peer-dir)",
    )
    p.add_argument("--rows", help="also append each finished run to this JSON-lines file")
    p.add_argument("--from-rows", help="print the table and goals of the runs in this JSON-lines file (runs nothing)")
    p.add_argument("--write", action="store_true", help="with --from-rows: rewrite its RESULTS.md section")
    args = p.parse_args(argv)
    if args.from_rows:
        return report(load_rows(args.from_rows), args.write)
    try:
        folder = find_peer(args.peer_dir) if args.impl != "ours" else None
        bits = parse_bits(args.bits)
    except (PeerMissingError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown or args.calib < 32 or args.calib % 32:
        print(
            f"error: models must be among {', '.join(MODELS)} and --calib a positive multiple of 32 "
            f"(their loops drop a partial batch)",
            file=sys.stderr,
        )
        return 2

    from ptq_core.data import calibration_tensor, load_data, make_loader
    from ptq_core.metrics import evaluate
    from ptq_core.models import load_model
    from ptq_core.recon import arch_params

    rows: list[Row] = []
    with open(args.peer_log, "a", buffering=1) as log:
        for name in models:
            loaded = load_model(name, device=args.device)
            bundle = load_data("fmnist-sample", loaded.transform)
            calib = calibration_tensor(bundle, args.calib, args.seed).to(args.device)
            loader = make_loader(bundle.test, limit=args.eval_limit)
            fp_top1 = evaluate(loaded.model, loader, args.device)["top1"]
            print(
                f"# {name}: float top-1 {fp_top1:.2f} % on {min(args.eval_limit, len(bundle.test))} test images",
                flush=True,
            )
            arch = arch_params(loaded.model)
            for wbits, abits in bits:
                for label, preset, our_steps, their_steps in _settings(args):
                    tag = f"W{wbits}A{abits}"
                    if args.impl != "ours":
                        m, wall, cpu, dc, n = run_theirs(
                            loaded.model, calib, wbits, abits, their_steps, args.seed, arch, folder, log
                        )
                        with torch.no_grad():
                            top1 = evaluate(m, loader, args.device)["top1"]
                        impl = f"theirs ({their_steps} steps, DC 500)"
                        rows.append(Row(name, tag, label, impl, top1, wall, cpu, dc, n, args.calib, _load()))
                        _keep(args, rows[-1])
                        print(format_table(rows[-1:]).splitlines()[-1], flush=True)
                    if args.impl != "theirs":
                        cfg = _our_config(name, preset, wbits, abits, args.calib, args.seed, our_steps)
                        m, wall, cpu, dc, n = run_ours(loaded.model, calib, cfg)
                        rows.append(
                            Row(
                                name,
                                tag,
                                label,
                                f"ours ({preset}, {cfg.iters} steps, DC {cfg.dc_steps})",
                                evaluate(m, loader, args.device)["top1"],
                                wall,
                                cpu,
                                dc,
                                n,
                                args.calib,
                                _load(),
                            )
                        )
                        _keep(args, rows[-1])
                        print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(format_table(rows))
    print(
        f"\n{args.calib} calibration images, seed {args.seed}, top-1 on the first {args.eval_limit} test images "
        f"of the embedded Fashion-MNIST sample; torch threads {torch.get_num_threads()}; wall and CPU seconds "
        "of the quantization only, on a shared machine (other jobs running), so CPU s is the steadier figure."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

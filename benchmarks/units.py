"""Graph units against the layer-wise fallback (issue 12).

Usage:
    OMP_NUM_THREADS=1 python benchmarks/units.py [--quick] [--iters N] [--calib N]

On the five networks of ``tests/support/graph_nets.py`` (block classes the project does not
know; each trained for a few epochs on the embedded Fashion-MNIST calibration split,
weights cached under ``benchmarks/cells/cache/``) and on the zoo's fmnist-resnet20, runs
BRECQ, QDrop and PD-Quant with the fast preset, but fewer steps per unit and fewer
calibration images (``--iters``, ``--calib``; defaults below) so the grid fits in about
30 minutes on one CPU thread, with units from the graph and with one unit per layer
(the old fallback for unknown blocks), at W2A4 and W2A2, seeds 0 and 1. Reports top-1 on
the first 2000 images of the test split (mean ± std over seeds; CPU is scarce), the CPU seconds of the method, and, for
PD-Quant, on how many units distribution correction ran and how many used the KL tail.
Where the graph finds one unit per layer (the VGG-like chain) the two rows are the same
run. Cells are stored in ``benchmarks/cells/units.jsonl`` (an interrupted run resumes);
the table is printed and written to its section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.results import write_results  # noqa: E402
from benchmarks.sweeps import ARCHIVE, archived, mean_std  # noqa: E402
from ptq_core.prepare import execution_order  # noqa: E402

CELLS_FILE = ARCHIVE / "units.jsonl"  # this benchmark trains its own networks: its cells are kept here, not as runs


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _keep(key: str, row: dict) -> dict:
    """Append a finished cell to the archive (an interrupted grid resumes from it)."""
    row = row | {"key": key}
    with CELLS_FILE.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return row


CACHE = ROOT / "benchmarks" / "cells" / "cache"
NETS = ("dw-bottleneck", "densenet-like", "se-resnet", "inception", "vgg-chain", "fmnist-resnet20")
METHODS = ("brecq", "qdrop", "pdquant")
BITS = {"W2A4": (2, 4), "W2A2": (2, 2)}
SEEDS = (0, 1)
SOURCES = ("graph", "layers")
ITERS, CALIB, BRECQ_ACT_ITERS = 40, 64, 16
EPOCHS = 4
EVAL = 2000


def _data():
    from ptq_core.data import load_embedded

    bundle = load_embedded()
    x, y = bundle.calib.tensors
    tx, ty = bundle.test.tensors
    return x, y, tx[:EVAL], ty[:EVAL]


def _train(name: str, x: torch.Tensor, y: torch.Tensor, epochs: int) -> torch.nn.Module:
    """A briefly trained network (cached), eval mode."""
    from tests.support.graph_nets import NETS as FACTORIES

    model = FACTORIES[name]()
    path = CACHE / f"units-{name}-e{epochs}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    t0 = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(128):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    print(f"<!-- trained {name}: {epochs} epochs in {time.perf_counter() - t0:.0f} s -->", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval()


def _model(name: str, x: torch.Tensor, y: torch.Tensor, epochs: int) -> torch.nn.Module:
    if name.startswith("fmnist-"):
        from ptq_core.models import load_model

        return load_model(name).model
    return _train(name, x, y, epochs)


@torch.no_grad()
def _top1(model: torch.nn.Module, tx: torch.Tensor, ty: torch.Tensor) -> float:
    hits = sum(int((model(tx[i : i + 1000]).argmax(1) == ty[i : i + 1000]).sum()) for i in range(0, len(tx), 1000))
    return 100.0 * hits / len(tx)


def _config(method: str, bits: tuple[int, int], seed: int, source: str, iters: int, calib: int):
    from ptq_core.methods import METHODS as REGISTRY
    from ptq_core.prepare import QuantSpec

    extra = {"act_iters": max(1, iters * BRECQ_ACT_ITERS // ITERS)} if method == "brecq" else {}
    return REGISTRY[method][0].from_preset(
        "fast",
        quant=QuantSpec(wbits=bits[0], abits=bits[1]),
        seed=seed,
        iters=iters,
        calib=calib,
        unit_source=source,
        **extra,
    )


def _cell(model, calib_x, tx, ty, method, bits, seed, source, iters, calib) -> dict:
    from ptq_core import quantize

    cfg = _config(method, bits, seed, source, iters, calib)
    c0 = cpu_seconds()
    res = quantize(model, calib_x, cfg)
    cpu = cpu_seconds() - c0
    units = res.extras["recon"]["units"]
    last = [u for u in units if u["stage"] == units[-1]["stage"]]
    return {
        "top1": _top1(res.model, tx, ty),
        "cpu_s": cpu,
        "units": len(last),
        "unit_names": [u["name"] for u in last],
        "dc_units": sum(u["dc"].startswith("corrected") for u in last),
        "tail_units": sum(u["kl_path"].startswith("tail") for u in last),
        "plan": res.extras["recon"]["unit_plan"]["source"],
    }


def _calib(x: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    return x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]]


def run(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(1)
    x, y, tx, ty = _data()
    nets, methods, bits_grid, seeds = NETS, METHODS, BITS, SEEDS
    if args.quick:
        nets, methods, bits_grid, seeds = ("dw-bottleneck",), ("pdquant",), {"W2A4": (2, 4)}, (0,)
        tx, ty = tx[:500], ty[:500]
    rows = []
    models = {}
    # the network first, then seed 0 of the others, then seed 1, fmnist-resnet20 last: an interrupted
    # grid still has both seeds of the main case and one seed of every other network
    order = [(nets[0], seed) for seed in seeds] + [(n, seed) for seed in seeds for n in nets[1:]]
    order = sorted(order, key=lambda p: p[0] == "fmnist-resnet20")
    for net, seed in order:
        if net not in models:
            model = _model(net, x, y, 1 if args.quick else args.epochs)
            layers = execution_order(model, x[:1], (torch.nn.Conv2d, torch.nn.Linear))
            models[net] = (model, _top1(model, tx, ty), layers)
        model, fp, layer_names = models[net]
        for bname, bits in bits_grid.items():
            for method in methods:
                graph_row = None
                for source in SOURCES:
                    key = f"{net}|{method}|{bname}|{source}|{seed}|{args.iters}|{args.calib}|{args.epochs}"
                    row = None if args.quick else archived("units").get(key)
                    if row is None and source == "layers" and graph_row and graph_row["unit_names"] == layer_names:
                        row = graph_row | {"source": "layers", "same_as_graph": True}  # the same run
                    if row is None:
                        cell = _cell(
                            model,
                            _calib(x, args.calib, seed),
                            tx,
                            ty,
                            method,
                            bits,
                            seed,
                            source,
                            args.iters,
                            args.calib,
                        )
                        cell |= {
                            "net": net,
                            "method": method,
                            "bits": bname,
                            "source": source,
                            "seed": seed,
                            "fp_top1": fp,
                            "layerwise": cell["unit_names"] == layer_names,
                        }
                        row = cell if args.quick else _keep(key, cell)
                        print(f"<!-- {key}: top-1 {row['top1']:.2f}, {row['cpu_s']:.0f} s -->", flush=True)
                    graph_row = row if source == "graph" else graph_row
                    rows.append(row)
    return rows


def stored(args: argparse.Namespace) -> list[dict]:
    """The finished cells of this setting (an unfinished grid: what is there)."""
    tail = f"|{args.iters}|{args.calib}|{args.epochs}"
    rows = [r for r in archived("units").values() if r["key"].endswith(tail)]
    dup = [
        r | {"source": "layers", "same_as_graph": True} for r in rows if r["source"] == "graph" and r.get("layerwise")
    ]
    return rows + dup


def table(rows: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in sorted(
        rows,
        key=lambda r: (
            NETS.index(r["net"]),
            METHODS.index(r["method"]),
            list(BITS).index(r["bits"]),
            SOURCES.index(r["source"]),
        ),
    ):
        groups.setdefault((r["net"], r["method"], r["bits"], r["source"]), []).append(r)
    head = "| network (float top-1) | method | W/A | units from | units | seeds | top-1 | CPU s | DC units | KL tail |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for (net, method, bits, source), rs in groups.items():
        same = rs[0].get("same_as_graph", False)
        dc = f"{rs[0]['dc_units']}/{rs[0]['units']}" if method == "pdquant" else "-"
        tail = f"{rs[0]['tail_units']}/{rs[0]['units']}" if method == "pdquant" else "-"
        label = "layers (same units)" if same else source
        lines.append(
            f"| {net} ({rs[0]['fp_top1']:.2f}) | {method} | {bits} | {label} | {rs[0]['units']} | {len(rs)} | "
            f"{mean_std([r['top1'] for r in rs])} | {statistics.mean(r['cpu_s'] for r in rs):.0f} | {dc} | "
            f"{tail} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one tiny cell: checks that the script runs")
    p.add_argument("--iters", type=int, default=ITERS)
    p.add_argument("--calib", type=int, default=CALIB)
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--table-only", action="store_true", help="only the cells already stored (an unfinished grid)")
    args = p.parse_args()
    t0 = time.perf_counter()
    rows = stored(args) if args.table_only else run(args)
    body = table(rows)
    print(body)
    print(f"<!-- {time.perf_counter() - t0:.0f} s -->")
    if not args.quick:
        cmd = (
            f"OMP_NUM_THREADS=1 python benchmarks/units.py --iters {args.iters} --calib {args.calib} "
            f"--epochs {args.epochs}"
        )
        write_results("Graph units (issue 12)", "One CPU thread.\n\n" + body, cmd)


if __name__ == "__main__":
    main()

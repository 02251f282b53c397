"""Plumbing shared by the benchmark scripts: their cells run as a sweep, the archived cells, Markdown helpers.

A *cell* is one measured setting (model, method, bits, seed ...), described by a `RunSpec`.
The missing cells of a table run together through `ptq_core.sweep.run_cells` (Ray on this
machine, or a cluster with ``--address``; one fresh worker process per cell, so its peak
memory is its own) and land in the run store (``--store``, else the default one) as a sweep
named after the benchmark, so an interrupted table resumes where it stopped and the app's
Compare runs page shows it.

The cells measured before sweeps existed are kept, read-only, in ``benchmarks/cells/*.jsonl``:
they hold the figures quoted in ``RESULTS.md`` (with per-process CPU seconds and peak memory
taken the same way). A table uses an archived cell when one has the same key, unless
``--rerun``; nothing is ever appended to the archives.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ptq_core.cat.options import CATOptions
    from ptq_core.spec import RunSpec
    from ptq_core.store import RunRecord

ROOT = Path(__file__).resolve().parent.parent
ARCHIVE = ROOT / "benchmarks" / "cells"


def archived(name: str) -> dict[str, dict]:
    """The archived cells of benchmark `name` (``benchmarks/cells/<name>.jsonl``) by key, newest kept."""
    path = ARCHIVE / f"{name}.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["key"]: r for r in rows if "key" in r}


def cell_spec(
    model: str,
    method: str,
    *,
    preset: str | None = None,
    device: str = "auto",
    eval_limit: int | None = None,
    cat: CATOptions | None = None,
    **values: Any,
) -> RunSpec:
    """The `RunSpec` of one cell on fmnist-sample; its method config is `make_config(method, preset, **values)`.

    Values that are None are left out (the preset's or the method's default stays).
    """
    from ptq_core.spec import RunSpec, make_config

    config = make_config(method, preset, **{k: v for k, v in values.items() if v is not None})
    return RunSpec(model=model, data="fmnist-sample", device=device, method=config, cat=cat, eval_limit=eval_limit)


def args_cell_spec(
    args: argparse.Namespace, model: str, method: str, bits: tuple[int, int], seed: int, **values: Any
) -> RunSpec:
    """`cell_spec` with the command line's --preset, --device, --eval-limit and --iters (RTN has no steps)."""
    steps = {} if method == "rtn" else {"iters": args.iters}
    return cell_spec(
        model,
        method,
        preset=args.preset,
        device=args.device,
        eval_limit=args.eval_limit,
        wbits=bits[0],
        abits=bits[1],
        seed=seed,
        **{**steps, **values},
    )


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    """Where the missing cells run and are stored: --address, --workers, --store."""
    p.add_argument("--address", default=None, help="a Ray cluster to run the cells on (default: this machine)")
    p.add_argument("--workers", type=int, default=None, help="cells at once (default: one per CPU)")
    p.add_argument("--store", default=None, help="run store file (default: the user's run store)")


def run_cells(sweep: str, specs: dict[str, RunSpec], args: argparse.Namespace) -> dict[str, RunRecord]:
    """Run the cells `specs` (key -> spec) as sweep `sweep`; the finished records by key.

    Cells already done in the store are not run again. With ``args.quick`` the cells go to a
    throwaway store. A failed cell is reported as a Markdown comment and left out.
    """
    from ptq_core.distributed import RayOptions
    from ptq_core.grid import Cell
    from ptq_core.store import RunStore
    from ptq_core.sweep import run_cells as run

    if not specs:
        return {}
    quick = getattr(args, "quick", False)
    path = Path(tempfile.mkdtemp(prefix="ptq-bench-")) / "runs.sqlite" if quick else args.store
    options = RayOptions(address=args.address, workers=args.workers, isolate=True)
    cells = [Cell(key, {}, spec) for key, spec in specs.items()]
    report = run(sweep, cells, RunStore(path), options, rerun=getattr(args, "rerun", False))
    from ptq_core.sweep import sweep_records

    records = {r.cell: r for r in sweep_records(RunStore(path), sweep) if r.cell in specs}
    for key, rec in records.items():
        if rec.status != "done":
            print(f"<!-- cell {key} {rec.status}: {rec.error} -->", flush=True)
    if report.cancelled:
        raise KeyboardInterrupt
    return {k: r for k, r in records.items() if r.status == "done"}


def figures(rec: RunRecord) -> dict[str, Any]:
    """A finished run as an archived cell's fields: top1, fp_top1, seconds (the method's), cpu_s, peak_mb ...

    `cpu_s` and `peak_mb` cover the whole run in its worker (loading, quantizing, evaluating,
    per-layer errors); the archived cells' cover loading and quantizing only, so the two are
    not comparable figure for figure.
    """
    worker = rec.extras.get("worker", {})
    method = rec.spec.get("method", rec.config)
    return {
        "top1": rec.metrics["top1"],
        "fp_top1": rec.metrics["fp_top1"],
        "seconds": rec.timings.get("method"),
        "cpu_s": worker.get("cpu_s", float("nan")),
        "peak_mb": worker.get("peak_mb", float("nan")),
        "threads": worker.get("threads"),
        "device": rec.extras.get("device"),
        "calib": rec.metrics.get("calib_samples"),
        "iters": method.get("iters", 0),
        "spec": rec.spec,
        "run_id": rec.run_id,
    }


def mean_std(xs: Sequence[float], signed: bool = False) -> str:
    """'mean ± std' (just the value for one sample), with a sign when `signed`."""
    fmt = "{:+.2f}" if signed else "{:.2f}"
    m = fmt.format(statistics.mean(xs))
    return f"{m} ± {statistics.stdev(xs):.2f}" if len(xs) > 1 else m

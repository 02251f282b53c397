"""Sweeps: every cell of a `Grid` run on Ray and stored in this machine's run store.

A worker needs no shared disk: it runs its cell's `RunSpec` with a throwaway store of its
own and returns the stored record's fields; this process writes them into its store,
tagged with the sweep's name and the cell's key, as soon as each comes back.

Resuming: a cell is skipped when the store already holds a finished ("done") run of the
same sweep and cell key with the same description. Failed or cancelled cells, and cells
whose description changed, run again.
"""

from __future__ import annotations

import json
import re
import resource
import socket
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .distributed import RayOptions, TaskState, ray_map
from .errors import PTQError
from .grid import Cell, Grid
from .pipeline import run_quantization
from .spec import RunSpec
from .store import RunRecord, RunStore, environment, to_jsonable

__all__ = [
    "SweepProgress",
    "SweepReport",
    "run_sweep",
    "run_cells",
    "execute_cell",
    "cell_identity",
    "stored_identity",
    "sweep_records",
    "sweep_summary",
]


@dataclass
class SweepProgress:
    """Cells of a sweep: `total` in the grid, `skipped` (already done), `done`, `failed`, `running`."""

    total: int
    skipped: int = 0
    done: int = 0
    failed: int = 0
    running: int = 0
    eta_s: float | None = None

    @property
    def finished(self) -> int:
        """Cells run by this sweep that are back (done or failed)."""
        return self.done + self.failed


@dataclass
class SweepReport:
    """What a sweep did: its records by cell key (grid order), and whether it was cancelled."""

    name: str
    records: dict[str, RunRecord] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    cancelled: bool = False

    @property
    def failed(self) -> list[str]:
        """Keys of the cells whose run failed."""
        return [k for k, r in self.records.items() if r.status != "done"]


def cell_identity(spec: dict[str, Any]) -> str:
    """A description as canonical JSON: two cells with the same identity give the same run."""
    return json.dumps(to_jsonable(spec), sort_keys=True)


def execute_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one cell (a `RunSpec` dict) with a throwaway store; the stored record's fields.

    A failing run comes back as a "failed" record with its error; it never raises.
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with tempfile.TemporaryDirectory(prefix="ptq-cell-") as tmp:
        store = RunStore(Path(tmp) / "runs.sqlite")
        try:
            run_quantization(RunSpec.from_dict(spec), store)
        except Exception as exc:  # noqa: BLE001 - recorded, the sweep goes on
            error = exc
        records = store.list()
    record = records[0] if records else _failed(spec, f"{type(error).__name__}: {error}")
    record.extras = {**record.extras, "worker": _where(usage)}
    return record.to_dict()


def _where(before: resource.struct_rusage) -> dict[str, Any]:
    """The machine and Ray node a cell ran on, its CPU seconds, and its worker's peak memory growth.

    `peak_mb` is the growth of the worker process's maximum resident set during the cell: the
    cell's own peak when the worker ran nothing before (`RayOptions.isolate`).
    """
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    node = None
    try:
        import ray

        if ray.is_initialized():
            node = ray.get_runtime_context().get_node_id()
    except ImportError:
        pass
    return {
        "host": socket.gethostname(),
        "ray_node": node,
        "cpu_s": cpu_s,
        "peak_mb": (after.ru_maxrss - before.ru_maxrss) / 1024,
        "threads": _threads(),
    }


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _failed(spec: dict[str, Any], error: str) -> RunRecord:
    """A failed record for a cell that never reached the run store."""
    method = spec.get("method") or {}
    quant = method.get("quant") or {}
    now = time.time()
    return RunRecord(
        run_id=uuid.uuid4().hex[:12],
        created=now,
        finished=now,
        status="failed",
        model=str(spec.get("model")),
        method=str(method.get("method")),
        wbits=int(quant.get("wbits", 0)),
        abits=int(quant.get("abits", 0)),
        config=method,
        env=environment(),
        error=" ".join(error.split())[:500],
        spec=spec,
    )


def stored_identity(spec: dict[str, Any]) -> str:
    """`cell_identity` of a description read back from the store, with today's defaults filled in.

    A setting added after the run was stored (with a default that does not change results) then
    does not make a finished cell look new. A description this version cannot read keeps its
    identity as stored.
    """
    try:
        return cell_identity(RunSpec.from_dict(spec).to_dict())
    except PTQError:
        return cell_identity(spec)


def _done(store: RunStore, name: str) -> set[tuple[str, str]]:
    return {(r.cell, stored_identity(r.spec)) for r in store.list(status="done", sweep=name)}


def run_sweep(
    grid: Grid,
    store: RunStore | None = None,
    options: RayOptions | None = None,
    progress: Callable[[SweepProgress], None] | None = None,
    rerun: bool = False,
) -> SweepReport:
    """Run every cell of `grid` not yet done on Ray and store each as it comes back.

    Args:
        grid: The sweep.
        store: Where the cells are recorded (the default store when None).
        options: Where and how to run (default: Ray on this machine, one CPU per cell).
        progress: Receives a `SweepProgress` after every change.
        rerun: Run every cell, done or not.

    Returns:
        The report; on Ctrl-C the remaining cells are cancelled, the finished ones are
        stored, and the report says `cancelled`.
    """
    return run_cells(grid.name, grid.cells(), store, options, progress, rerun)


def run_cells(
    name: str,
    cells: list[Cell],
    store: RunStore | None = None,
    options: RayOptions | None = None,
    progress: Callable[[SweepProgress], None] | None = None,
    rerun: bool = False,
) -> SweepReport:
    """`run_sweep` for cells given one by one (their keys must be distinct): sweep `name`."""
    store = store if store is not None else RunStore()
    options = options or RayOptions()
    done = set() if rerun else _done(store, name)
    todo = [c for c in cells if (c.key, cell_identity(c.spec.to_dict())) not in done]
    report = SweepReport(name, skipped=[c.key for c in cells if c not in todo])
    state = SweepProgress(total=len(cells), skipped=len(report.skipped))

    def on_result(i: int, result: Any) -> None:
        record = _record(todo[i], result, name)
        store.add(record)
        report.records[todo[i].key] = record
        state.done += record.status == "done"
        state.failed += record.status != "done"

    def on_state(tasks: TaskState) -> None:
        state.running, state.eta_s = tasks.running, tasks.eta_s
        if progress is not None:
            progress(state)

    args = [(c.spec.to_dict(),) for c in todo]
    gpu = [c.spec.device.startswith("cuda") for c in todo]
    try:
        if todo:
            ray_map(execute_cell, args, options, on_result, on_state, gpu)
    except KeyboardInterrupt:
        report.cancelled = True
    report.records = {c.key: report.records[c.key] for c in todo if c.key in report.records}
    return report


def _record(cell: Cell, result: Any, sweep: str) -> RunRecord:
    if isinstance(result, BaseException):  # the worker died: out of memory, killed, ...
        spec = cell.spec.to_dict()
        record = _failed(spec, f"the worker running this cell died: {type(result).__name__}: {result}")
    else:
        record = RunRecord(**{k: v for k, v in result.items() if k not in ("sweep", "cell")})
    record.sweep, record.cell = sweep, cell.key
    return record


def sweep_records(store: RunStore, name: str) -> list[RunRecord]:
    """The newest run of every cell of sweep `name` (done ones first), oldest cell first."""
    best: dict[str, RunRecord] = {}
    for r in store.list(sweep=name):  # newest first
        if r.cell not in best or (best[r.cell].status != "done" and r.status == "done"):
            best[r.cell] = r
    return sorted(best.values(), key=lambda r: r.created)


def sweep_summary(records: list[RunRecord]) -> list[dict[str, Any]]:
    """Cells that differ only by seed, as one row each: top-1 mean and std over the seeds.

    Returns:
        Rows ``{group, model, method, wbits, abits, bits, seeds, runs, failed, top1_mean, top1_std,
        fp_top1}`` in the order the groups first appear (`top1_*` None when no run is done;
        `top1_std` 0 for one seed).
    """
    groups: dict[str, list[RunRecord]] = {}
    for r in records:
        groups.setdefault(_without_seed(r.cell), []).append(r)
    rows = []
    for group, runs in groups.items():
        done = [r for r in runs if r.status == "done" and r.metrics.get("top1") is not None]
        top1 = [float(r.metrics["top1"]) for r in done]
        first = runs[0]
        rows.append(
            {
                "group": group,
                "model": first.model,
                "method": first.method,
                "wbits": first.wbits,
                "abits": first.abits,
                "bits": first.bits_label,
                "seeds": sorted(_seed(r) for r in done),
                "runs": len(done),
                "failed": len(runs) - len(done),
                "top1_mean": statistics.mean(top1) if top1 else None,
                "top1_std": statistics.stdev(top1) if len(top1) > 1 else (0.0 if top1 else None),
                "fp_top1": done[0].metrics.get("fp_top1") if done else None,
            }
        )
    return rows


def _without_seed(cell: str) -> str:
    return re.sub(r"(^| )seed=\S+", "", cell).strip() or "base"


def _seed(record: RunRecord) -> int:
    return int((record.spec.get("method") or record.config).get("seed", 0))

"""Plumbing shared by the benchmark scripts: resumable cell files, one cell per process, what a cell measures.

A *cell* is one measured setting (model, method, bits, seed ...). Finished cells are appended
to a JSON-lines file under ``benchmarks/cells/``, keyed by a JSON string of the setting, so an
interrupted table resumes where it stopped and every figure in ``RESULTS.md`` can be traced to
its run: a cell's row carries its `RunSpec` (``"spec"``, from `cell_spec`), which
``python -m ptq_core quantize --config`` re-runs. Each cell runs in a fresh process, so its
peak memory is its own.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ptq_core.cat.options import CATOptions
    from ptq_core.spec import RunSpec

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def cell_spec(model: str, method: str, *, preset: str | None = None, device: str = "auto",
              eval_limit: int | None = None, cat: CATOptions | None = None, **values: Any) -> RunSpec:  # fmt: skip
    """The `RunSpec` of one cell on fmnist-sample; its method config is `make_config(method, preset, **values)`.

    Values that are None are left out (the preset's or the method's default stays).
    """
    from ptq_core.spec import RunSpec, make_config

    config = make_config(method, preset, **{k: v for k, v in values.items() if v is not None})
    return RunSpec(model=model, data="fmnist-sample", device=device, method=config, cat=cat, eval_limit=eval_limit)


class CellStore:
    """The finished cells of one benchmark, in an append-only JSON-lines file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def rows(self) -> list[dict]:
        """Every finished cell, oldest first."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def get(self, key: str) -> dict | None:
        """The newest cell stored under `key`, or None."""
        return {r["key"]: r for r in self.rows() if "key" in r}.get(key)

    def add(self, key: str, row: dict) -> dict:
        """Store `row` under `key` with its finishing time; returns the stored row."""
        row = row | {"key": key, "finished": datetime.now().isoformat(timespec="seconds")}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        return row

    def run(self, key: str, cmd: Sequence[str], label: str, keep: bool = True) -> dict | None:
        """Run one cell in a fresh process (`run_in_process`) and, when `keep`, store it under `key`."""
        row = run_in_process(cmd, label)
        return self.add(key, row) if row is not None and keep else row


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Meter:
    """CPU seconds and peak memory of the code run inside ``with meter:``.

    Create it before the model is loaded: on the CPU the peak is the growth of the process's
    maximum resident set since then (so run one cell per process); on CUDA it is the peak
    allocated during the ``with`` block.
    """

    def __init__(self, dev: Any) -> None:
        self.dev = dev
        self.base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.cpu_s = self.peak_mb = float("nan")

    def __enter__(self) -> Meter:
        import torch

        if self.dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        self._cpu0 = cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        if self.dev.type == "cuda":
            torch.cuda.synchronize()
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self.peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.base_rss) / 1024
        self.cpu_s = cpu_seconds() - self._cpu0

    def figures(self) -> dict:
        """The measured figures as cell fields: cpu_s, peak_mb, threads, device."""
        import torch

        return {"cpu_s": self.cpu_s, "peak_mb": self.peak_mb, "threads": torch.get_num_threads(),
                "device": str(self.dev)}  # fmt: skip


def run_in_process(cmd: Sequence[str], label: str) -> dict | None:
    """Run one cell as `cmd` in a fresh process; its last stdout line is the cell as JSON.

    A failed cell prints a Markdown comment naming `label` and the error and returns None,
    so one failure does not stop a table.
    """
    out = subprocess.run(list(cmd), capture_output=True, text=True)
    if out.returncode != 0:
        print(f"<!-- cell {label} failed: {out.stderr.strip().splitlines()[-1:]} -->", flush=True)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def mean_std(xs: Sequence[float], signed: bool = False) -> str:
    """'mean ± std' (just the value for one sample), with a sign when `signed`."""
    fmt = "{:+.2f}" if signed else "{:.2f}"
    m = fmt.format(statistics.mean(xs))
    return f"{m} ± {statistics.stdev(xs):.2f}" if len(xs) > 1 else m


def append_results(title: str, body: str, command: str) -> None:
    """Append a dated section with the command that produced it to benchmarks/RESULTS.md."""
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    with RESULTS.open("a") as f:
        f.write(f"\n## {title} ({stamp})\n\n`{command}`\n\n{body}\n")

"""Two users start the same run at once: wall times with the app's job queue at 1 and 2 slots.

(Not called queue.py: the script's folder comes first on sys.path and would shadow the standard
library's `queue`, which torch imports.)

Usage: python benchmarks/queue_bench.py [--model fmnist-vit] [--eval-limit 0] [--calib 256]

The two jobs go through `ptq_ui.jobs` exactly as the app starts them (`start_job` on a
`JobQueue`, `run_quantization` over the already loaded model and data, each stored in a
temporary run store). Cases:

- alone: one job, one slot, all cores (the reference);
- queue 1 slot: the second job waits for the first; each runs with all cores;
- queue 2 slots: both run at once, each with its thread budget (cores // 2);
- 2 slots, no budget: both run at once, each with every core (the app before the queue).

For each job: seconds waiting in the queue, seconds running, seconds from the click to
the result; and the time until both are done. Also prints the load average and the
busiest other processes, since other work on the machine changes every number.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PTQ_EXPLORER_HOME", tempfile.mkdtemp(prefix="ptq-queue-bench-"))

import torch  # noqa: E402

from ptq_core.data import load_data  # noqa: E402
from ptq_core.models import load_model  # noqa: E402
from ptq_core.pipeline import run_quantization  # noqa: E402
from ptq_core.spec import RunSpec, make_config  # noqa: E402
from ptq_core.store import RunStore  # noqa: E402
from ptq_ui.jobs import JobQueue, start_job  # noqa: E402


def _busy_processes(n: int = 5) -> str:
    """The busiest processes other than this one (pcpu, command), one line."""
    try:
        out = subprocess.run(["ps", "-eo", "pcpu,pid,args", "--sort=-pcpu"], capture_output=True, text=True).stdout
    except OSError:
        return "ps unavailable"
    rows = [r.split(None, 2) for r in out.splitlines()[1:]]
    rows = [r for r in rows if len(r) == 3 and int(r[1]) != os.getpid()][:n]
    return "; ".join(f"{cmd[:70]} {cpu}%" for cpu, _pid, cmd in rows)


def _case(name: str, jobs: int, slots: int, threads: int | None, spec: RunSpec, resources, store) -> dict:
    """Start `jobs` identical jobs at once on a fresh queue; seconds waiting, running and in all, per job."""
    torch.set_num_threads(os.cpu_count() or 1)  # what a worker without a budget inherits
    queue = JobQueue(slots, threads)

    def work(progress):
        record, _ = run_quantization(spec, store, progress, resources, owner="bench")
        return record.metrics["top1"]

    clicked = time.time()  # the clock of Job.started / Job.finished
    running = [start_job(work, f"job {i}", sync=False, queue=queue) for i in range(jobs)]
    for job in running:
        job.thread.join()
    assert all(job.status == "done" for job in running), [job.error for job in running]
    row = {"case": name, "slots": slots, "threads": threads or os.cpu_count()}
    for i, job in enumerate(running):  # Job.started is when it left the queue
        row[f"job{i}"] = (job.started - clicked, job.finished - job.started, job.finished - clicked)
    row["both"] = max(job.finished for job in running) - clicked
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fmnist-vit")
    parser.add_argument("--eval-limit", type=int, default=0, help="test images per run (0: all 10k)")
    parser.add_argument("--calib", type=int, default=256)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    loaded = load_model(args.model)
    resources = (loaded, load_data("fmnist-sample", loaded.transform))
    spec = RunSpec(model=args.model, method=make_config("rtn", calib=args.calib), eval_limit=args.eval_limit or None)
    store = RunStore()
    print(
        f"RTN W4A4 on {args.model}, {args.eval_limit or 'all'} test images, {args.calib} calibration images; "
        f"{cores} cores; torch {torch.__version__} ({torch.__config__.parallel_info().splitlines()[-1].strip()})"
    )
    print(f"before: load average {os.getloadavg()[0]:.2f}; busiest: {_busy_processes()}\n")
    cases = [
        ("alone", 1, 1, cores),
        ("queue, 1 slot", 2, 1, cores),
        ("queue, 2 slots", 2, 2, max(1, cores // 2)),
        ("2 at once, no budget", 2, 2, None),
    ]
    print("| case | slots | threads/job | job A wait / run / total s | job B wait / run / total s | both done s |")
    print("|---|---|---|---|---|---|")
    for name, jobs, slots, threads in cases:
        row = _case(name, jobs, slots, threads, spec, resources, store)
        cells = [" / ".join(f"{v:.1f}" for v in row[f"job{i}"]) if f"job{i}" in row else "-" for i in range(2)]
        print(f"| {name} | {slots} | {row['threads']} | {cells[0]} | {cells[1]} | {row['both']:.1f} |", flush=True)
    print(f"\nafter: load average {os.getloadavg()[0]:.2f}; busiest: {_busy_processes()}")


if __name__ == "__main__":
    main()

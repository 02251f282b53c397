"""`sweep --address`: a Ray cluster of two nodes started here (head + worker on 127.0.0.1).

The command line connects to it as it would to a remote cluster; the cells spread over both
nodes and come back into this machine's store. Killing the command loses no finished cell.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ptq_core.store import RunStore
from tests.support.paths import ROOT

TINY = {"model": "fmnist-resnet20", "method": "rtn", "calib": 32, "eval_limit": 100, "error_samples": 8}


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c
    c.shutdown()


def _sweep(grid: Path, home: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PTQ_EXPLORER_HOME=str(home))
    return subprocess.Popen(
        [sys.executable, "-m", "ptq_core", "sweep", str(grid), "--quiet", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_a_done_cell(proc: subprocess.Popen, store_path: Path, sweep: str, timeout: float = 900) -> None:
    """Until the sweep has stored its first finished cell (a busy shared machine can take minutes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if store_path.exists() and RunStore(store_path).list(sweep=sweep, status="done"):
            return
        time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"no finished cell within {timeout:.0f} s: {proc.communicate()[1][-2000:]}")


def _grid(tmp_path: Path, name: str, wbits: list[int]) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"name": name, "base": TINY, "axes": {"wbits": wbits}}))
    return path


def test_address_runs_the_cells_on_both_nodes(cluster, tmp_path):
    proc = _sweep(_grid(tmp_path, "two", [2, 4]), tmp_path, "--address", cluster.address)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "sweep two: 2 done, 0 failed" in out
    records = RunStore(tmp_path / "runs.sqlite").list(sweep="two")
    assert {r.status for r in records} == {"done"} and len(records) == 2
    # one CPU per node and one per cell: the two cells ran at once, one on each node
    assert len({r.extras["worker"]["ray_node"] for r in records}) == 2


def test_a_killed_sweep_resumes_where_it_stopped(cluster, tmp_path):
    grid = _grid(tmp_path, "killed", [2, 3, 4])
    proc = _sweep(grid, tmp_path, "--address", cluster.address, "--workers", "1")
    store_path = tmp_path / "runs.sqlite"
    _wait_for_a_done_cell(proc, store_path, "killed")
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    done = RunStore(store_path).list(sweep="killed")
    assert 1 <= len(done) < 3 and {r.status for r in done} == {"done"}
    again = _sweep(grid, tmp_path, "--address", cluster.address)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert f"{3 - len(done)} done, 0 failed, {len(done)} already done" in out
    assert len(RunStore(store_path).list(sweep="killed", status="done")) == 3


def test_ctrl_c_cancels_the_rest_and_keeps_the_finished_cells(cluster, tmp_path):
    grid = _grid(tmp_path, "interrupted", [2, 3, 4, 5, 6])
    proc = _sweep(grid, tmp_path, "--address", cluster.address, "--workers", "1")
    store_path = tmp_path / "runs.sqlite"
    _wait_for_a_done_cell(proc, store_path, "interrupted")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "cancelled: run it again to resume" in out
    kept = RunStore(store_path).list(sweep="interrupted")
    assert 1 <= len(kept) < 5 and {r.status for r in kept} == {"done"}

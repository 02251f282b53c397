"""Sweeps: grids expand into cells; cells run on a local Ray, resume, fail alone, equal sequential runs.

One Ray instance is shared by the tests of this module (it takes seconds to start).
"""

from __future__ import annotations

import json

import pytest

from ptq_core.cli import main
from ptq_core.distributed import RayOptions
from ptq_core.errors import ConfigError
from ptq_core.grid import Grid, load_grid
from ptq_core.pipeline import run_quantization
from ptq_core.spec import RunSpec, make_config
from ptq_core.store import RunStore
from ptq_core.sweep import cell_identity, run_sweep, stored_identity, sweep_records

TINY = {"model": "fmnist-resnet20", "method": "rtn", "calib": 32, "eval_limit": 100, "error_samples": 8}
# what a rerun on another process may change: wall time, the worker, the environment
_VOLATILE = {"seconds"}


def _grid(name: str, axes: dict, **base) -> Grid:
    return Grid.from_dict({"name": name, "base": TINY | base, "axes": axes})


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield RayOptions(workers=2)
    ray.shutdown()


def test_grid_cells_are_the_product_of_the_axes_in_order():
    grid = _grid("g", {"method": ["rtn", "qdrop"], "wbits": [2, 4], "iters": [1, 2]})
    keys = [c.key for c in grid.cells()]
    # rtn has no iters: its cells leave it out and are not repeated
    assert keys == [
        "method=rtn wbits=2",
        "method=rtn wbits=4",
        "method=qdrop wbits=2 iters=1",
        "method=qdrop wbits=2 iters=2",
        "method=qdrop wbits=4 iters=1",
        "method=qdrop wbits=4 iters=2",
    ]
    qdrop = grid.cells()[3].spec
    assert qdrop.method.iters == 2 and qdrop.method.quant.wbits == 2 and qdrop.eval_limit == 100


def test_a_stored_description_is_a_base(tmp_path):
    spec = RunSpec(method=make_config("qdrop", preset="fast", wbits=2, iters=3), eval_limit=50)
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"base": spec.to_dict(), "axes": {"seed": [0, 1]}}))
    grid = load_grid(path)
    assert grid.name == "g" and grid.cells()[0].spec == spec
    assert grid.cells()[1].spec.seed == 1


@pytest.mark.parametrize(
    "grid, message",
    [
        ({"axes": {"wbitz": [2]}}, "axis 'wbitz': wbitz is not a run setting"),
        ({"axes": {"wbits": []}}, "non-empty list"),
        ({"axes": {"wbits": [2]}, "extra": 1}, "unknown grid key"),
        ({"base": {"method": "nope"}}, "unknown method"),
    ],
)
def test_bad_grids_are_one_line_errors(grid, message):
    with pytest.raises(ConfigError, match=message):
        Grid.from_dict(grid, "g")


def test_dry_run_lists_the_cells(tmp_path, store_home, capsys):
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"base": TINY, "axes": {"wbits": [2, 4]}}))
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("to run  wbits=2") and "rtn W4A4" in out[1]


def _comparable(record) -> dict:
    return {k: v for k, v in record.metrics.items() if k not in _VOLATILE} | {"layers": record.layers}


def test_four_cells_run_on_ray_and_equal_sequential_runs(ray_local, tmp_path, one_thread):
    store = RunStore(tmp_path / "runs.sqlite")
    grid = _grid("four", {"wbits": [2, 4], "seed": [0, 1]})
    seen = []
    report = run_sweep(grid, store, ray_local, progress=lambda s: seen.append((s.done, s.running)))
    assert not report.cancelled and not report.failed and len(report.records) == 4
    assert max(running for _, running in seen) == 2 and seen[-1][0] == 4
    stored = sweep_records(store, "four")
    assert [r.cell for r in stored] and {r.cell for r in stored} == {c.key for c in grid.cells()}
    for cell in grid.cells():
        record = report.records[cell.key]
        assert record.sweep == "four" and store.get(record.run_id).cell == cell.key
        assert cell_identity(record.spec) == cell_identity(cell.spec.to_dict())
        alone, _ = run_quantization(cell.spec, RunStore(tmp_path / "sequential.sqlite"))
        assert _comparable(record) == _comparable(alone)  # bit for bit, at the same thread count


def test_a_failing_cell_is_recorded_and_the_sweep_goes_on(ray_local, tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    grid = _grid("fail", {"calib": [32, 10**6]}, wbits=4)
    report = run_sweep(grid, store, RayOptions(workers=2, isolate=True))  # one fresh worker process per cell
    assert report.failed == ["calib=1000000"]
    bad, good = report.records["calib=1000000"], report.records["calib=32"]
    assert bad.status == "failed" and "calibration images" in bad.error and good.status == "done"
    assert {r.status for r in store.list(sweep="fail")} == {"done", "failed"}
    # a failed cell runs again on resume; the done one is skipped
    again = run_sweep(grid, store, ray_local)
    assert again.skipped == ["calib=32"] and list(again.records) == ["calib=1000000"]


def test_an_interrupted_sweep_loses_no_finished_cell_and_resumes(ray_local, tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    grid = _grid("stop", {"wbits": [2, 3, 4, 5]})

    def interrupt_after_first(state) -> None:
        if state.done >= 1:
            raise KeyboardInterrupt

    first = run_sweep(grid, store, RayOptions(workers=1), progress=interrupt_after_first)
    assert first.cancelled and len(first.records) == 1
    kept = store.list(sweep="stop")
    assert [r.status for r in kept] == ["done"]  # the cancelled cells left nothing behind
    second = run_sweep(grid, store, ray_local)
    assert second.skipped == list(first.records) and len(second.records) == 3 and not second.failed
    assert len(store.list(sweep="stop", status="done")) == 4
    # a changed description is a new cell even under the same key
    changed = _grid("stop", {"wbits": [2, 3, 4, 5]}, eval_limit=50)
    cancelled = run_sweep(changed, store, ray_local, progress=_stop)
    assert cancelled.cancelled and cancelled.skipped == [] and len(store.list(sweep="stop")) == 4


def test_a_cell_stored_before_a_setting_existed_is_still_done(tmp_path):
    """A stored description without a later-added setting (at its default) resumes as finished."""
    store = RunStore(tmp_path / "runs.sqlite")
    grid = _grid("old", {"method": ["qdrop"]}, iters=2)
    (cell,) = grid.cells()
    old = cell.spec.to_dict()
    del old["method"]["cache_budget_mb"]  # added after such runs were stored
    assert stored_identity(old) == cell_identity(cell.spec.to_dict()) != cell_identity(old)
    record, _ = run_quantization(RunSpec.from_dict(old), store=RunStore(tmp_path / "scratch.sqlite"))
    record.spec, record.sweep, record.cell = old, "old", cell.key
    store.add(record)
    assert run_sweep(grid, store).skipped == [cell.key]  # nothing to run: no Ray needed
    changed = dict(old, method={**old["method"], "cache_budget_mb": 64.0})
    assert stored_identity(changed) != cell_identity(cell.spec.to_dict())


def _stop(state) -> None:
    raise KeyboardInterrupt


def test_the_sensitivity_sweep_on_ray_gives_the_same_rows(ray_local, fmnist, one_thread):
    from ptq_core.analysis.sensitivity import sensitivity_accuracy
    from ptq_core.data import calibration_tensor, make_loader
    from ptq_core.models import load_model
    from ptq_core.prepare import QuantSpec

    model = load_model("fmnist-resnet20").model
    calib, loader = calibration_tensor(fmnist, 32, 0), make_loader(fmnist.test, limit=100)
    spec = QuantSpec(w_observer="minmax", a_observer="minmax")
    layers = ["conv1", "layer1.0.conv1", "layer2.0.conv2", "layer3.2.conv2", "fc"]
    events = []
    on_ray = sensitivity_accuracy(model, calib, loader, spec, (2, 4), layers, events.append, ray=ray_local)
    alone = sensitivity_accuracy(model, calib, loader, spec, (2, 4), layers)
    assert on_ray == alone and len(alone) == 10
    assert events[-1].step == events[-1].total == 4  # two bit-widths x two shares of the layers


def test_settings_that_vary_together_are_one_axis():
    bits = [{"wbits": 4, "abits": 4}, {"wbits": 2, "abits": 8}]
    cells = _grid("linked", {"bits": bits, "seed": [0, 1]}).cells()
    assert [c.key for c in cells] == [
        "wbits=4 abits=4 seed=0",
        "wbits=4 abits=4 seed=1",
        "wbits=2 abits=8 seed=0",
        "wbits=2 abits=8 seed=1",
    ]
    assert cells[2].spec.method.quant.abits == 8
    with pytest.raises(ConfigError, match="abitz is not a run setting"):
        _grid("bad", {"bits": [{"abitz": 2}]})


def test_cuda_cells_ask_ray_for_a_gpu(monkeypatch, tmp_path):
    asked = {}

    def fake_map(fn, args, options, on_result, on_state=None, gpu=None):
        asked["gpu"] = list(gpu)

    monkeypatch.setattr("ptq_core.sweep.ray_map", fake_map)
    grid = _grid("gpu", {"device": ["cpu", "cuda", "auto"]})
    run_sweep(grid, RunStore(tmp_path / "runs.sqlite"))
    assert asked["gpu"] == [False, True, False]


def test_runs_list_filters_a_sweep(store_home, capsys):
    from ptq_core.store import RunRecord

    store = RunStore()
    for run_id, sweep in (("a1", "mine"), ("b2", "other"), ("c3", "")):
        store.add(
            RunRecord(
                run_id=run_id,
                created=1.0,
                finished=2.0,
                status="done",
                model="m",
                method="rtn",
                wbits=4,
                abits=4,
                sweep=sweep,
                cell="wbits=4" if sweep else "",
            )
        )
    assert main(["runs", "list", "--sweep", "mine"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("a1") and out[0].endswith("[mine: wbits=4]")

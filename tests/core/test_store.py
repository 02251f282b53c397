"""Tests for ptq_core.store: the SQLite run store."""

from __future__ import annotations

import csv
import io
import json
import math
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from ptq_core.errors import ConfigError, RunCancelled
from ptq_core.store import SCHEMA_VERSION, RunRecord, RunStore, default_store_path, to_jsonable
from tests.support.helpers import wait_until


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs.sqlite")


def _finish_one(store: RunStore, model: str = "tiny", method: str = "minmax") -> str:
    run_id = store.start(model, method, 8, 8, {"seed": 0, "percentile": 99.9})
    store.finish(
        run_id,
        metrics={"top1": 0.75, "sqnr": {"mean": 30.5}},
        layers=[{"name": "fc1", "mse": 1e-4}],
        timings={"calibrate": 0.5},
        extras={"table": [1, 2]},
    )
    return run_id


def test_round_trip(store: RunStore) -> None:
    run_id = _finish_one(store)
    rec = store.get(run_id)
    assert isinstance(rec, RunRecord)
    assert rec.status == "done" and rec.error is None
    assert (rec.model, rec.method, rec.wbits, rec.abits) == ("tiny", "minmax", 8, 8)
    assert rec.config == {"seed": 0, "percentile": 99.9}
    assert rec.metrics["sqnr"]["mean"] == 30.5
    assert rec.layers == [{"name": "fc1", "mse": 1e-4}]
    assert rec.extras == {"table": [1, 2]}
    assert rec.finished is not None and rec.seconds >= 0
    assert {"python", "torch", "torchvision", "platform", "cpu_count", "cuda_device"} <= set(rec.env)
    assert json.loads(json.dumps(rec.to_dict()))["run_id"] == run_id


def test_list_newest_first_and_filters(store: RunStore) -> None:
    first = _finish_one(store, method="minmax")
    second = _finish_one(store, method="mse")
    running = store.start("tiny", "mse", 4, 8, {})
    assert [r.run_id for r in store.list()] == [running, second, first]
    assert [r.run_id for r in store.list(status="done")] == [second, first]
    assert [r.run_id for r in store.list(method="mse", limit=1)] == [running]
    assert store.list(model="resnet18") == []


def test_failure_in_context_manager_leaves_earlier_runs_untouched(store: RunStore) -> None:
    earlier = [_finish_one(store), store.start("tiny", "minmax", 4, 4, {})]
    before = [store.get(rid).to_dict() for rid in earlier]
    with pytest.raises(ValueError, match="boom"):
        with store.run("tiny", "gptq", 4, 8, {"blocksize": 128}) as handle:
            raise ValueError("boom\nsecond line")
    rec = store.get(handle.run_id)
    assert rec.status == "failed" and rec.error == "ValueError: boom"
    assert [store.get(rid).to_dict() for rid in earlier] == before


def test_context_manager_success_and_cancel(store: RunStore) -> None:
    with store.run("tiny", "minmax", 8, 8, {}) as handle:
        handle.finish({"top1": 0.5}, [], {"total": 1.0})
    assert store.get(handle.run_id).status == "done"
    with pytest.raises(RunCancelled):
        with store.run("tiny", "minmax", 8, 8, {}) as cancelled:
            raise RunCancelled("stopped by user")
    rec = store.get(cancelled.run_id)
    assert rec.status == "cancelled" and "stopped by user" in rec.error
    store.fail(handle.run_id, "later", status="cancelled")
    assert store.get(handle.run_id).status == "cancelled"
    with pytest.raises(ConfigError):
        store.fail(handle.run_id, "x", status="done")


def test_unknown_run_and_delete(store: RunStore) -> None:
    keep, drop = _finish_one(store), _finish_one(store)
    assert store.delete([drop, "nope"]) == 1
    assert [r.run_id for r in store.list()] == [keep]
    with pytest.raises(ConfigError, match="no run with id 'nope'"):
        store.get("nope")
    with pytest.raises(ConfigError):
        store.finish("nope", {}, [], {})


def test_json_encoding_of_numpy_torch_and_non_finite(store: RunStore) -> None:
    metrics = {
        "np_float": np.float32(0.25),
        "np_int": np.int64(3),
        "np_arr": np.arange(3),
        "t_scalar": torch.tensor(1.5),
        "t_vec": torch.tensor([1.0, float("nan")]),
        "nan": float("nan"),
        "inf": float("inf"),
        "flag": np.bool_(True),
        "path": Path("a"),
    }
    run_id = store.start("tiny", "minmax", 8, 8, {"w": np.float64(2.0)})
    store.finish(run_id, metrics, [{"mse": torch.tensor(float("inf"))}], {})
    rec = store.get(run_id)
    assert rec.metrics == {
        "np_float": 0.25,
        "np_int": 3,
        "np_arr": [0, 1, 2],
        "t_scalar": 1.5,
        "t_vec": [1.0, None],
        "nan": None,
        "inf": None,
        "flag": True,
        "path": "a",
    }
    assert rec.layers == [{"mse": None}] and rec.config == {"w": 2.0}
    assert to_jsonable((1, {2: math.inf})) == [1, {"2": None}]


def test_exports_parse_back(store: RunStore) -> None:
    a, b = _finish_one(store), _finish_one(store)
    running = store.start("tiny", "mse", 4, 8, {})
    data = json.loads(store.export_json([a, b]))
    assert [d["run_id"] for d in data] == [a, b] and data[0]["metrics"]["top1"] == 0.75
    rows = list(csv.DictReader(io.StringIO(store.export_csv())))
    assert [r["run_id"] for r in rows] == [running, b, a]
    assert list(rows[0])[:7] == ["run_id", "created", "status", "model", "method", "wbits", "abits"]
    assert rows[1]["top1"] == "0.75" and rows[1]["sqnr.mean"] == "30.5"
    assert rows[0]["top1"] == "" and rows[0]["seconds"] == ""
    assert float(rows[1]["seconds"]) >= 0 and "T" in rows[1]["created"]


def test_env_var_relocates_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "nested" / "home"
    monkeypatch.setenv("PTQ_EXPLORER_HOME", str(home))
    assert default_store_path() == home / "runs.sqlite"
    store = RunStore()
    assert store.path == home / "runs.sqlite" and store.path.is_file()
    monkeypatch.delenv("PTQ_EXPLORER_HOME")
    assert default_store_path().name == "runs.sqlite"
    assert default_store_path().parent != home


def test_concurrent_writes_from_threads(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.sqlite")
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            own = RunStore(store.path) if worker % 2 else store  # shared and separate stores
            for _ in range(5):
                with own.run("tiny", f"m{worker}", 8, 8, {"worker": worker}) as handle:
                    handle.finish({"worker": worker}, [], {})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    runs = store.list(status="done")
    assert len(runs) == 20
    assert sorted(r.metrics["worker"] for r in runs) == sorted(list(range(4)) * 5)


def test_corrupt_file_gives_clear_error_and_is_untouched(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    content = b"this is not a database, just some text\n" * 20
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        RunStore(path)
    assert str(path) in str(info.value) and "PTQ_EXPLORER_HOME" in str(info.value)
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.sqlite"]


def test_foreign_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    content = path.read_bytes()
    with pytest.raises(ConfigError, match="another program"):
        RunStore(path)
    assert path.read_bytes() == content


def test_run_without_finish_is_marked_failed(store: RunStore) -> None:
    with store.run("tiny", "minmax", 8, 8, {}) as handle:
        pass
    rec = store.get(handle.run_id)
    assert rec.status == "failed" and "finish() was not called" in rec.error


# -- schema 3: owners, and runs whose process died ------------------------------------------


def test_owner_is_stored_filtered_and_guards_delete(store: RunStore) -> None:
    mine = store.start("m", "rtn", 4, 4, {}, owner="alice")
    theirs = store.start("m", "rtn", 4, 4, {}, owner="bob")
    assert store.get(mine).owner == "alice" and store.get(theirs).owner == "bob"
    assert [r.run_id for r in store.list(owner="alice")] == [mine]
    assert store.delete([theirs], owner="alice") == 0  # not alice's: kept
    assert store.get(theirs).owner == "bob"
    assert store.delete([mine, theirs], owner="alice") == 1
    assert [r.run_id for r in store.list()] == [theirs]
    assert store.delete([theirs]) == 1  # no owner given: the command line may delete any


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _set(store: RunStore, run_id: str, **values) -> None:
    with sqlite3.connect(store.path) as conn:
        sets = ", ".join(f"{k} = ?" for k in values)
        conn.execute(f"UPDATE runs SET {sets} WHERE run_id = ?", (*values.values(), run_id))


def test_a_run_whose_process_died_is_interrupted(store: RunStore) -> None:
    import os
    import time

    live = store.start("m", "rtn", 4, 4, {}, spec={"model": "m"})
    dead = store.start("m", "rtn", 4, 4, {}, spec={"model": "m"})
    rec = store.get(live)
    assert (rec.pid, rec.status) == (os.getpid(), "running") and rec.host and rec.heartbeat
    _set(store, dead, pid=_dead_pid())  # like kill -9 of the process that ran it
    by_id = {r.run_id: r for r in store.list()}
    assert by_id[live].status == "running"  # this process is alive
    assert by_id[dead].status == "interrupted" and by_id[dead].finished is not None
    assert "ended without finishing" in by_id[dead].error and by_id[dead].spec == {"model": "m"}
    assert [r.run_id for r in store.list(status="interrupted")] == [dead]
    # a run on another host is interrupted only when its heartbeat is stale
    other = store.start("m", "rtn", 4, 4, {})
    _set(store, other, host="elsewhere", pid=1)
    assert store.get(other).status == "running"
    _set(store, other, heartbeat=time.time() - 10_000)
    assert store.get(other).status == "interrupted" and "heartbeat" in store.get(other).error


def test_the_heartbeat_thread_keeps_a_run_alive(store: RunStore, monkeypatch) -> None:
    import ptq_core.store as store_mod

    monkeypatch.setattr(store_mod, "HEARTBEAT_S", 0.05)
    with store.run("m", "rtn", 4, 4, {}) as handle:
        first = store.get(handle.run_id).heartbeat
        wait_until(lambda: store.get(handle.run_id).heartbeat > first, timeout=30, what="a later heartbeat")
        handle.finish({}, [], {})
    assert store.get(handle.run_id).status == "done"


def test_a_version_2_store_gets_the_owner_columns(tmp_path: Path) -> None:
    import time

    path = tmp_path / "runs.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (2)")
    conn.execute("""CREATE TABLE runs (run_id TEXT PRIMARY KEY, created REAL NOT NULL, finished REAL,
        status TEXT NOT NULL, model TEXT NOT NULL, method TEXT NOT NULL, wbits INTEGER NOT NULL,
        abits INTEGER NOT NULL, config TEXT NOT NULL, metrics TEXT NOT NULL, layers TEXT NOT NULL,
        timings TEXT NOT NULL, env TEXT NOT NULL, error TEXT, extras TEXT NOT NULL,
        spec TEXT NOT NULL DEFAULT '{}', label TEXT NOT NULL DEFAULT '')""")
    row = "(?, ?, NULL, ?, 'm', 'rtn', 4, 4, '{}', '{}', '[]', '{}', '{}', NULL, '{}', '{}', '')"
    conn.execute(f"INSERT INTO runs VALUES {row}", ("done1", 1.0, "done"))
    conn.execute(f"INSERT INTO runs VALUES {row}", ("old-running", time.time() - 3600, "running"))
    conn.commit()
    conn.close()
    store = RunStore(path)
    assert sqlite3.connect(path).execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    old = store.get("done1")
    assert (old.status, old.owner, old.pid, old.host) == ("done", "", None, "")
    assert store.get("old-running").status == "interrupted"  # no process, no heartbeat for an hour
    new = store.start("m", "rtn", 2, 2, {}, owner="carol")
    assert store.get(new).owner == "carol"

"""The run store: every PTQ run, with its config, metrics and per-layer table, in SQLite.

The CLI and the app both write here, and read back to list, compare and reload runs.
Each operation opens its own short-lived connection, so a store can be shared with
worker threads. A file that is not SQLite is never deleted or overwritten.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import platform
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import platformdirs

from ptq_core.errors import ConfigError, PTQError, RunCancelled

__all__ = [
    "SCHEMA_VERSION",
    "STATUSES",
    "RunRecord",
    "RunHandle",
    "RunStore",
    "default_store_path",
    "environment",
    "to_jsonable",
]

SCHEMA_VERSION = 4  # 2: description (spec), bits label; 3: owner, pid, host, heartbeat; 4: sweep, cell
STATUSES = ("running", "done", "failed", "cancelled", "interrupted")
HEARTBEAT_S = 30.0  # a running run's process touches its row this often
STALE_S = 180.0  # a "running" run silent this long (and not provably alive) is interrupted
_HOME_VAR = "PTQ_EXPLORER_HOME"
_SQLITE_MAGIC = b"SQLite format 3\x00"
_JSON_FIELDS = ("config", "metrics", "layers", "timings", "env", "extras", "spec")
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, created REAL NOT NULL, finished REAL,
    status TEXT NOT NULL, model TEXT NOT NULL, method TEXT NOT NULL,
    wbits INTEGER NOT NULL, abits INTEGER NOT NULL,
    config TEXT NOT NULL, metrics TEXT NOT NULL, layers TEXT NOT NULL,
    timings TEXT NOT NULL, env TEXT NOT NULL, error TEXT, extras TEXT NOT NULL,
    spec TEXT NOT NULL DEFAULT '{}', label TEXT NOT NULL DEFAULT '',
    owner TEXT NOT NULL DEFAULT '', pid INTEGER, host TEXT NOT NULL DEFAULT '', heartbeat REAL,
    sweep TEXT NOT NULL DEFAULT '', cell TEXT NOT NULL DEFAULT '')""",
    "CREATE INDEX IF NOT EXISTS runs_created ON runs (created)",
)
_INDEXES = ("CREATE INDEX IF NOT EXISTS runs_sweep ON runs (sweep)",)
# columns added by each schema version, for stores written by an older one
_ADDED = {
    2: ("spec TEXT NOT NULL DEFAULT '{}'", "label TEXT NOT NULL DEFAULT ''"),
    3: ("owner TEXT NOT NULL DEFAULT ''", "pid INTEGER", "host TEXT NOT NULL DEFAULT ''", "heartbeat REAL"),
    4: ("sweep TEXT NOT NULL DEFAULT ''", "cell TEXT NOT NULL DEFAULT ''"),
}


def default_store_path() -> Path:
    """Where the run store lives by default.

    Returns:
        ``$PTQ_EXPLORER_HOME/runs.sqlite`` if the variable is set, else
        ``runs.sqlite`` in the platform's user data folder for "ptq-explorer".
    """
    home = os.environ.get(_HOME_VAR)
    folder = Path(home).expanduser() if home else Path(platformdirs.user_data_dir("ptq-explorer"))
    return folder / "runs.sqlite"


def environment() -> dict[str, Any]:
    """Describe the software and hardware a run executes on.

    Returns:
        Python, torch and torchvision versions, platform, CPU count and CUDA device name.
    """
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": _package_version("torch"),
        "torchvision": _package_version("torchvision"),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cuda_device": None,
    }
    with suppress(Exception):  # a broken CUDA setup must not stop a run
        import torch

        if torch.cuda.is_available():
            env["cuda_device"] = torch.cuda.get_device_name(0)
    return env


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def to_jsonable(obj: Any) -> Any:
    """Convert ``obj`` to plain JSON types (dict, list, str, int, float, bool, None).

    Numpy/torch scalars and arrays become Python numbers and lists, non-finite floats
    become None, dataclasses become dicts, anything else unknown becomes ``str``.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if callable(getattr(obj, "tolist", None)):  # numpy and torch scalars/arrays
        return to_jsonable(obj.tolist())
    return str(obj)  # Path, enum members, ...


def _dumps(obj: Any) -> str:
    return json.dumps(to_jsonable(obj), allow_nan=False, sort_keys=False)


@dataclasses.dataclass
class RunRecord:
    """One PTQ run as stored: identity, settings, results and where it ran.

    `spec` is the run's description (`ptq_core.spec.RunSpec.to_dict()`; empty for runs
    stored before descriptions existed), `config` its method settings, `label` the bits it
    really used (``W2A2``, or ``W2A2 + 6 overrides, 2.6 bits avg``), and `extras` what the
    run recorded beside metrics and layers, the method's own under ``extras["method"]``.
    `owner` is who started it (an app user or session; empty for the command line and older
    stores); `pid`, `host` and `heartbeat` say which process runs it and when it last said
    so, which tells a live run from one whose process died ("interrupted").
    `sweep` and `cell` name the sweep the run is a cell of and the cell's key (empty otherwise).
    """

    run_id: str
    created: float
    finished: float | None
    status: str
    model: str
    method: str
    wbits: int
    abits: int
    config: dict = dataclasses.field(default_factory=dict)
    metrics: dict = dataclasses.field(default_factory=dict)
    layers: list[dict] = dataclasses.field(default_factory=list)
    timings: dict = dataclasses.field(default_factory=dict)
    env: dict = dataclasses.field(default_factory=dict)
    error: str | None = None
    extras: dict = dataclasses.field(default_factory=dict)
    spec: dict = dataclasses.field(default_factory=dict)
    label: str = ""
    owner: str = ""
    pid: int | None = None
    host: str = ""
    heartbeat: float | None = None
    sweep: str = ""
    cell: str = ""

    @property
    def bits_label(self) -> str:
        """The effective bits (the stored label, else ``W{wbits}A{abits}``)."""
        return self.label or f"W{self.wbits}A{self.abits}"

    @property
    def seconds(self) -> float | None:
        """Wall time from start to finish, or None while running."""
        return None if self.finished is None else self.finished - self.created

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a plain, JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def _from_row(cls, row: sqlite3.Row) -> RunRecord:
        return cls(**{k: json.loads(row[k]) if k in _JSON_FIELDS else row[k] for k in _COLUMNS})

    def _to_row(self) -> list[Any]:
        return [_dumps(v) if k in _JSON_FIELDS else v for k, v in vars(self).items()]


_COLUMNS = tuple(field.name for field in dataclasses.fields(RunRecord))


class RunHandle:
    """A running run, as yielded by :meth:`RunStore.run`."""

    def __init__(self, store: RunStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.finished = False

    def finish(
        self, metrics: dict, layers: list[dict], timings: dict, extras: dict | None = None, label: str | None = None
    ) -> None:
        """Record the results and mark the run "done" (see :meth:`RunStore.finish`)."""
        self.store.finish(self.run_id, metrics, layers, timings, extras, label)
        self.finished = True


class RunStore:
    """SQLite store of PTQ runs.

    Args:
        path: Database file; defaults to :func:`default_store_path`. Its folder is
            created if missing.

    Raises:
        ConfigError: If the file exists but is not a run store database.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_store_path()
        self._check_file()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._init_schema()

    # -- connection and schema ------------------------------------------------------

    def _not_a_store(self, reason: str) -> ConfigError:
        return ConfigError(
            f"run store {self.path} is unusable ({reason}); it was left untouched. "
            f"Move it away, or set {_HOME_VAR} to another folder to use a new store there."
        )

    def _check_file(self) -> None:
        if self.path.is_dir():
            raise self._not_a_store("it is a folder")
        if self.path.is_file() and self.path.stat().st_size > 0:
            with self.path.open("rb") as fh:
                if fh.read(len(_SQLITE_MAGIC)) != _SQLITE_MAGIC:
                    raise self._not_a_store("not an SQLite database")

    @contextmanager
    def _connect(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """Open a connection for one transaction (IMMEDIATE when writing)."""
        self._check_file()
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.rollback()
            if type(exc) is sqlite3.DatabaseError:  # "file is not a database", "malformed"
                raise self._not_a_store(str(exc)) from exc
            raise
        finally:
            conn.close()

    def _init_schema(self) -> None:
        with self._connect(write=False) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            tables = {row[0] for row in rows}
        if tables and "runs" not in tables:
            raise self._not_a_store("an SQLite database of another program")
        try:
            with sqlite3.connect(self.path, timeout=30) as conn:
                conn.execute("PRAGMA journal_mode = WAL")
            conn.close()
        except sqlite3.OperationalError:
            pass  # WAL is an optimisation; another process may hold a lock right now
        except sqlite3.DatabaseError as exc:
            raise self._not_a_store(str(exc)) from exc
        with self._connect() as conn:
            for statement in _SCHEMA:
                conn.execute(statement)
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            if row[0] is None:
                conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            elif row[0] > SCHEMA_VERSION:
                raise self._not_a_store(f"schema version {row[0]} is newer than this program's")
            elif row[0] < SCHEMA_VERSION:
                self._upgrade(conn, row[0])
            for statement in _INDEXES:
                conn.execute(statement)

    @staticmethod
    def _upgrade(conn: sqlite3.Connection, version: int) -> None:
        """Add the columns of the later schema versions; stored runs are kept as they are."""
        have = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
        for v in range(version + 1, SCHEMA_VERSION + 1):
            for column in _ADDED.get(v, ()):
                if column.split()[0] not in have:
                    conn.execute(f"ALTER TABLE runs ADD COLUMN {column}")
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    # -- writing --------------------------------------------------------------------

    def start(
        self,
        model: str,
        method: str,
        wbits: int,
        abits: int,
        config: dict,
        spec: dict | None = None,
        owner: str = "",
    ) -> str:
        """Insert a "running" run of this process and return its id (`spec`: the run's description,
        `owner`: who started it)."""
        now = time.time()
        record = RunRecord(
            run_id=uuid.uuid4().hex[:12],
            created=now,
            finished=None,
            status="running",
            model=str(model),
            method=str(method),
            wbits=int(wbits),
            abits=int(abits),
            config=config,
            env=environment(),
            spec=spec or {},
            owner=str(owner),
            pid=os.getpid(),
            host=socket.gethostname(),
            heartbeat=now,
        )
        with self._connect() as conn:
            conn.execute(
                f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})", record._to_row()
            )
        return record.run_id

    def add(self, record: RunRecord) -> RunRecord:
        """Insert a run recorded elsewhere (a sweep's worker) as it is; returns it.

        Raises:
            ConfigError: If a run with its id is already stored.
        """
        with self._connect() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (record.run_id,)).fetchone():
                raise ConfigError(f"run {record.run_id!r} is already in the run store")
            conn.execute(
                f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})", record._to_row()
            )
        return record

    def finish(
        self,
        run_id: str,
        metrics: dict,
        layers: list[dict],
        timings: dict,
        extras: dict | None = None,
        label: str | None = None,
    ) -> None:
        """Store the results of run ``run_id`` and mark it "done" (`label`: its effective bits)."""
        values = {"label": label} if label is not None else {}
        self._update(
            run_id,
            status="done",
            finished=time.time(),
            metrics=_dumps(metrics),
            layers=_dumps(layers),
            timings=_dumps(timings),
            extras=_dumps(extras or {}),
            **values,
        )

    def fail(self, run_id: str, error: str, status: str = "failed") -> None:
        """Mark run ``run_id`` as "failed" (or "cancelled") with a one-line error."""
        if status not in ("failed", "cancelled"):
            raise ConfigError(f"fail() status must be 'failed' or 'cancelled', not {status!r}")
        self._update(run_id, status=status, finished=time.time(), error=_one_line(error))

    def _update(self, run_id: str, **values: Any) -> None:
        sets = ", ".join(f"{name} = ?" for name in values)
        with self._connect() as conn:
            cur = conn.execute(f"UPDATE runs SET {sets} WHERE run_id = ?", (*values.values(), run_id))
            if cur.rowcount == 0:
                raise _unknown(run_id)

    def delete(self, run_ids: Iterable[str], owner: str | None = None) -> int:
        """Delete runs by id and return how many rows went away (only `owner`'s runs when given)."""
        ids = [(run_id,) for run_id in run_ids]
        sql = "DELETE FROM runs WHERE run_id = ?" + ("" if owner is None else " AND owner = ?")
        with self._connect() as conn:
            before = conn.total_changes
            conn.executemany(sql, ids if owner is None else [(i, owner) for (i,) in ids])
            return conn.total_changes - before

    def beat(self, run_id: str) -> None:
        """Record that the process running ``run_id`` is alive (the run's heartbeat)."""
        with self._connect() as conn:
            conn.execute("UPDATE runs SET heartbeat = ? WHERE run_id = ? AND status = 'running'", (time.time(), run_id))

    def mark_interrupted(self, stale_s: float = STALE_S) -> list[str]:
        """Mark "running" runs whose process is gone as "interrupted"; return their ids.

        A run is gone when it was started on this host by a process that no longer exists,
        or when its heartbeat is older than `stale_s` (another host, or a reused pid after
        a restart). Runs of live processes on this host are never touched.
        """
        with self._connect(write=False) as conn:
            rows = conn.execute(
                "SELECT run_id, pid, host, heartbeat, created FROM runs WHERE status = 'running'"
            ).fetchall()
        here, now = socket.gethostname(), time.time()
        gone = []
        for row in rows:
            local = row["host"] == here and row["pid"] is not None
            alive = _pid_alive(row["pid"]) if local else True
            last = row["heartbeat"] if row["heartbeat"] is not None else row["created"]
            stale = now - last > stale_s and not (local and alive and row["pid"] == os.getpid())
            if not alive or stale:
                gone.append((row["run_id"], row["pid"], row["host"] or "an unknown host", not alive))
        for run_id, pid, host, dead in gone:
            why = (
                f"the process running it (pid {pid} on {host}) ended without finishing"
                if dead
                else f"no heartbeat for over {stale_s:.0f} s from pid {pid} on {host}"
            )
            with self._connect() as conn:
                conn.execute(
                    "UPDATE runs SET status = 'interrupted', finished = ?, error = ? WHERE run_id = ? "
                    "AND status = 'running'",
                    (now, f"interrupted: {why}", run_id),
                )
        return [g[0] for g in gone]

    @contextmanager
    def run(
        self,
        model: str,
        method: str,
        wbits: int,
        abits: int,
        config: dict,
        spec: dict | None = None,
        owner: str = "",
    ) -> Iterator[RunHandle]:
        """Record a run around a block of code.

        The block calls ``handle.finish(...)``. If it raises, the run is marked
        "failed" (or "cancelled" for RunCancelled / KeyboardInterrupt) and the
        exception propagates. A block that ends without calling ``finish`` leaves a
        "failed" run saying so. While the block runs, a daemon thread refreshes the
        run's heartbeat every `HEARTBEAT_S` seconds.
        """
        handle = RunHandle(self, self.start(model, method, wbits, abits, config, spec, owner))
        stop = threading.Event()
        beater = threading.Thread(
            target=self._beat_until, args=(handle.run_id, stop), daemon=True, name=f"ptq-heartbeat-{handle.run_id}"
        )
        beater.start()
        try:
            yield handle
        except BaseException as exc:
            cancelled = isinstance(exc, (RunCancelled, KeyboardInterrupt))
            if not handle.finished:
                with suppress(PTQError, sqlite3.Error):  # never hide the run's own error
                    self.fail(handle.run_id, _describe(exc), "cancelled" if cancelled else "failed")
            raise
        finally:
            stop.set()
        if not handle.finished:
            self.fail(handle.run_id, "run ended without results (finish() was not called)")

    def _beat_until(self, run_id: str, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_S):
            with suppress(PTQError, sqlite3.Error):  # a busy store must not stop the run
                self.beat(run_id)

    # -- reading --------------------------------------------------------------------

    def get(self, run_id: str) -> RunRecord:
        """Return run ``run_id``; raises ConfigError if there is none."""
        self.mark_interrupted()
        with self._connect(write=False) as conn:
            row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise _unknown(run_id)
        return RunRecord._from_row(row)

    def list(
        self,
        status: str | None = None,
        model: str | None = None,
        method: str | None = None,
        limit: int | None = None,
        owner: str | None = None,
        sweep: str | None = None,
    ) -> list[RunRecord]:
        """Return runs newest first, optionally filtered (`sweep`: the cells of one sweep) and capped at ``limit``.

        Runs whose process died are marked "interrupted" first (see :meth:`mark_interrupted`).
        """
        self.mark_interrupted()
        filters = {"status": status, "model": model, "method": method, "owner": owner, "sweep": sweep}
        where = [f"{name} = ?" for name, value in filters.items() if value is not None]
        params: list[Any] = [value for value in filters.values() if value is not None]
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY created DESC, rowid DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._connect(write=False) as conn:
            rows = conn.execute(sql, params).fetchall()
        return [RunRecord._from_row(row) for row in rows]

    def sweeps(self) -> list[dict[str, Any]]:
        """The sweeps in the store, newest first: ``{sweep, runs, done, failed, created}``."""
        sql = (
            "SELECT sweep, COUNT(*) AS runs, SUM(status = 'done') AS done, SUM(status = 'failed') AS failed, "
            "MAX(created) AS created FROM runs WHERE sweep != '' GROUP BY sweep ORDER BY created DESC"
        )
        with self._connect(write=False) as conn:
            return [dict(row) for row in conn.execute(sql).fetchall()]

    def _records(self, run_ids: Iterable[str] | None) -> list[RunRecord]:
        return self.list() if run_ids is None else [self.get(rid) for rid in run_ids]

    def export_json(self, run_ids: Iterable[str] | None = None) -> str:
        """Return the given runs (all if None) as a JSON list of record dicts."""
        return json.dumps([rec.to_dict() for rec in self._records(run_ids)], indent=2)

    def export_csv(self, run_ids: Iterable[str] | None = None) -> str:
        """Return the given runs (all if None) as CSV, one row per run.

        Columns: run_id, created (ISO 8601, UTC), status, model, method, wbits, abits, bits (the
        effective bits label), error, every scalar metric, every scalar of the run's description
        as ``spec.a.b`` (the method's settings included), the whole description as JSON, seconds.
        """
        records = self._records(run_ids)
        base = ["run_id", "created", "status", "model", "method", "wbits", "abits", "bits", "error"]
        flat = [_flat_scalars(rec.metrics) for rec in records]
        specs = [_flat_scalars(rec.spec or {"method": rec.config}, "spec.") for rec in records]
        metric_keys = list(dict.fromkeys(key for row in flat for key in row))
        spec_keys = list(dict.fromkeys(key for row in specs for key in row))
        names = [f"metrics.{k}" if k in base + ["seconds"] else k for k in metric_keys]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(base + names + spec_keys + ["spec_json", "seconds"])
        for rec, metrics, spec in zip(records, flat, specs, strict=True):
            created = datetime.fromtimestamp(rec.created, timezone.utc).isoformat()
            fixed = [
                rec.run_id,
                created,
                rec.status,
                rec.model,
                rec.method,
                rec.wbits,
                rec.abits,
                rec.bits_label,
                rec.error or "",
            ]
            seconds = "" if rec.seconds is None else rec.seconds
            writer.writerow(
                fixed
                + [metrics.get(k, "") for k in metric_keys]
                + [spec.get(k, "") for k in spec_keys]
                + [_dumps(rec.spec or {"method": rec.config}), seconds]
            )
        return out.getvalue()


def _flat_scalars(metrics: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(_flat_scalars(value, f"{prefix}{key}."))
        elif value is None or isinstance(value, (bool, int, float, str)):
            flat[f"{prefix}{key}"] = value
    return flat


def _pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (one we may not signal counts as alive)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _one_line(text: str, limit: int = 500) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _unknown(run_id: str) -> ConfigError:
    return ConfigError(f"no run with id {run_id!r} in the run store")

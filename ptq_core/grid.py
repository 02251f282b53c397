"""Grids of runs: a base run description and the settings to vary, expanded into cells.

A grid file (JSON, or YAML when PyYAML is installed) holds::

    {"name": "rtn-bits",                       # the sweep's id (default: the file's name)
     "base": {"model": "fmnist-resnet20", "method": "rtn", "calib": 64, "eval_limit": 500},
     "axes": {"method": ["rtn", "qdrop"], "wbits": [2, 4], "seed": [0, 1]}}

`base` is either a stored run description (``runs show ID --spec``: its ``method`` is an
object) or flat values: the run's own fields (model, weights, data, device, eval_limit,
error_samples, cat), ``method``, ``preset`` and any setting of the quantization or of the
method, by the names `make_config` takes. Every axis is such a name with a list of values;
the cells are their product, in the order written. Settings that vary together are one axis
whose values are objects, under any axis name: ``"bits": [{"wbits": 4, "abits": 4},
{"wbits": 2, "abits": 2}]``. A setting that the cell's method does
not have (``iters`` for rtn) is left out of that cell, and cells that come out the same
are run once.

    >>> grid = Grid.from_dict({"base": {"method": "rtn", "calib": 32}, "axes": {"wbits": [2, 4]}}, "g")
    >>> [c.key for c in grid.cells()]
    ['wbits=2', 'wbits=4']
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cat.options import CATOptions
from .errors import ConfigError
from .methods import METHODS
from .prepare import QuantSpec
from .settings import settings
from .spec import RunSpec, make_config

__all__ = ["Cell", "Grid", "load_grid", "RUN_FIELDS"]

RUN_FIELDS = ("model", "weights", "data", "device", "eval_limit", "error_samples", "cat")
_GRID_KEYS = {"name", "base", "axes"}


@dataclass(frozen=True)
class Cell:
    """One run of a grid: its key (``method=rtn wbits=2 seed=0``), axis values and description."""

    key: str
    values: dict[str, Any]
    spec: RunSpec


def _method_names(method: str) -> set[str]:
    """The flat setting names `make_config(method, ...)` accepts."""
    cls = METHODS[method][0]
    return {s.name for s in settings(QuantSpec)} | {s.name for s in settings(cls)} - {"quant"} | {"preset"}


def _all_names() -> set[str]:
    return set(RUN_FIELDS) | {"method"} | set().union(*(_method_names(m) for m in METHODS))


def _flatten(base: dict[str, Any]) -> dict[str, Any]:
    """Flat values of a base: a stored description's method object becomes its settings."""
    if not isinstance(base.get("method"), dict):
        return dict(base)
    spec = RunSpec.from_dict(base)
    method = spec.method.to_dict()
    quant = method.pop("quant")
    method.pop("version", None)
    flat = {k: getattr(spec, k) for k in RUN_FIELDS} | method | quant
    flat["cat"] = None if spec.cat is None else spec.cat.to_dict()
    return flat


@dataclass
class Grid:
    """A sweep: `name`, flat `base` values and `axes` (setting name -> values)."""

    name: str
    base: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, list[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError("a grid needs a non-empty name")
        known = _all_names()
        for name, values in self.axes.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"axis {name!r} needs a non-empty list of values")
            linked = all(isinstance(v, dict) for v in values)
            names = set().union(*values) if linked else {name}
            if names - known:
                raise ConfigError(f"axis {name!r}: {', '.join(sorted(names - known))} is not a run setting")
        unknown = set(self.base) - known
        if unknown:
            raise ConfigError(f"{', '.join(sorted(unknown))}: not a run setting")
        self.cells()  # every cell must make a valid description

    @classmethod
    def from_dict(cls, d: dict[str, Any], default_name: str = "sweep") -> Grid:
        """A grid from a parsed file; `default_name` when it names none."""
        if not isinstance(d, dict):
            raise ConfigError("a grid must be an object with 'base' and 'axes'")
        unknown = set(d) - _GRID_KEYS
        if unknown:
            raise ConfigError(f"unknown grid key(s): {', '.join(sorted(unknown))} (a grid has name, base, axes)")
        base = d.get("base") or {}
        if not isinstance(base, dict):
            raise ConfigError("the grid's base must be an object")
        return cls(str(d.get("name") or default_name), _flatten(base), dict(d.get("axes") or {}))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: name, base, axes."""
        return {"name": self.name, "base": self.base, "axes": self.axes}

    def cells(self) -> list[Cell]:
        """The cells in axis order (the first axis varies slowest), duplicates dropped."""
        names = list(self.axes)
        cells: list[Cell] = []
        seen: set[str] = set()
        for combo in itertools.product(*(self.axes[n] for n in names)):
            values: dict[str, Any] = {}
            for name, value in zip(names, combo, strict=True):
                values.update(value if isinstance(value, dict) else {name: value})
            cell = self._cell(values)
            ident = json.dumps(cell.spec.to_dict(), sort_keys=True)
            if ident not in seen:
                seen.add(ident)
                cells.append(cell)
        return cells

    def _cell(self, values: dict[str, Any]) -> Cell:
        merged = self.base | values
        method = merged.pop("method", "rtn")
        if method not in METHODS:
            raise ConfigError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
        own = _method_names(method)
        run = {k: merged.pop(k) for k in RUN_FIELDS if k in merged}
        applied = {k: v for k, v in values.items() if k in own or k in RUN_FIELDS or k == "method"}
        config = make_config(method, **{k: v for k, v in merged.items() if k in own})
        if isinstance(run.get("cat"), bool):
            run["cat"] = CATOptions() if run["cat"] else None
        try:
            spec = RunSpec(method=config, **run)
        except TypeError as exc:
            raise ConfigError(f"cell {applied}: {exc}") from None
        key = " ".join(f"{k}={_show(v)}" for k, v in applied.items()) or "base"
        return Cell(key, applied, spec)


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def load_grid(path: str | Path, name: str | None = None) -> Grid:
    """Read a grid file (``.json``, ``.yaml`` / ``.yml``); `name` overrides the one in the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    data = _parse(text, path.suffix.lower())
    grid = Grid.from_dict(data, default_name=path.stem)
    return dataclasses.replace(grid, name=name) if name else grid


def _parse(text: str, suffix: str) -> Any:
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError("YAML grids need PyYAML (pip install pyyaml); or write the grid as JSON") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"not a valid YAML grid: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not a valid JSON grid: {exc}") from None

"""What block-wise reconstruction will do with a model: its units, distribution correction, KL path.

`units_report` prepares the model (float, nothing calibrated), finds its units
(`find_units`), and for each unit says whether PD-Quant's distribution correction has
BatchNorm to correct toward and which way the KL term's rest of the network will run
(checked on a few calibration images, exactly as a run checks it). Used by
``python -m ptq_core units``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .blocks import UnitPlan, find_units
from .data import calibration_tensor, load_data
from .models import load_model
from .modules import set_quant_state
from .prepare import QuantSpec, prepare
from .recon.capture import module_input_output
from .recon.correction import bn_layers
from .recon.prepare_cache import NO_BN, float_unit
from .recon.tail import TailRunner

__all__ = ["UnitLine", "UnitsReport", "units_report", "format_units_report"]


@dataclass
class UnitLine:
    """One unit: name, kind, class, layers, what DC would do, which KL path it takes."""

    name: str
    kind: str
    block_type: str
    layers: list[str]
    dc: str
    kl_path: str


@dataclass
class UnitsReport:
    """The units of one model and how they were found."""

    model: str
    plan: UnitPlan
    units: list[UnitLine] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@torch.no_grad()
def units_report(
    model_name: str,
    weights: str | None = None,
    data: str = "fmnist-sample",
    source: str = "graph",
    patterns: list[str] | None = None,
    images: int = 4,
) -> UnitsReport:
    """The units of a model as a run would see them.

    Args:
        model_name: Zoo name, torchvision name or ``file.py:factory``.
        weights: State-dict file (required for ``file.py:factory``).
        data: Data set the example images come from.
        source: Unit source ("graph", "blocks" or "layers").
        patterns: Module-name patterns that override the units.
        images: Example images used to trace and to check the KL tails.

    Returns:
        A `UnitsReport`.
    """
    loaded = load_model(model_name, weights)
    x = calibration_tensor(load_data(data, loaded.transform), images)
    qmodel, report = prepare(loaded.model, QuantSpec(), x)
    set_quant_state(qmodel, False, False)
    plan = find_units(qmodel, x[:2], source, patterns)
    tails = TailRunner(qmodel, [u.name for u in plan.units])
    folded = dict(report.folded)
    out = UnitsReport(model_name, plan)
    for u in plan.units:
        block = float_unit(loaded.model, u.name, folded)
        dc = NO_BN if block is None else f"corrects toward {len(bn_layers(block))} BatchNorm layer(s)"
        _, y = module_input_output(qmodel, u.name, x, output=True)
        tails(u.name, x, y, tails.capture_skips(u.name, x, len(x)))
        out.units.append(UnitLine(u.name, u.kind, u.block_type, list(u.layers), dc, tails.path(u.name)))
    return out


def format_units_report(rep: UnitsReport) -> str:
    """A plain-text table of the report."""
    p = rep.plan
    asked = f" (asked for {p.requested})" if p.source != p.requested else ""
    lines = [f"{rep.model}: {len(rep.units)} units from {p.source}{asked}"]
    if p.fallback:
        lines.append(f"fallback: {p.fallback}")
    lines += [f"note: {n}" for n in p.notes]
    width = max([len(u.name) for u in rep.units] + [4])
    lines.append(
        f"{'#':>3}  {'unit':{width}}  {'kind':6}{'class':26}{'layers':>6}  {'distribution correction':42}KL path"
    )
    for i, u in enumerate(rep.units):
        lines.append(
            f"{i:>3}  {u.name:{width}}  {u.kind:6}{u.block_type[:25]:26}{len(u.layers):>6}  {u.dc:42}{u.kl_path}"
        )
    return "\n".join(lines)

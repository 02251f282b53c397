"""Export a stored run: ONNX (QDQ) checked in onnxruntime, the integer checkpoint, the encodings.

`export_run(record, fmt, path)` rebuilds the run (`ptq_core.rebuild`), writes the artefact and
checks it: the ONNX file runs in onnxruntime on the run's own test subset and its top-1 must
match the stored one; the integer checkpoint is loaded back and must give bit-identical logits.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .data import make_loader
from .errors import ConfigError
from .export import encodings, export_onnx, load_int_checkpoint, onnx_parity, save_int_checkpoint
from .methods import ProgressFn
from .rebuild import RebuiltRun, rebuild_run
from .store import RunRecord, to_jsonable

__all__ = ["FORMATS", "ExportReport", "export_run", "write_artifact"]

FORMATS = ("onnx", "int", "encodings")
SUFFIX = {"onnx": ".onnx", "int": ".int.safetensors", "encodings": ".encodings.json"}


@dataclass
class ExportReport:
    """What was written and how it compares with the stored run."""

    run_id: str
    format: str
    path: str
    size_bytes: int
    stored_top1: float
    rebuilt_top1: float
    checks: dict[str, Any] = field(default_factory=dict)
    passed: bool = True

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return to_jsonable(asdict(self))

    def lines(self) -> list[str]:
        """A short human-readable report."""
        out = [
            f"run {self.run_id}: {self.format} written to {self.path} ({self.size_bytes / 1024:.0f} KiB)",
            f"stored top-1 {self.stored_top1:.2f}, rebuilt {self.rebuilt_top1:.2f}",
        ]
        out += [f"{k}: {v}" for k, v in self.checks.items()]
        out.append("check passed" if self.passed else "CHECK FAILED")
        return out


def _logits(model: torch.nn.Module, loader: Any, device: torch.device) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x.to(device)).float().cpu() for x, _ in loader])


def write_artifact(
    rebuilt: RebuiltRun, fmt: str, path: str | Path, opset: int | None = None, atol: float = 0.5
) -> ExportReport:
    """Write `fmt` of a rebuilt run to `path` and check it (see the module docstring).

    `atol`: the largest logit difference accepted between onnxruntime and PyTorch (a grid-boundary
    flip of one activation moves a logit by about one step; see benchmarks/EXPORT_RESULTS.md).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    model, spec, device = rebuilt.quantized.model, rebuilt.spec, rebuilt.device
    path = Path(path)
    loader = make_loader(rebuilt.bundle.test, limit=spec.eval_limit)
    example = next(iter(loader))[0][:2].to(device)
    checks: dict[str, Any] = {}
    passed = True
    stored = float(rebuilt.record.metrics["top1"])
    if fmt == "onnx":
        export_onnx(model, example, path, **({"opset": opset} if opset else {}))
        report = onnx_parity(path, loader, _logits(model, loader, device), atol=atol)
        ort_top1 = 100.0 * (report.onnx_top1 or 0.0)  # the report holds a fraction
        checks = {
            "onnxruntime top-1": round(ort_top1, 4),
            "top-1 agreement": report.agreement,
            "max logit diff": report.max_abs_diff,
            "mean logit diff": report.mean_abs_diff,
            "test images": report.samples,
        }
        # tolerance: the parity report's, and at most one test image's worth of top-1
        passed = report.passed and abs(ort_top1 - stored) <= 100.0 / max(report.samples, 1) + 1e-9
    elif fmt == "int":
        save_int_checkpoint(model, path)
        loaded = load_int_checkpoint(path, rebuilt.loaded.model, example)
        x = next(iter(make_loader(rebuilt.bundle.test, batch_size=256)))[0].to(device)
        with torch.no_grad():
            same = bool(torch.equal(loaded(x), model(x)))
        checks = {"reloaded logits bit-identical (256 test images)": same}
        passed = same
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(to_jsonable(encodings(model)), indent=1))
    return ExportReport(
        rebuilt.record.run_id,
        fmt,
        str(path),
        path.stat().st_size,
        stored,
        float(rebuilt.result.metrics["top1"]),
        checks,
        passed,
    )


def export_run(
    record: RunRecord, fmt: str, path: str | Path, progress: ProgressFn | None = None, opset: int | None = None
) -> ExportReport:
    """Rebuild a stored run (it must reproduce its stored top-1) and write `fmt` to `path`, checked."""
    return write_artifact(rebuild_run(record, progress), fmt, path, opset)

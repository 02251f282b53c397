"""ONNX (QDQ) export and integer checkpoints of every zoo model: parity, sizes, CPU latency.

Usage: python benchmarks/export.py [--models ...] [--settings ...] [--eval 2000] [--calib 256] [--out FILE]

For each model and setting (method + bit-widths) it quantizes once, then on the first
``--eval`` test images of fmnist-sample compares the PyTorch fake-quant model with the
exported ONNX file run by onnxruntime (CPU provider): top-1 of each, their top-1
agreement, the share of images whose logits all agree within 1e-4, and the largest and
mean logit differences (an activation within float noise of a grid midpoint can round
the other way in onnxruntime, which moves that image's logits by a grid step). It also records the ONNX and
integer-checkpoint file sizes, checks that the checkpoint reloads bit-identically, and
times both at batch 64 on one thread. Prints a Markdown table (and writes it to
``--out`` if given); each row is printed as soon as it is done.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = ["fmnist-resnet20", "fmnist-mobilenetv2", "fmnist-repvgg-deploy", "fmnist-vit"]
# name -> (method, wbits, abits)
SETTINGS = {
    "rtn-w8a8": ("rtn", 8, 8),
    "rtn-w4a4": ("rtn", 4, 4),
    "rtn-w2a4": ("rtn", 2, 4),
    "gptq-w4": ("gptq", 4, 32),
    "qdrop-w4a4": ("qdrop", 4, 4),
    "pdquant-w4a4": ("pdquant", 4, 4),
}
COLUMNS = [
    "model",
    "setting",
    "PyTorch top-1",
    "ONNX top-1",
    "top-1 agreement",
    "rows within 1e-4",
    "max logit diff",
    "mean logit diff",
    "ONNX KiB",
    "int ckpt KiB",
    "float KiB",
    "ckpt bit-identical",
    "ms/img PyTorch",
    "ms/img ORT",
]
HEADER = "| " + " | ".join(COLUMNS) + " |\n" + "|---" * len(COLUMNS) + "|"


def config_for(setting: str, calib: int, iters: int):
    """The method config of a setting (reconstruction methods: fast preset with `iters` steps)."""
    from ptq_core import QuantSpec
    from ptq_core.methods import GPTQConfig, PDQuantConfig, QDropConfig, RTNConfig

    method, wbits, abits = SETTINGS[setting]
    quant = QuantSpec(wbits=wbits, abits=abits)
    if method == "rtn":
        return RTNConfig(quant=quant, calib=calib)
    if method == "gptq":
        return GPTQConfig(quant=quant, calib=calib)
    cls = {"qdrop": QDropConfig, "pdquant": PDQuantConfig}[method]
    return cls.from_preset("fast", quant=quant, iters=iters, calib=calib)


def timed_logits(fn, batches) -> tuple:
    """Logits of every batch through `fn`, and seconds per image."""
    import torch

    outs, t0 = [], time.perf_counter()
    for x in batches:
        outs.append(fn(x))
    n = sum(len(x) for x in batches)
    return torch.cat(outs), (time.perf_counter() - t0) / n


def run_cell(model_name: str, setting: str, args: argparse.Namespace, work: Path) -> str:
    """Quantize, export, compare and time one (model, setting); returns its table row."""
    import torch

    from ptq_core import calibration_tensor, load_data, load_model, quantize
    from ptq_core.export import export_onnx, load_int_checkpoint, onnx_logits, onnx_session, save_int_checkpoint

    data = load_data("fmnist-sample")
    model = load_model(model_name).model
    calib = calibration_tensor(data, args.calib)
    images, labels = data.test.tensors[0][: args.eval], data.test.tensors[1][: args.eval]
    batches = list(images.split(64))
    qmodel = quantize(model, calib, config_for(setting, args.calib, args.iters)).model.eval()
    with torch.no_grad():
        qmodel(batches[0])  # warm-up
        ref, pt_s = timed_logits(qmodel, batches)
    onnx_path = export_onnx(qmodel, images[:2], work / f"{model_name}-{setting}.onnx")
    session = onnx_session(onnx_path, threads=1)
    onnx_logits(session, batches[:1])  # warm-up
    got, ort_s = timed_logits(lambda x: onnx_logits(session, x)[0], batches)
    ckpt = save_int_checkpoint(qmodel, work / f"{model_name}-{setting}.safetensors")
    loaded = load_int_checkpoint(ckpt, model, calib[:2])
    with torch.no_grad():
        same = all(torch.equal(loaded(x), qmodel(x)) for x in batches[:4])
    diff = (got - ref).abs()
    rows_close = 100 * float((diff.max(1).values <= 1e-4).float().mean())
    float_kib = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 1024

    def top1(z: torch.Tensor) -> str:
        return f"{100 * float((z.argmax(1) == labels).float().mean()):.2f}"

    cells = [
        model_name,
        setting,
        top1(ref),
        top1(got),
        f"{100 * float((got.argmax(1) == ref.argmax(1)).float().mean()):.2f} %",
        f"{rows_close:.2f} %",
        f"{float(diff.max()):.2e}",
        f"{float(diff.mean()):.1e}",
        f"{onnx_path.stat().st_size / 1024:.0f}",
        f"{ckpt.stat().st_size / 1024:.0f}",
        f"{float_kib:.0f}",
        "yes" if same else "NO",
        f"{1000 * pt_s:.2f}",
        f"{1000 * ort_s:.2f}",
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument(
        "--settings", nargs="+", default=["rtn-w8a8", "rtn-w4a4", "rtn-w2a4", "gptq-w4"], choices=list(SETTINGS)
    )
    parser.add_argument("--eval", type=int, default=2000, help="first N test images (10000 = all)")
    parser.add_argument("--calib", type=int, default=256)
    parser.add_argument("--iters", type=int, default=100, help="steps per unit for qdrop / pdquant")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this Markdown file")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows = [HEADER]
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for model_name in args.models:
            for setting in args.settings:
                try:
                    row = run_cell(model_name, setting, args, Path(tmp))
                except Exception as exc:  # noqa: BLE001 - one failing cell must not lose the others
                    row = f"| {model_name} | {setting} | failed: {type(exc).__name__}: {exc} |"
                rows.append(row)
                print(row, flush=True)
    if args.out:
        args.out.write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()

"""Integer checkpoints: bit-packed weight codes plus qparams in one safetensors file.

`save_int_checkpoint(qmodel, path)` writes, per quantized layer ``L``:

- ``L.weight.codes``: the integer codes packed at their bit-width (`packing`), with
  ``L.weight.scale`` (float32) and ``L.weight.zero_point`` (int32), per channel;
  a multipoint weight stores its packed ``[P, C, d]`` point codes, ``L.weight.coeffs``
  and ``L.weight.points`` instead;
- ``L.input.scale`` / ``L.input.zero_point`` for a calibrated input quantizer;
- every other tensor of the model's state_dict (biases, float weights of unquantized
  layers, norms, a CAT correction's tables) as ``float.<key>``;

and a JSON header (safetensors metadata key ``ptq_int_checkpoint``) listing each layer
with its schemes, observers, shapes and on/off switches.

`load_int_checkpoint(path, float_model, example)` needs only the *architecture*
(`float_model`, whose weights are not used) and one input batch (`example`, to trace
it): it prepares the model as `ptq_core.prepare.prepare` does (with and without
BatchNorm folding, and for a re-parameterisable model also with its branches merged
as RepAPQ does, keeping the one whose layers and tensors match the file), installs the saved
quantizers (a `CodeQuantizer` holding the codes, or a `MultipointQuantizer`), sets each
quantized weight to its dequantized codes and loads the remaining tensors. Its logits
are bit-identical to the saved model's.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..cat.module import CATCorrected
from ..errors import CheckpointError, ConfigError
from ..fake_quant import FakeQuantize
from ..layerwise.quantizers import CodeQuantizer, MultipointQuantizer
from ..modules import QuantLayer, quant_layers
from ..prepare import QuantSpec, prepare
from ..qscheme import QScheme
from ..quantizer import AffineQuantizer, Quantizer
from ..reparam import merge_branches, rep_blocks
from .grid import act_grid, weight_codes, weight_quantized
from .packing import pack_codes, unpack_codes

__all__ = ["FORMAT", "save_int_checkpoint", "load_int_checkpoint", "read_int_checkpoint"]

FORMAT = "ptq-int-checkpoint/1"
_META_KEY = "ptq_int_checkpoint"


def _quantizer_entry(fq: Quantizer, key: str, tensors: dict[str, Tensor], on: bool) -> dict[str, Any]:
    """Scheme, observer and switch (`on`: the layer's for that side) of a quantizer; its qparams go
    into `tensors` under `key`."""
    entry = {
        "scheme": fq.scheme.to_dict(),
        "observer": fq.observer_name,
        "enabled": on,
        "calibrated": isinstance(fq, AffineQuantizer) and fq.is_calibrated and not fq.scheme.is_float,
    }
    if entry["calibrated"]:
        tensors[f"{key}.scale"] = fq.scale.detach().float().cpu().contiguous().clone()
        tensors[f"{key}.zero_point"] = fq.zero_point.detach().round().to(torch.int32).cpu().contiguous()
    return entry


def _weight_entry(name: str, layer: QuantLayer, tensors: dict[str, Tensor]) -> dict[str, Any]:
    fq, key = layer.weight_quantizer, f"{name}.weight"
    if layer.quant_weight and isinstance(fq, MultipointQuantizer):
        tensors[f"{key}.codes"] = pack_codes(fq.codes, fq.bits, True)
        tensors[f"{key}.coeffs"] = fq.coeffs.detach().float().cpu().contiguous().clone()
        tensors[f"{key}.points"] = fq.points.detach().cpu().contiguous().clone()
        return {"form": "multipoint", "bits": fq.bits, "codes_shape": list(fq.codes.shape)}
    if weight_quantized(layer):
        codes, grid = weight_codes(name, layer)
        tensors[f"{key}.codes"] = pack_codes(codes, grid.bits, grid.signed)
        tensors[f"{key}.scale"] = grid.scale.contiguous()
        tensors[f"{key}.zero_point"] = grid.zero_point.round().to(torch.int32).contiguous()
        return {"form": "affine", "scheme": fq.scheme.to_dict(), "observer": fq.observer_name}
    return {"form": "float", **_quantizer_entry(fq, key, tensors, layer.quant_weight)}


def _covered(key: str, name: str, coded: bool) -> bool:
    """Whether a layer's entry already holds state-dict `key` (its quantizers; its weight when coded)."""
    quantizers = (f"{name}.weight_quantizer.", f"{name}.act_quantizer.")
    return key.startswith(quantizers) or (coded and key == f"{name}.weight")


def save_int_checkpoint(qmodel: nn.Module, path: str | Path) -> Path:
    """Write the integer checkpoint of a quantized model (see the module docstring).

    Args:
        qmodel: A quantized model (`QuantResult.model`), optionally a `CATCorrected`.
        path: Target ``.safetensors`` file (parent folders are created).

    Returns:
        The path written.

    Raises:
        ExportError: If a quantized weight is neither on an affine grid nor multipoint, or an
            input quantizer is not the plain affine fake-quantizer.
    """
    from safetensors.torch import save_file

    tensors: dict[str, Tensor] = {}
    layers, coded = [], {}
    with torch.no_grad():
        for name, layer in quant_layers(qmodel):
            weight = _weight_entry(name, layer, tensors)
            act_grid(name, layer)  # refuses an input quantizer that is not the plain affine one
            act = _quantizer_entry(layer.act_quantizer, f"{name}.input", tensors, layer.quant_act)
            layers.append(
                {
                    "name": name,
                    "kind": type(layer).__name__,
                    "quant_weight": layer.quant_weight,
                    "quant_act": layer.quant_act,
                    "weight_shape": list(layer.weight.shape),
                    "weight": weight,
                    "input": act,
                }
            )
            coded[name] = weight["form"] != "float"
        for key, t in qmodel.state_dict().items():
            if not any(_covered(key, name, c) for name, c in coded.items()):
                tensors[f"float.{key}"] = t.detach().cpu().contiguous().clone()
    meta = {"format": FORMAT, "cat": isinstance(qmodel, CATCorrected), "layers": layers}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={_META_KEY: json.dumps(meta)})
    return path


def read_int_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors and the JSON header of an integer checkpoint.

    Raises:
        CheckpointError: If the file is missing, unreadable or not an integer checkpoint.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get(_META_KEY, "null"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - OSError, bad JSON, or safetensors' own error type
        raise CheckpointError(f"cannot read integer checkpoint {path}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} file")
    return tensors, meta


def _fresh_quantizer(entry: dict[str, Any], key: str, tensors: dict[str, Tensor], device: torch.device) -> FakeQuantize:
    fq = FakeQuantize(QScheme.from_dict(entry["scheme"]), entry["observer"]).to(device)
    if entry["calibrated"]:
        fq.set_qparams(tensors[f"{key}.scale"], tensors[f"{key}.zero_point"].float())
    fq.observe = False
    return fq


def _install_weight(layer: QuantLayer, name: str, entry: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    """Put the saved weight quantizer on `layer` and set its weight to the dequantized codes."""
    key, dev, shape = f"{name}.weight", layer.weight.device, layer.weight.shape
    if entry["form"] == "float":
        layer.weight_quantizer = _fresh_quantizer(entry, key, tensors, dev)
        return
    if entry["form"] == "multipoint":
        codes = unpack_codes(tensors[f"{key}.codes"], entry["bits"], True, entry["codes_shape"])
        q: Quantizer = MultipointQuantizer(
            entry["bits"], codes.to(dev), tensors[f"{key}.coeffs"].to(dev), tensors[f"{key}.points"].to(dev), shape
        )
    else:
        scheme = QScheme.from_dict(entry["scheme"])
        codes = unpack_codes(tensors[f"{key}.codes"], scheme.bits, scheme.signed, shape).float()
        base = FakeQuantize(scheme, entry["observer"])
        q = CodeQuantizer(
            base, codes.to(dev), tensors[f"{key}.scale"].to(dev), tensors[f"{key}.zero_point"].float().to(dev)
        )
    layer.weight_quantizer = q
    with torch.no_grad():
        layer.weight.copy_(q(layer.weight))


def _float_state(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k.removeprefix("float."): t for k, t in tensors.items() if k.startswith("float.")}


def _expected_keys(model: nn.Module, coded: dict[str, bool]) -> set[str]:
    return {k for k in model.state_dict() if not any(_covered(k, n, c) for n, c in coded.items())}


def _skeleton(float_model: nn.Module, example: Tensor, meta: dict[str, Any], tensors: dict[str, Tensor]) -> nn.Module:
    """The prepared model (BatchNorm folded or not, whichever matches the file), CAT-wrapped if saved so."""
    names = [entry["name"] for entry in meta["layers"]]
    coded = {entry["name"]: entry["weight"]["form"] != "float" for entry in meta["layers"]}
    saved = set(_float_state(tensors))
    archs = [float_model] + ([merge_branches(float_model, example)] if rep_blocks(float_model) else [])
    for arch, fold in itertools.product(archs, (True, False)):
        spec = QuantSpec(wbits=8, abits=8, first_last_bits=None, fold_bn=fold)
        base, _ = prepare(arch, spec, example)
        model = CATCorrected(base) if meta["cat"] else base
        if [n for n, _ in quant_layers(model)] != names:
            continue
        layers = dict(quant_layers(model))
        for name in names:  # a folded affine may have given a bias-free layer a bias
            if f"{name}.bias" in saved and layers[name].bias is None:
                layers[name].bias = nn.Parameter(torch.zeros(layers[name].weight.shape[0]), requires_grad=False)
        if _expected_keys(model, coded) == saved:
            return model
    raise CheckpointError("the integer checkpoint does not fit this architecture (layers or tensors differ)")


def load_int_checkpoint(path: str | Path, float_model: nn.Module, example: Tensor) -> nn.Module:
    """Rebuild the fake-quant model saved by `save_int_checkpoint`; its logits are bit-identical.

    Args:
        path: The ``.safetensors`` file.
        float_model: The float architecture the checkpoint was made from (its weights are
            not used; every tensor comes from the file). It is not modified.
        example: One input batch on the model's device, to trace the model while preparing it.

    Returns:
        The quantized model in eval mode, quantization switched as saved.

    Raises:
        CheckpointError: If the file is not an integer checkpoint or does not fit `float_model`.
    """
    tensors, meta = read_int_checkpoint(path)
    model = _skeleton(float_model, example, meta, tensors)
    layers = dict(quant_layers(model))
    try:
        for entry in meta["layers"]:
            layer, name = layers[entry["name"]], entry["name"]
            _install_weight(layer, name, entry["weight"], tensors)
            layer.act_quantizer = _fresh_quantizer(entry["input"], f"{name}.input", tensors, layer.weight.device)
            # files written while quantizers had their own switch ("enabled") may have it off
            on_w = entry["quant_weight"] and entry["weight"].get("enabled", True)
            layer.set_quant_state(on_w, entry["quant_act"] and entry["input"].get("enabled", True))
        model.load_state_dict(_float_state(tensors), strict=False)
    except (KeyError, RuntimeError, ConfigError) as exc:
        raise CheckpointError(f"integer checkpoint {path} is inconsistent: {exc}") from None
    return model.eval()

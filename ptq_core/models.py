"""Models by name: the project's Fashion-MNIST zoo, torchvision ImageNet models, or your own.

- Zoo: `fmnist-resnet20`, `fmnist-mobilenetv2`, `fmnist-repvgg` (train-time
  branches), `fmnist-repvgg-deploy` (fused), `fmnist-vit` (1x28x28) and
  `fmnist-resnet18` (torchvision's ResNet-18 at 3x64x64); weights in `assets/`.
- torchvision: `resnet18`, `resnet50`, `mobilenet_v2`, `regnet_x_400mf`,
  `mnasnet1_0`, `vit_b_16` with their default pretrained weights when cached or
  downloadable; offline with no cached file, the error names the file and where to put it.
- Your own: `path/to/file.py:factory` plus a weights file, or a zoo name plus a weights file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoints import apply_state_dict, load_factory, load_state_dict
from .data import ASSETS_DIR, Resize
from .errors import ConfigError, DataError, ModelNotFoundError, WeightsUnavailableError
from .zoo import ZOO_ARCHS, ZOO_INPUTS

__all__ = [
    "ModelEntry",
    "LoadedModel",
    "TORCHVISION_MODELS",
    "list_models",
    "load_model",
    "resolve_device",
    "model_card",
    "check_model_data",
    "zoo_transform",
    "zoo_checkpoint",
    "SHARD_BYTES",
]

TORCHVISION_MODELS = ("resnet18", "resnet50", "mobilenet_v2", "regnet_x_400mf", "mnasnet1_0", "vit_b_16")
_ZOO_NAMES = (*ZOO_ARCHS, "fmnist-repvgg-deploy")


@dataclass
class ModelEntry:
    """A loadable model and where its weights stand."""

    name: str
    source: str  # "zoo", "torchvision" or "custom"
    status: str  # "ready", "cached", "not cached", "missing"
    detail: str = ""
    data: str = "fmnist-sample"
    card: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedModel:
    """A float model in eval mode plus what is needed to feed it."""

    model: nn.Module
    entry: ModelEntry
    transform: Callable | None = None


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else CPU; `cuda` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("CUDA was asked for but no GPU is available; use --device cpu or auto")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"unknown device {device!r}: use auto, cpu or cuda")
    return torch.device(device)


def model_card(name: str) -> dict[str, Any]:
    """The zoo model card (architecture, recipe, float accuracy), or {} if absent."""
    path = ASSETS_DIR / f"{name.removesuffix('-deploy')}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


SHARD_BYTES = 10 * 2**20  # a zoo checkpoint above this is stored in shards (repository files stay small)


def zoo_checkpoint(name: str) -> list[Path]:
    """The checkpoint file(s) of a zoo model: `<name>.safetensors`, or its shards `<name>-k-of-n.safetensors`."""
    base = name.removesuffix("-deploy")
    single = ASSETS_DIR / f"{base}.safetensors"
    return [single] if single.is_file() else sorted(ASSETS_DIR.glob(f"{base}-*-of-*.safetensors"))


def _zoo_entry(name: str) -> ModelEntry:
    files = zoo_checkpoint(name)
    ckpt = ASSETS_DIR / f"{name.removesuffix('-deploy')}.safetensors"
    detail = ", ".join(map(str, files)) or f"{ckpt} is missing; rebuild with `python tools/train_zoo.py`"
    return ModelEntry(name, "zoo", "ready" if files else "missing", detail, "fmnist-sample", model_card(name))


def zoo_transform(name: str) -> Resize | None:
    """How Fashion-MNIST tensors are resized for a zoo model (None: it takes them as they are)."""
    if name not in ZOO_INPUTS:
        return None
    channels, size, _ = ZOO_INPUTS[name]
    return Resize(size, channels)


def _tv_weights(name: str):
    from torchvision.models import get_model_weights

    return get_model_weights(name).DEFAULT


def _tv_cache_file(name: str) -> Path:
    url = _tv_weights(name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _tv_entry(name: str) -> ModelEntry:
    path = _tv_cache_file(name)
    if path.is_file():
        return ModelEntry(name, "torchvision", "cached", str(path), "imagefolder")
    note = f"downloads {_tv_weights(name).url} to {path} on first use (needs network)"
    return ModelEntry(name, "torchvision", "not cached", note, "imagefolder")


def list_models() -> list[ModelEntry]:
    """Every named model and its weights' status."""
    return [_zoo_entry(n) for n in _ZOO_NAMES] + [_tv_entry(n) for n in TORCHVISION_MODELS]


def _load_torchvision(name: str) -> LoadedModel:
    import torchvision

    weights = _tv_weights(name)
    path = _tv_cache_file(name)
    try:
        model = torchvision.models.get_model(name, weights=weights)
    except Exception as exc:  # offline, or a truncated download
        raise WeightsUnavailableError(
            f"pretrained weights for {name} are not cached and could not be downloaded ({type(exc).__name__}); "
            f"download {weights.url} and put it at {path}"
        ) from None
    return LoadedModel(model.eval(), _tv_entry(name), weights.transforms())


def load_model(name: str, weights: str | Path | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a float model by name (see the module docstring), in eval mode on `device`.

    Args:
        name: Zoo name, torchvision name, or `file.py:factory`.
        weights: A state_dict file (safetensors, or a torch file loaded with
            `weights_only=True`); required for `file.py:factory`, optional for zoo names.
        device: Target device.
    """
    device = torch.device(device) if not isinstance(device, torch.device) else device
    if name in _ZOO_NAMES:
        deploy = name.endswith("-deploy")
        arch = ZOO_ARCHS[name.removesuffix("-deploy")]
        entry = _zoo_entry(name)
        model = arch()
        if weights is None and entry.status == "missing":
            raise WeightsUnavailableError(entry.detail)
        sources = [weights] if weights else zoo_checkpoint(name)
        apply_state_dict(model, {k: v for source in sources for k, v in load_state_dict(source).items()})
        model.eval()
        if deploy:
            model.reparameterize()
        return LoadedModel(model.to(device), entry, zoo_transform(name))
    if name in TORCHVISION_MODELS:
        if weights is not None:
            import torchvision

            model = torchvision.models.get_model(name, weights=None)
            apply_state_dict(model, load_state_dict(weights))
            return LoadedModel(
                model.eval().to(device),
                ModelEntry(name, "torchvision", "custom weights", str(weights)),
                _tv_weights(name).transforms(),
            )
        loaded = _load_torchvision(name)
        loaded.model.to(device)
        return loaded
    if ":" in name and name.split(":", 1)[0].endswith(".py"):
        if weights is None:
            raise WeightsUnavailableError(f"{name} needs a weights file (--weights path.safetensors)")
        model = load_factory(name)()
        apply_state_dict(model, load_state_dict(weights))
        return LoadedModel(model.eval().to(device), ModelEntry(name, "custom", "ready", str(weights)))
    raise ModelNotFoundError(
        f"unknown model {name!r}: choose one of {', '.join(_ZOO_NAMES + TORCHVISION_MODELS)}, or path/file.py:factory"
    )


def check_model_data(loaded: LoadedModel, data: Any) -> None:
    """Refuse a model and data set that do not fit: image type, channels, size, number of classes.

    One test image goes through the model (no gradients, the model is not changed).

    Args:
        loaded: The float model.
        data: Its `ptq_core.data.DataBundle`.

    Raises:
        DataError: With what the model takes and what the data gives.
    """
    name, where = loaded.entry.name, data.name
    try:
        x = data.test[0][0]
    except Exception as exc:  # noqa: BLE001 - an unreadable file in the user's folder
        raise DataError(f"reading the first test image of {where} failed ({type(exc).__name__}: {exc})") from None
    if not isinstance(x, torch.Tensor):
        raise DataError(
            f"{name} cannot use {where}: the data gives {type(x).__name__} images and this model has no "
            "image transform (zoo models take 28×28 grayscale Fashion-MNIST tensors). Use Fashion-MNIST "
            "data with it, or a torchvision model with ImageFolder data."
        )
    device = next(iter(loaded.model.parameters()), torch.empty(0)).device
    try:
        with torch.no_grad():
            out = loaded.model(x.unsqueeze(0).to(device))
    except Exception as exc:  # noqa: BLE001 - a shape error from inside the model
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"{name} cannot take the images of {where} (one image is {' × '.join(map(str, x.shape))}, "
            f"channels × height × width): {first}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise DataError(
            f"{name} should return class scores (batch × classes); it returned "
            f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}"
        )
    if out.shape[1] < len(data.classes):
        raise DataError(f"{name} scores {out.shape[1]} classes but {where} has {len(data.classes)}")

"""Safe loading and saving of weights, and user model factories.

Checkpoints are sniffed by content, never by extension: safetensors files are read
with ``safetensors`` (no code can run), PyTorch ``.pt``/``.pth`` files with
``torch.load(weights_only=True)``. A file that would need code to load is refused
with the names of the classes it asks for; there is no fallback to
``weights_only=False``. The architecture always comes from our code: the user picks
a model, then :func:`apply_state_dict` checks keys and shapes before touching it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import io
import os
import pickle
import pickletools
import re
import sys
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import safetensors.torch
import torch
from torch import nn

from ptq_core.errors import CheckpointError, ConfigError, NonFiniteError, UnsafeCheckpointError

__all__ = [
    "load_state_dict",
    "check_finite",
    "apply_state_dict",
    "save_state_dict",
    "load_factory",
    "file_sha256",
]

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
_MAX_TABLE_ROWS = 40
StateDict = dict[str, torch.Tensor]


# -- loading ----------------------------------------------------------------------------


def load_state_dict(source: str | Path | bytes, name: str | None = None) -> StateDict:
    """Load a state dict from a file or bytes without running code from it.

    Args:
        source: A path, or the raw bytes of an uploaded file.
        name: Name to use in messages (defaults to the file name, or "upload").

    Returns:
        Tensor names mapped to CPU tensors, with wrappers ("state_dict", "model")
        and a DataParallel "module." prefix removed.

    Raises:
        UnsafeCheckpointError: The file needs classes or functions to load.
        CheckpointError: Missing, empty, corrupt, or not a mapping of tensors.
    """
    label = name or (Path(source).name if not isinstance(source, bytes) else "upload")
    head, size = _head(source, label)
    if size == 0:
        raise CheckpointError(f"{label} is empty")
    if _is_safetensors(head, size):
        obj: Any = _load_safetensors(source, label)
    elif head.startswith(b"PK") or head.startswith(b"\x80"):
        obj = _load_torch(source, label)
    else:
        raise CheckpointError(
            f"{label} is not a checkpoint: expected a .safetensors file or a PyTorch .pt/.pth state_dict"
        )
    return _as_state_dict(obj, label)


def _head(source: str | Path | bytes, label: str) -> tuple[bytes, int]:
    """Return the first 16 bytes and the total size of ``source``."""
    if isinstance(source, bytes):
        return source[:16], len(source)
    path = Path(source)
    if not path.is_file():
        raise CheckpointError(f"{label}: no such file ({path})")
    with path.open("rb") as fh:
        return fh.read(16), path.stat().st_size


def _is_safetensors(head: bytes, size: int) -> bool:
    """8-byte little-endian header length, then a JSON header starting with "{"."""
    if len(head) < 9:
        return False
    header_len = int.from_bytes(head[:8], "little")
    return 0 < header_len <= size - 8 and head[8:9] == b"{"


def _load_safetensors(source: str | Path | bytes, label: str) -> StateDict:
    try:
        if isinstance(source, bytes):
            return safetensors.torch.load(source)
        return safetensors.torch.load_file(str(source), device="cpu")
    except Exception as exc:  # noqa: BLE001 - SafetensorError and friends
        raise CheckpointError(f"{label} is a corrupt safetensors file ({_first_line(exc)})") from None


def _open(source: str | Path | bytes) -> IO[bytes]:
    return io.BytesIO(source) if isinstance(source, bytes) else Path(source).open("rb")


def _load_torch(source: str | Path | bytes, label: str) -> Any:
    try:
        with _open(source) as fh, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            return torch.load(fh, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = _unsafe_globals(source, str(exc))
        if unsafe:
            raise UnsafeCheckpointError(
                f"refused to load {label}: it needs code to load ({', '.join(unsafe)}); "
                "save a state_dict (model.state_dict()) or a .safetensors file instead"
            ) from None
        raise CheckpointError(f"{label} could not be read ({_first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - EOFError, RuntimeError, struct.error, ...
        raise CheckpointError(f"{label} is corrupt or truncated ({_first_line(exc)})") from None


def _unsafe_globals(source: str | Path | bytes, message: str) -> list[str]:
    """Name the globals a refused pickle asks for, without unpickling it."""
    found: list[str] = []
    try:
        with _open(source) as fh:
            if fh.read(2) == b"PK":
                fh.seek(0)
                found = torch.serialization.get_unsafe_globals_in_checkpoint(fh)
            else:
                fh.seek(0)
                found = sorted(_legacy_globals(fh) - _allowed_globals())
    except Exception:  # noqa: BLE001 - a best-effort scan for the message only
        found = []
    if not found:  # fall back on torch's own message ("Unsupported global: GLOBAL x.y")
        found = re.findall(r"GLOBAL ([\w.]+)", message)
    return sorted(set(found))


def _allowed_globals() -> set[str]:
    """Globals torch's weights-only unpickler accepts (private API, best effort)."""
    try:
        from torch import _weights_only_unpickler as wou

        return set(wou._get_allowed_globals()) | set(wou._get_user_allowed_globals())
    except Exception:  # noqa: BLE001
        return set()


def _legacy_globals(fh: IO[bytes], max_pickles: int = 5) -> set[str]:
    """Statically list GLOBAL / STACK_GLOBAL names in a legacy (non-zip) torch file."""
    found: set[str] = set()
    for _ in range(max_pickles):  # magic, protocol, sys info, object, storage keys
        try:
            found |= _pickle_globals(pickletools.genops(fh))
        except Exception:  # noqa: BLE001 - raw storage bytes follow the pickles
            break
    return found


def _pickle_globals(ops: Iterator[tuple[Any, Any, int | None]]) -> set[str]:
    found: set[str] = set()
    strings: list[Any] = []  # recent pushes, for STACK_GLOBAL's two string operands
    memo: dict[Any, Any] = {}
    for op, arg, _pos in ops:
        if op.name == "GLOBAL":  # protocol <= 3 names builtins "__builtin__"
            found.add(str(arg).replace(" ", ".").replace("__builtin__.", "builtins."))
        elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
            found.add(f"{strings[-2]}.{strings[-1]}")
        elif isinstance(arg, str) and "UNICODE" in op.name:
            strings.append(arg)
        elif op.name == "MEMOIZE" and strings:
            memo[len(memo)] = strings[-1]
        elif op.name in ("BINPUT", "LONG_BINPUT", "PUT") and strings:
            memo[arg] = strings[-1]
        elif op.name in ("BINGET", "LONG_BINGET", "GET"):
            strings.append(memo.get(arg))
    return found


def _as_state_dict(obj: Any, label: str) -> StateDict:
    """Unwrap common containers, strip "module.", and check it maps str to Tensor."""
    if isinstance(obj, Mapping) and not _is_tensor_map(obj):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping) and _is_tensor_map(obj[key]):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not _is_tensor_map(obj):
        raise CheckpointError(
            f"{label} does not hold a state_dict (a non-empty mapping of names to tensors); found {type(obj).__name__}"
        )
    sd = dict(obj)
    if all(key.startswith("module.") for key in sd):
        sd = {key[len("module.") :]: value for key, value in sd.items()}
    return sd


def _is_tensor_map(obj: Mapping) -> bool:
    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _first_line(exc: BaseException) -> str:
    """``"Type: first sentence of the message"`` (or just the type)."""
    text = str(exc).strip()
    kind = type(exc).__name__
    return f"{kind}: {text.splitlines()[0].split('. ')[0][:200]}" if text else kind


# -- checking and applying ---------------------------------------------------------------


def check_finite(state_dict: Mapping[str, torch.Tensor]) -> None:
    """Refuse NaN or infinite values in floating-point tensors.

    Raises:
        NonFiniteError: Names the first bad tensor and how many values are bad.
    """
    for key, tensor in state_dict.items():
        if not (tensor.is_floating_point() or tensor.is_complex()):
            continue
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise NonFiniteError(f"tensor {key!r} has {bad} non-finite value(s) (NaN or inf) out of {tensor.numel()}")


def apply_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load ``state_dict`` into ``model`` after checking it fits; on error the model is unchanged.

    Raises:
        NonFiniteError: A tensor holds NaN or inf.
        CheckpointError: Keys are missing or unexpected, or shapes differ; the
            message is a one-line summary followed by a table.
    """
    check_finite(state_dict)
    problems = _mismatches(model.state_dict(), state_dict)
    if problems:
        raise CheckpointError(_mismatch_message(problems))
    state = OrderedDict(state_dict)
    # Without torch's per-module versions (a safetensors file, a plain dict), the file is read as
    # written by this architecture's current code: modules that check their version on load
    # (torchvision's MNASNet) refuse a state_dict that has none.
    state._metadata = getattr(state_dict, "_metadata", None) or model.state_dict()._metadata
    model.load_state_dict(state, strict=True)


def _mismatches(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]
) -> list[tuple[str, str, str, str]]:
    """Rows of (key, expected shape, found shape, problem)."""
    rows = []
    for key in list(expected) + [k for k in found if k not in expected]:
        want = tuple(expected[key].shape) if key in expected else None
        got = tuple(found[key].shape) if key in found else None
        if want is None:
            rows.append((key, "-", str(got), "unexpected"))
        elif got is None:
            rows.append((key, str(want), "-", "missing"))
        elif want != got:
            rows.append((key, str(want), str(got), "shape mismatch"))
    return rows


def _mismatch_message(rows: list[tuple[str, str, str, str]]) -> str:
    counts = {p: sum(r[3] == p for r in rows) for p in ("missing", "unexpected", "shape mismatch")}
    summary = ", ".join(f"{n} {p}" for p, n in counts.items() if n)
    table = [("key", "expected shape", "found shape", "problem")] + rows[:_MAX_TABLE_ROWS]
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() for r in table]
    if len(rows) > _MAX_TABLE_ROWS:
        lines.append(f"... and {len(rows) - _MAX_TABLE_ROWS} more")
    return f"checkpoint does not fit the model ({summary})\n" + "\n".join(lines)


# -- saving, hashing ---------------------------------------------------------------------


def save_state_dict(model_or_sd: nn.Module | Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """Save weights as a .safetensors file (written to a temp file, then renamed).

    Tensors are moved to the CPU and made contiguous; tensors that share memory
    (tied weights) are cloned, since safetensors refuses shared storage.

    Returns:
        The path written.
    """
    sd = model_or_sd.state_dict() if isinstance(model_or_sd, nn.Module) else model_or_sd
    if not _is_tensor_map(sd):
        raise CheckpointError("save_state_dict needs a module or a mapping of names to tensors")
    tensors, seen = {}, set()
    for key, tensor in sd.items():
        tensor = tensor.detach().to("cpu").contiguous()
        storage = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
        if storage[0] and storage in seen:
            tensor = tensor.clone()
        seen.add(storage)
        tensors[key] = tensor
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        safetensors.torch.save_file(tensors, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def file_sha256(path: str | Path) -> str:
    """Return the hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    try:
        with Path(path).open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return digest.hexdigest()


# -- user model factories ----------------------------------------------------------------


def load_factory(spec: str) -> Callable[[], nn.Module]:
    """Import ``path/to/file.py:name`` and return a builder of the model it defines.

    ``name`` is a function or class in that file that takes no arguments and returns
    an ``nn.Module``. Note: this runs the file's code, so only use your own files.

    Raises:
        ConfigError: Bad spec, missing file, import failure, missing attribute,
            or a factory that needs arguments. The returned callable raises
            ConfigError if the factory does not return an ``nn.Module``.
    """
    file_part, sep, attr = spec.rpartition(":")
    if not sep or not file_part or not attr.isidentifier():
        raise ConfigError(f"model factory {spec!r} must look like path/to/file.py:name")
    path = Path(file_part).expanduser()
    if not path.is_file():
        raise ConfigError(f"model factory file {path} does not exist")
    factory = getattr(_import_file(path), attr, None)
    if factory is None or not callable(factory):
        raise ConfigError(f"{path} has no function or class named {attr!r}")
    try:
        inspect.signature(factory).bind()
    except TypeError:
        raise ConfigError(f"model factory {spec!r} must take no arguments") from None
    except ValueError:
        pass  # no signature available (some builtins); try calling it anyway

    def build() -> nn.Module:
        try:
            model = factory()
        except Exception as exc:  # the user's code: its own message, one line
            raise ConfigError(f"model factory {attr} in {path.name} raised {_first_line(exc)}") from exc
        if not isinstance(model, nn.Module):
            kind = type(model).__name__
            raise ConfigError(f"model factory {spec!r} returned {kind}, not an nn.Module")
        return model

    return build


def _import_file(path: Path) -> Any:
    """Import a Python file under a unique module name."""
    mod_name = f"ptq_user_factory_{uuid.uuid4().hex[:12]}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path} is not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # dataclasses and pickling look modules up here
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[mod_name]
        raise ConfigError(f"importing {path} failed ({_first_line(exc)})") from exc
    return module

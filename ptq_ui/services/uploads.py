"""Doors for what a user uploads: weights (checked, kept as safetensors) and model files, in the session's folder.

Also how upload paths are shown: never the server's folder (`redact`, `model_label`).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from ptq_core.checkpoints import check_finite, load_state_dict, save_state_dict
from ptq_core.errors import CheckpointError, ConfigError
from ptq_core.serving import check_factory_allowed, is_factory, uploaded_code_allowed

from .. import resources
from ..resources import session_dir, uploads_root

__all__ = [
    "MAX_UPLOAD_MB",
    "MAX_CODE_KB",
    "uploads_root",
    "session_dir",
    "redact",
    "redact_json",
    "model_label",
    "save_code_upload",
    "save_upload",
    "check_weights",
    "uploaded_code_allowed",
]

MAX_UPLOAD_MB = 150
MAX_CODE_KB = 256  # an uploaded model file


def redact(text: str) -> str:
    """`text` with the upload folder's server path replaced by ``uploads/`` (paths are not shown)."""
    return re.sub(re.escape(str(uploads_root())) + r"/[0-9a-f]+/", "uploads/", text)


def redact_json(obj: Any) -> Any:
    """A JSON-able value with upload paths redacted (see `redact`)."""
    return json.loads(redact(json.dumps(obj)))


def model_label(name: str) -> str:
    """How a model name is shown: an uploaded file as ``uploaded net.py:build``, never its server path."""
    if is_factory(name) and str(uploads_root()) in name:
        file, _, attr = name.rpartition(":")
        return f"uploaded {Path(file).name.split('-', 1)[-1]}:{attr}"
    return redact(name)


def _safe_name(filename: str) -> str:
    return re.sub(r"[^\w.-]", "_", Path(filename).name)[:60] or "upload"


def save_code_upload(data: bytes, filename: str) -> str:
    """Keep an uploaded model file (.py) in this session's folder; returns its path. Nothing runs here.

    Raises:
        ConfigError: Uploaded code is off on this server, the file is too large, not UTF-8 or not Python.
    """
    if not uploaded_code_allowed():
        raise ConfigError(
            "uploading model code is off on this server (the operator turns it on with PTQ_ALLOW_UPLOADED_CODE=1)"
        )
    if len(data) > MAX_CODE_KB * 1024:
        raise ConfigError(f"{filename} is {len(data) // 1024} KB; a model file may have {MAX_CODE_KB} KB")
    try:
        compile(data.decode("utf-8"), filename, "exec")  # syntax only; nothing is executed
    except (UnicodeDecodeError, SyntaxError, ValueError) as exc:
        raise ConfigError(f"{filename} is not a Python file ({type(exc).__name__}: {exc})") from None
    stem = _safe_name(filename).removesuffix(".py")
    path = session_dir() / f"{hashlib.sha256(data).hexdigest()[:12]}-{stem}.py"
    path.write_bytes(data)
    return str(path)


def save_upload(data: bytes, filename: str) -> str:
    """Check an uploaded state_dict safely and keep it as a .safetensors file in this session's folder.

    Returns its path. Whether it fits an architecture is checked by `check_weights`.

    Raises:
        CheckpointError / UnsafeCheckpointError / NonFiniteError with the reason.
    """
    if len(data) > MAX_UPLOAD_MB * 2**20:
        raise CheckpointError(f"{filename} is {len(data) / 2**20:.0f} MB; the limit is {MAX_UPLOAD_MB} MB")
    state_dict = load_state_dict(data, name=filename)  # safetensors or weights_only torch.load; never code
    check_finite(state_dict)
    path = session_dir() / f"{hashlib.sha256(data).hexdigest()[:20]}.safetensors"
    if not path.is_file():
        save_state_dict(state_dict, path)
    return str(path)


def check_weights(model: str, path: str, device: str) -> None:
    """Load `model` with the weights at `path` (cached for the run); raise PTQError when they do not fit."""
    check_factory_allowed(model, [session_dir()])
    resources.model(model, path, device)

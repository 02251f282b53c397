"""What a served app may run: the operator's switches for model code from files.

A model given as ``path/to/file.py:factory`` runs that file's code. On a laptop that is
the user's own file; on a server shared by a team it would let any visitor run any
Python file the server can read. So the app refuses such paths unless the operator
names the folders they may come from, and runs uploaded model code only when the
operator allows it. The command line is not restricted (its user runs their own code).

Environment:
    PTQ_ALLOWED_MODEL_DIRS: folders (separated by ``os.pathsep``, ":" on Linux) whose
        ``.py`` files the app may import as model factories. Unset: none.
    PTQ_ALLOW_UPLOADED_CODE: ``1`` lets users upload a model's ``.py`` file, which then
        runs in the server process. Unset: uploads of code are refused.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .errors import ConfigError

__all__ = [
    "ALLOWED_DIRS_VAR",
    "UPLOADED_CODE_VAR",
    "allowed_model_dirs",
    "uploaded_code_allowed",
    "is_factory",
    "check_factory_allowed",
]

ALLOWED_DIRS_VAR = "PTQ_ALLOWED_MODEL_DIRS"
UPLOADED_CODE_VAR = "PTQ_ALLOW_UPLOADED_CODE"


def allowed_model_dirs() -> list[Path]:
    """The folders named in `PTQ_ALLOWED_MODEL_DIRS`, resolved (empty when unset)."""
    raw = os.environ.get(ALLOWED_DIRS_VAR, "")
    return [Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip()]


def uploaded_code_allowed() -> bool:
    """Whether `PTQ_ALLOW_UPLOADED_CODE` is on (1, true, yes)."""
    return os.environ.get(UPLOADED_CODE_VAR, "").strip().lower() in ("1", "true", "yes")


def is_factory(name: str) -> bool:
    """Whether a model name is a ``file.py:factory`` path (code from a file)."""
    return ":" in name and name.rsplit(":", 1)[0].endswith(".py")


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_factory_allowed(name: str, upload_dirs: Sequence[Path] = ()) -> None:
    """Refuse a ``file.py:factory`` model the operator has not allowed.

    Args:
        name: The model name; names that are not factory paths always pass.
        upload_dirs: Folders holding this session's uploaded code (allowed only when
            `PTQ_ALLOW_UPLOADED_CODE` is on).

    Raises:
        ConfigError: The file lies outside every allowed folder (symlinks resolved).
    """
    if not is_factory(name):
        return
    path = Path(name.rsplit(":", 1)[0]).expanduser().resolve()
    uploads = [Path(d).resolve() for d in upload_dirs]
    if any(_inside(path, d) for d in uploads):
        if uploaded_code_allowed():
            return
        raise ConfigError(
            f"running uploaded model code is off on this server (the operator turns it on with {UPLOADED_CODE_VAR}=1)"
        )
    if any(_inside(path, d) for d in allowed_model_dirs()):
        return
    raise ConfigError(
        f"model files on the server are off unless the operator allows their folder "
        f"({ALLOWED_DIRS_VAR}); this file is not in an allowed folder"
    )

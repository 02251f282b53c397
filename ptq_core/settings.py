"""Config fields that describe themselves: help, choices and bounds in field metadata.

Every config dataclass (`QuantSpec`, each `XxxConfig`, `CATOptions`) declares its
fields with `setting(...)`. The command line and the app's form are both generated
from `settings(cls)`, so a new field appears in both with no other edit.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Demo:
    ...     iters: int = setting(200, help="steps per unit", min=1)
    >>> [(s.name, s.kind, s.default, s.min) for s in settings(Demo)]
    [('iters', <class 'int'>, 200, 1)]
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

__all__ = ["Setting", "setting", "settings", "check_settings"]

_NESTED = "nested"  # metadata key of a field that holds another config (e.g. `quant`)


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    choices: Sequence[Any] | None = None,
    min: float | None = None,
    max: float | None = None,
    default_factory: Any = dataclasses.MISSING,
    nested: bool = False,
) -> Any:
    """A dataclass field with its help text, allowed values and bounds.

    Args:
        default: The default value (or use `default_factory`).
        help: One line shown by `--help` and as the form's tooltip.
        choices: The allowed values, when the field is a choice.
        min, max: Inclusive bounds of a number.
        default_factory: As in `dataclasses.field`.
        nested: The field holds another config dataclass (drawn and parsed field by field).
    """
    meta = {"help": help, "choices": tuple(choices) if choices else None, "min": min, "max": max, _NESTED: nested}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Setting:
    """One field of a config class, as the CLI and the form see it.

    `kind` is the value type with `None` removed (`optional` says whether None is allowed).
    """

    name: str
    kind: Any
    optional: bool
    default: Any
    help: str
    choices: tuple[Any, ...] | None
    min: float | None
    max: float | None
    nested: bool

    @property
    def flag(self) -> str:
        """The command-line option, e.g. ``--act-lr``."""
        return "--" + self.name.replace("_", "-")


def settings(cls: type) -> list[Setting]:
    """The described fields of a config dataclass, in declaration order (ClassVars excluded).

    Raises:
        TypeError: When a field was declared without `setting(...)` (it would have no help).
    """
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name} is declared without setting(help=...)")
        kind, optional = _unwrap(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        m = f.metadata
        choices = m["choices"] or (typing.get_args(kind) if typing.get_origin(kind) is typing.Literal else None)
        out.append(Setting(f.name, kind, optional, default, m["help"], choices, m["min"], m["max"], m[_NESTED]))
    return out


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """`X | None` -> (X, True); anything else -> (hint, False)."""
    args = typing.get_args(hint)
    if type(None) in args and len(args) == 2:
        return next(a for a in args if a is not type(None)), True
    return hint, False


def check_settings(obj: Any) -> None:
    """Check every described field of a config instance against its choices and bounds.

    Raises:
        ConfigError: Naming the field, the value and what is allowed.
    """
    for s in settings(type(obj)):
        value = getattr(obj, s.name)
        if value is None and s.optional or s.nested:
            continue
        if s.choices is not None and value not in s.choices:
            allowed = ", ".join(map(str, s.choices))
            raise ConfigError(f"{s.name} must be one of {allowed}, got {value!r}")
        if s.kind in (int, float):
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or (s.kind is int and value != int(value)):
                raise ConfigError(f"{s.name} must be a{'n integer' if s.kind is int else ' number'}, got {value!r}")
            if s.min is not None and value < s.min or s.max is not None and value > s.max:
                bounds = (
                    f"at least {s.min:g}"
                    if s.max is None
                    else f"at most {s.max:g}"
                    if s.min is None
                    else f"between {s.min:g} and {s.max:g}"
                )
                raise ConfigError(f"{s.name} must be {bounds}, got {value!r}")
        elif s.kind is bool and not isinstance(value, bool):
            raise ConfigError(f"{s.name} must be true or false, got {value!r}")

"""Quantization scheme: a small, frozen, serialisable value object.

A :class:`QScheme` says *how* one tensor is quantized (bit-width, grid, granularity);
observers and fake-quantizers read it, and the app maps its widgets straight onto it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ptq_core.errors import BitWidthError, ConfigError

__all__ = ["FLOAT_BITS", "MIN_BITS", "MAX_BITS", "QScheme", "check_bits", "int_range"]

FLOAT_BITS = 32
"""Bit-width meaning "leave this tensor in floating point"."""

MIN_BITS = 2
MAX_BITS = 8


def check_bits(bits: object, allow_float: bool = True) -> int:
    """Validate a bit-width and return it.

    Args:
        bits: Candidate bit-width; must be an ``int`` (not ``bool``).
        allow_float: Whether ``FLOAT_BITS`` (32, "keep float") is accepted.

    Returns:
        ``bits`` unchanged.

    Raises:
        BitWidthError: If ``bits`` is not an int in 2-8 (or 32 when allowed).
    """
    ok_type = isinstance(bits, int) and not isinstance(bits, bool)
    if ok_type and (MIN_BITS <= bits <= MAX_BITS or (allow_float and bits == FLOAT_BITS)):
        return bits
    hint = f"use {MIN_BITS}-{MAX_BITS}" + (f", or {FLOAT_BITS} to keep float" if allow_float else "")
    if not ok_type:
        raise BitWidthError(f"bit-width must be an integer, got {bits!r}: {hint}")
    raise BitWidthError(f"bit-width {bits} is out of range: {hint}")


def int_range(bits: int, signed: bool) -> tuple[int, int]:
    """Integer grid ``(qmin, qmax)`` of a bit-width: the one definition every quantizer reads.

    Args:
        bits: Bit-width, 2-8.
        signed: Signed grid ``[-2^(b-1), 2^(b-1)-1]`` instead of ``[0, 2^b-1]``.

    Returns:
        ``(qmin, qmax)``; e.g. ``(0, 15)`` for 4-bit unsigned, ``(-8, 7)`` signed.

    Raises:
        BitWidthError: If ``bits`` is not an int in 2-8.
    """
    check_bits(bits, allow_float=False)
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


@dataclass(frozen=True)
class QScheme:
    """How to quantize one tensor: bit-width, integer grid and granularity.

    The integer grid is ``[0, 2^b - 1]`` when unsigned and ``[-2^(b-1), 2^(b-1) - 1]``
    when signed. ``symmetric`` forces the zero point to 0; ``per_channel`` gives every
    slice along ``ch_axis`` its own scale and zero point. ``bits=32`` leaves the
    tensor in float.

    Example:
        >>> s = QScheme(bits=4)          # 4-bit unsigned, asymmetric, per-tensor
        >>> (s.qmin, s.qmax)             # 16 levels
        (0, 15)
        >>> QScheme(bits=4, signed=True).qmin
        -8
        >>> QScheme(bits=32).is_float
        True

    Attributes:
        bits: 2-8, or 32 (``FLOAT_BITS``) for "keep float".
        symmetric: Zero point fixed at 0 (range ``[-a, a]``, or ``[0, a]`` if unsigned).
        signed: Signed integer grid instead of unsigned.
        per_channel: One (scale, zero_point) per slice along ``ch_axis``.
        ch_axis: Channel axis for per-channel schemes (0 for weights, 1 or -1 for acts).
    """

    bits: int = 8
    symmetric: bool = False
    signed: bool = False
    per_channel: bool = False
    ch_axis: int = 0

    def __post_init__(self) -> None:
        check_bits(self.bits, allow_float=True)
        for name in ("symmetric", "signed", "per_channel"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"QScheme.{name} must be True or False, got {getattr(self, name)!r}")
        if not isinstance(self.ch_axis, int) or isinstance(self.ch_axis, bool):
            raise ConfigError(f"QScheme.ch_axis must be an integer, got {self.ch_axis!r}")

    @property
    def is_float(self) -> bool:
        """True when the tensor is left in floating point (``bits == 32``)."""
        return self.bits == FLOAT_BITS

    @property
    def qmin(self) -> int:
        """Smallest integer of the grid (raises ConfigError for a float scheme)."""
        return self._grid()[0]

    @property
    def qmax(self) -> int:
        """Largest integer of the grid (raises ConfigError for a float scheme)."""
        return self._grid()[1]

    def _grid(self) -> tuple[int, int]:
        if self.is_float:
            raise ConfigError(f"a {FLOAT_BITS}-bit (float) scheme has no integer grid")
        return int_range(self.bits, self.signed)

    def replace(self, **changes: Any) -> QScheme:
        """Return a copy with some fields changed (validated again).

        Args:
            **changes: Field names and their new values.

        Returns:
            A new :class:`QScheme`.
        """
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown QScheme field(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a plain JSON-friendly dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QScheme:
        """Build a scheme from :meth:`to_dict` output (missing keys take defaults).

        Args:
            data: Mapping of field names to values.

        Returns:
            The validated :class:`QScheme`.

        Raises:
            ConfigError: On unknown keys or a non-mapping input.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"QScheme.from_dict needs a dict, got {type(data).__name__}")
        return cls().replace(**data)

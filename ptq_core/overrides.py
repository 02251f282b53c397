"""Per-layer bit overrides written as text: one `PATTERN=W/A` per line or per CLI option.

The one parser the command line and the app share:

    >>> parse_overrides("layer3.*=8/8  # keep the last stage\\nfc=8/32")
    {'layer3.*': {'wbits': 8, 'abits': 8}, 'fc': {'wbits': 8, 'abits': 32}}
    >>> format_overrides({'layer3.*': {'wbits': 8, 'abits': 8}})
    'layer3.*=8/8'
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence

from .errors import ConfigError
from .qscheme import check_bits

__all__ = ["parse_overrides", "format_overrides", "unmatched_patterns"]

Overrides = dict[str, dict[str, int]]


def parse_overrides(text: str | Iterable[str], layer_names: Sequence[str] | None = None) -> Overrides:
    """Parse `PATTERN=W/A` items (fnmatch patterns, `#` comments, blank lines ignored).

    Args:
        text: Lines in one string, or an iterable of items (one per CLI option).
        layer_names: When given, a pattern that matches none of them is an error.

    Raises:
        ConfigError: Naming the item and what it should look like, a bit-width out of range,
            or a pattern that matches no layer.
    """
    items = text.splitlines() if isinstance(text, str) else list(text)
    out: Overrides = {}
    for number, raw in enumerate(items, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        pattern, eq, bits = line.rpartition("=")
        w, slash, a = bits.strip().partition("/")
        pattern = pattern.strip()
        if not eq or not pattern or not slash or not w.strip().isdigit() or not a.strip().isdigit():
            raise ConfigError(f"override {number} ({line!r}) must look like PATTERN=W/A, e.g. layer3.*=8/8")
        out[pattern] = {"wbits": check_bits(int(w)), "abits": check_bits(int(a))}
    if layer_names is not None:
        missing = unmatched_patterns(out, layer_names)
        if missing:
            examples = ", ".join(list(layer_names)[:3])
            raise ConfigError(f"override {missing[0]!r} matches no layer (names look like {examples})")
    return out


def unmatched_patterns(overrides: Overrides, layer_names: Sequence[str]) -> list[str]:
    """The patterns of `overrides` that match none of `layer_names`."""
    return [p for p in overrides if not fnmatch.filter(layer_names, p)]


def format_overrides(overrides: Overrides, wbits: int = 32, abits: int = 32) -> str:
    """The inverse of `parse_overrides`: one `PATTERN=W/A` line per pattern.

    A side an override leaves out takes `wbits` / `abits` (the spec's own bits).

        >>> format_overrides({"fc": {"abits": 8}, "conv1": {"wbits": 8}}, wbits=4).splitlines()
        ['fc=4/8', 'conv1=8/32']
    """
    return "\n".join(f"{p}={b.get('wbits', wbits)}/{b.get('abits', abits)}" for p, b in overrides.items())

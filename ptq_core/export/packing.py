"""Bit-packing of integer codes into bytes: ``8 / bits`` codes per byte, any bit-width 2-8.

Codes are first offset to ``code - qmin`` (so they lie in ``[0, 2^bits)``), then
written as one little-endian bit stream: code i occupies bits
``[i * bits, (i + 1) * bits)``, least significant bit first, and byte k holds stream
bits ``8k .. 8k + 7``. So two 4-bit codes share a byte (the first in the low
nibble), four 2-bit codes share a byte, and 3-, 5-, 6- and 7-bit codes run across
byte boundaries. The last byte is zero-padded.

Example: 4-bit unsigned codes ``[1, 15, 2]`` pack to bytes ``[0xF1, 0x02]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError
from ..qscheme import int_range

__all__ = ["packed_size", "pack_codes", "unpack_codes"]


def packed_size(numel: int, bits: int) -> int:
    """Bytes needed for `numel` codes of `bits` bits: ``ceil(numel * bits / 8)``."""
    return -(-numel * bits // 8)


def pack_codes(codes: Tensor, bits: int, signed: bool) -> Tensor:
    """Pack integer codes of a `bits`-bit grid into a flat uint8 tensor.

    Args:
        codes: Integer-valued tensor (any shape, any dtype), inside the grid.
        bits: Bit-width, 2-8.
        signed: Grid ``[-2^(b-1), 2^(b-1) - 1]`` instead of ``[0, 2^b - 1]``.

    Returns:
        ``[packed_size(codes.numel(), bits)]`` uint8.

    Raises:
        ConfigError: If a code lies outside the grid.
    """
    qmin, qmax = int_range(bits, signed)
    flat = codes.detach().reshape(-1).to(torch.int32).cpu()
    if flat.numel() and bool((flat < qmin).any() | (flat > qmax).any()):
        raise ConfigError(f"codes must lie in [{qmin}, {qmax}] to pack at {bits} bits")
    offset = flat - qmin  # [N] in [0, 2^bits)
    stream = ((offset[:, None] >> torch.arange(bits, dtype=torch.int32)) & 1).to(torch.uint8).reshape(-1)
    stream = torch.cat([stream, stream.new_zeros(-stream.numel() % 8)]).reshape(-1, 8)  # [bytes, 8]
    weights = (1 << torch.arange(8, dtype=torch.int32)).to(torch.uint8)
    return (stream * weights).sum(1, dtype=torch.int32).to(torch.uint8)


def unpack_codes(packed: Tensor, bits: int, signed: bool, shape: tuple[int, ...] | torch.Size) -> Tensor:
    """Inverse of `pack_codes`.

    Args:
        packed: The uint8 bytes.
        bits: Bit-width they were packed at.
        signed: Whether the grid is signed.
        shape: Shape of the codes.

    Returns:
        int32 codes shaped `shape`.

    Raises:
        ConfigError: If `packed` has the wrong number of bytes for `shape`.
    """
    qmin, _ = int_range(bits, signed)
    numel = 1
    for d in shape:
        numel *= int(d)
    if packed.dtype != torch.uint8 or packed.numel() != packed_size(numel, bits):
        raise ConfigError(
            f"expected {packed_size(numel, bits)} uint8 bytes for {numel} codes at {bits} bits, "
            f"got {packed.numel()} {packed.dtype}"
        )
    stream = (packed.reshape(-1, 1).to(torch.int32) >> torch.arange(8, dtype=torch.int32)) & 1  # [bytes, 8]
    stream = stream.reshape(-1)[: numel * bits].reshape(numel, bits)  # [N, bits]
    offset = (stream << torch.arange(bits, dtype=torch.int32)).sum(1, dtype=torch.int32)
    return (offset + qmin).reshape(tuple(shape))

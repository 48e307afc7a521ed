"""The bytes every workload sends: the same stream for filesvc, its ceilings and its peers.

A stream of `size` bytes is one unique 1 MiB first block (a header naming the stream, then random
bytes) followed by slices of one shared random 1 MiB block. Every stream (every file, every chunk)
therefore has different content, so no server can deduplicate one upload against another, yet a
client never holds more than two blocks in memory and copies one block per stream at most.
"""

from __future__ import annotations

import random
import struct
from collections.abc import AsyncIterator, Iterator
from functools import cache

BLOCK = 1 << 20
MiB = 1 << 20
GiB = 1 << 30


@cache
def base_block() -> bytes:
    """1 MiB of incompressible bytes, the same in every process of a run."""
    return random.Random(0x5EED).randbytes(BLOCK)


def first_block(seed: int, length: int) -> bytes:
    """The unique start of stream `seed`: a 32-byte header, then the base block."""
    header = struct.pack("<QQ", 0xF11E5C, seed) + b"filesvc-bench..."
    return (header + base_block()[len(header) : length])[:length]


def iter_stream(size: int, seed: int) -> Iterator[bytes | memoryview]:
    """Yield the stream `seed` of exactly `size` bytes in pieces of at most 1 MiB."""
    if size <= 0:
        return
    first = min(size, BLOCK)
    yield first_block(seed, first)
    left = size - first
    view = memoryview(base_block())
    while left > 0:
        n = min(left, BLOCK)
        yield view[:n]
        left -= n


async def aiter_stream(
    size: int, seed: int, head: bytes = b"", tail: bytes = b""
) -> AsyncIterator[bytes | memoryview]:
    """`iter_stream` as an async generator, optionally wrapped in `head` and `tail` (multipart)."""
    if head:
        yield head
    for piece in iter_stream(size, seed):
        yield piece
    if tail:
        yield tail


def small_body(seed: int, size: int = 4096) -> bytes:
    """A small unique body (the 4 KiB and many-files scenarios)."""
    return first_block(seed, size)

"""Helpers shared by the backends' read sides: a stream over bytes in memory, and ``read`` in
terms of ``open`` (one implementation of the shorthand, so the backends cannot drift)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable

from blobstore.port import BlobStream


class BytesStream:
    """A :class:`~blobstore.port.BlobStream` over bytes already in memory."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    @property
    def length(self) -> int:
        return len(self._data)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._data:
            yield self._data

    async def aclose(self) -> None:
        self._data = b""


async def read_opened(opening: Awaitable[BlobStream]) -> AsyncIterator[bytes]:
    """Open (awaiting ``opening`` on first iteration), yield every piece, close."""
    stream = await opening
    try:
        async for piece in stream:
            yield piece
    finally:
        await stream.aclose()

"""In-memory backend: for tests, and it earns its place by passing the same contract suite."""

from __future__ import annotations

from collections.abc import AsyncIterator

from blobstore.errors import BlobNotFound
from blobstore.port import BlobInfo
from blobstore.refs import BlobRef
from blobstore.streams import BytesStream, read_opened


class MemoryStaging:
    """Staged bytes in a bytearray."""

    def __init__(self, backend: MemoryBackend) -> None:
        self._backend = backend
        self._data = bytearray()
        self._open = True

    async def write(self, data: bytes) -> None:
        self._data += data

    async def publish(self, ref: BlobRef) -> bool:
        if ref in self._backend.blobs:
            return False
        self._backend.blobs[ref] = bytes(self._data)
        self._open = False
        return True

    async def same_as(self, ref: BlobRef) -> bool:
        stored = self._backend.blobs.get(ref)
        return stored is not None and stored == self._data

    async def staged(self) -> AsyncIterator[bytes]:
        if self._data:
            yield bytes(self._data)

    async def found_durable(self, ref: BlobRef) -> None:
        return None

    async def discard(self) -> None:
        self._data = bytearray()
        self._open = False


class MemoryBackend:
    """Blobs in a dict; every operation is atomic because nothing here awaits mid-way."""

    def __init__(self) -> None:
        self.blobs: dict[BlobRef, bytes] = {}

    async def stage(self, size: int | None = None) -> MemoryStaging:
        return MemoryStaging(self)

    async def stat(self, ref: BlobRef) -> int | None:
        stored = self.blobs.get(ref)
        return None if stored is None else len(stored)

    async def open(self, ref: BlobRef, start: int = 0, end: int | None = None) -> BytesStream:
        stored = self.blobs.get(ref)
        if stored is None:
            raise BlobNotFound(ref)
        return BytesStream(stored[start:end])

    def read(self, ref: BlobRef, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        return read_opened(self.open(ref, start, end))

    async def delete(self, ref: BlobRef) -> None:
        self.blobs.pop(ref, None)

    async def scan(self) -> AsyncIterator[BlobInfo]:
        for ref, data in list(self.blobs.items()):
            yield BlobInfo(ref, len(data))

    async def close(self) -> None:
        return None

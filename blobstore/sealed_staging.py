"""Writing sealed blobs: each segment sealed as the bytes stream past
(:class:`~blobstore.sealing.Sealer`), so plaintext never reaches the inner backend, not even its
temporary files.

Over a staging that writes from its own thread (:class:`~blobstore.port.WriteFrom`, the local
backend), a large batch is sealed in that thread right before it is written: no hand-off of its
own, no copy of the sealed bytes, and the sealing and writing of the batches queued there
overlap the receiving of the next (:mod:`blobstore.write_lane`).  Small writes are sealed on
the event loop (a few microseconds: cheaper than a hand-off), and over other backends a large
one is sealed in a thread, then written.

Dedup: two sealings of one content differ (every blob has its own random id and key), so a dedup
candidate is compared by plaintext: the stored blob opened through the wrapper, the staged one
read back (:class:`~blobstore.port.Readback`) and decrypted with the key this staging used.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, cast

from blobstore.errors import BlobCorrupt, BlobNotFound, StorageFailure
from blobstore.port import BlobStream, Readback, Staging, WriteFrom, supports
from blobstore.refs import BlobRef, ref_digest
from blobstore.sealed_reads import THREAD_MIN, crypt, segments
from blobstore.sealing import TRAILER, Opener, ScopeKey, Sealer, Trailer, sealed_size

if TYPE_CHECKING:
    from blobstore.port import BlobReader


_WRITES_FROM: dict[type, bool] = {}


def _writes_from(staging: Staging) -> bool:
    """Whether the staging offers WriteFrom, asked once per class: ``isinstance`` against a
    runtime-checkable protocol walks its members on every call, and a 4 KiB upload pays it."""
    kind = type(staging)
    known = _WRITES_FROM.get(kind)
    if known is None:
        known = _WRITES_FROM[kind] = isinstance(staging, WriteFrom)
    return known


class SealedStaging:
    """A blob being sealed into an inner staging; ``reader`` opens stored blobs (the sealing
    wrapper itself) for the dedup comparison."""

    def __init__(self, inner: Staging, key: ScopeKey, scope: str, reader: BlobReader) -> None:
        if not supports(inner, Readback):
            raise StorageFailure("this blob backend cannot seal blobs (no readback)")
        self._inner = inner
        self._from_thread = cast(WriteFrom, inner) if _writes_from(inner) else None
        self._key = key
        self._scope = scope
        self._sealer = Sealer(key)
        self._reader = reader
        self._finished = False
        self._size = 0
        # True once the sealer is used from the inner staging's thread: from then on every use
        # of it goes there, after the writes before it.
        self._threaded = False

    async def write(self, data: bytes) -> None:
        self._size += len(data)
        sealer = self._sealer
        if self._from_thread is not None and (self._threaded or len(data) >= THREAD_MIN):
            self._threaded = True
            await self._from_thread.write_from(lambda: sealer.feed_view(data))
            return
        sealed = await crypt(sealer.feed, data)
        if sealed:
            await self._inner.write(sealed)

    async def write_many(self, pieces: Sequence[bytes]) -> None:
        size = sum(len(p) for p in pieces)
        if self._from_thread is not None and (self._threaded or size >= THREAD_MIN):
            # Sealed in the writer's thread straight from the pieces (no join on the loop).
            self._size += size
            self._threaded = True
            sealer = self._sealer
            await self._from_thread.write_from(lambda: sealer.feed_many(pieces))
            return
        if size < THREAD_MIN:
            await self.write(b"".join(pieces))
            return
        # Sealed in a thread straight from the pieces (not joined first), then copied into
        # bytes of its own: the inner staging may keep them until they are sent.
        self._size += size
        sealer = self._sealer
        sealed = await asyncio.to_thread(lambda: bytes(sealer.feed_many(pieces)))
        if sealed:
            await self._inner.write(sealed)

    async def _finish(self, ref: BlobRef) -> None:
        if self._finished:
            return
        self._finished = True
        digest = ref_digest(ref)
        if self._from_thread is not None and self._threaded:
            await self._from_thread.write_from(lambda: self._sealer.finish(digest, self._scope))
        else:
            await self._inner.write(self._sealer.finish(digest, self._scope))

    async def publish(self, ref: BlobRef) -> bool:
        await self._finish(ref)
        return await self._inner.publish(ref)

    async def same_as(self, ref: BlobRef) -> bool:
        await self._finish(ref)
        inner = self._inner
        assert isinstance(inner, Readback)
        try:
            stored = await self._reader.open(ref)
        except (BlobNotFound, BlobCorrupt):
            return False  # gone (gc), or damaged: never a dedup target
        try:
            if stored.length != self._size:
                return False
            ours = self._plain(inner.staged())
            if not await same_stream(ours, stored):
                return False
        except BlobCorrupt:
            return False
        finally:
            await stored.aclose()
        await inner.found_durable(ref)
        return True

    async def _plain(self, staged: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        trailer = Trailer(self._sealer.blob_id, self._size)
        opener = Opener(self._key, trailer)
        async for index, sealed in segments(staged, 0, sealed_size(self._size) - TRAILER):
            yield await crypt(opener.open_many, index, sealed)

    async def discard(self) -> None:
        await self._inner.discard()


async def same_stream(a: AsyncIterator[bytes], b: BlobStream) -> bool:
    """True when two byte streams yield the same bytes (pieces may be cut differently)."""
    left = bytearray()
    right = bytearray()
    b_iter = aiter(b)
    b_done = False
    async for piece in a:
        left += piece
        while len(right) < len(left) and not b_done:
            try:
                right += await anext(b_iter)
            except StopAsyncIteration:
                b_done = True
        n = min(len(left), len(right))
        if left[:n] != right[:n]:
            return False
        del left[:n]
        del right[:n]
    if left:
        return False
    if right:
        return False
    async for rest in b_iter:
        if rest:
            return False
    return True

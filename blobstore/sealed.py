"""Encryption at rest over any backend: a :class:`~blobstore.port.BlobBackend` that seals what it
is asked to seal and opens sealed blobs on read.

The ref says how a blob is stored (``-e<scope>``: sealed under that scope's key, see
:mod:`blobstore.refs`), so plain blobs (written before, or with encryption off) and sealed ones
live in one store and are read side by side.  Writes: :meth:`SealedBackend.stage_sealed` seals
each segment as the bytes stream past (:class:`~blobstore.sealing.Sealer`), so plaintext never
reaches the inner backend, not even its temporary files.  Reads: the trailer is checked against
the ref before anything is returned, and each segment is authenticated before its bytes are
handed on; the first piece is decrypted inside :meth:`open`, so a damaged start is an error
before any byte is sent, and a damaged segment later ends the stream with BlobCorrupt.

Dedup: two sealings of one content differ (every blob has its own random id and key), so a dedup
candidate is compared by plaintext: the stored blob opened as above, the staged one read back
(:class:`~blobstore.port.Readback`) and decrypted with the key this staging used.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from pathlib import Path

from blobstore.errors import BlobCorrupt, BlobNotFound, StorageFailure
from blobstore.keyring import UNSCOPED, KeyRing
from blobstore.port import (
    BlobBackend,
    BlobInfo,
    BlobStream,
    FileRange,
    Leftover,
    Leftovers,
    LocalFiles,
    Probe,
    Readback,
    Staging,
    StatMany,
    TempFiles,
    supports,
)
from blobstore.refs import BlobRef, is_sealed, ref_digest, ref_scope
from blobstore.sealing import (
    SEALED_SEGMENT,
    SEGMENT,
    TRAILER,
    Opener,
    ScopeKey,
    Sealer,
    Trailer,
    plain_size,
    read_trailer,
    sealed_size,
    stored_range,
)
from blobstore.streams import BytesStream, read_opened

# A sealed blob stored in at most this many bytes is read whole in one go (one open, one read):
# most blobs are small, and that is the fewest round trips.
SMALL_BLOB = sealed_size(1 << 20)
# Work on at least this many bytes goes to a thread: AES-GCM on a MiB takes about a
# millisecond, too long for the event loop; a few KiB are cheaper than the hand-off.
THREAD_MIN = 128 << 10
# Plaintext pieces a stream yields: about what the backends read at once.
PIECE = 16 * SEGMENT
# Sealed bytes read (and decrypted) at once from a local file: 32 segments, 2 MiB.
FILE_PIECE = 32 * SEALED_SEGMENT


async def _crypt(fn: object, *args: object) -> bytes:
    """Run ``fn(*args)`` here when the work is small, else in a thread."""
    size = sum(len(a) for a in args if isinstance(a, bytes | bytearray | memoryview))
    assert callable(fn)
    if size < THREAD_MIN:
        result = fn(*args)
    else:
        result = await asyncio.to_thread(fn, *args)
    assert isinstance(result, bytes)
    return result


class SealedStaging:
    """A blob being sealed into an inner staging."""

    def __init__(self, inner: Staging, key: ScopeKey, scope: str, opener: SealedBackend) -> None:
        if not supports(inner, Readback):
            raise StorageFailure("this blob backend cannot seal blobs (no readback)")
        self._inner = inner
        self._key = key
        self._scope = scope
        self._sealer = Sealer(key)
        self._backend = opener
        self._finished = False
        self._size = 0

    async def write(self, data: bytes) -> None:
        self._size += len(data)
        sealed = await _crypt(self._sealer.feed, data)
        if sealed:
            await self._inner.write(sealed)

    async def _finish(self, ref: BlobRef) -> None:
        if not self._finished:
            self._finished = True
            await self._inner.write(self._sealer.finish(ref_digest(ref), self._scope))

    async def publish(self, ref: BlobRef) -> bool:
        await self._finish(ref)
        return await self._inner.publish(ref)

    async def same_as(self, ref: BlobRef) -> bool:
        await self._finish(ref)
        inner = self._inner
        assert isinstance(inner, Readback)
        try:
            stored = await self._backend.open(ref)
        except (BlobNotFound, BlobCorrupt):
            return False  # gone (gc), or damaged: never a dedup target
        try:
            if stored.length != self._size:
                return False
            ours = self._plain(inner.staged())
            if not await _same_stream(ours, stored):
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
        async for piece in _segments(staged, 0, sealed_size(self._size) - TRAILER):
            index, sealed = piece
            yield await _crypt(opener.open_many, index, sealed)

    async def discard(self) -> None:
        await self._inner.discard()


async def _segments(
    stream: AsyncIterator[bytes], first: int, length: int
) -> AsyncIterator[tuple[int, bytes]]:
    """Regroup a stream of sealed bytes (starting at segment ``first``; ``length`` bytes of
    segments, the trailer excluded) into runs of whole segments: ``(index of the first, bytes)``.
    Only the last segment may be short."""
    buf = bytearray()
    index = first
    seen = 0
    async for piece in stream:
        take = piece[: length - seen]
        seen += len(take)
        if not buf and len(take) % SEALED_SEGMENT == 0 and take:
            yield index, bytes(take)
            index += len(take) // SEALED_SEGMENT
        else:
            buf += take
            whole = len(buf) // SEALED_SEGMENT * SEALED_SEGMENT
            if whole:
                with memoryview(buf) as view:
                    run = bytes(view[:whole])
                del buf[:whole]
                yield index, run
                index += whole // SEALED_SEGMENT
        if seen >= length:
            break
    if buf:
        yield index, bytes(buf)


async def _same_stream(a: AsyncIterator[bytes], b: BlobStream) -> bool:
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


async def _decrypted(
    runs: AsyncIterator[tuple[int, bytes]], opener: Opener
) -> AsyncGenerator[bytes]:
    """Plaintext of runs of whole segments (any backend's stream, regrouped)."""
    async for index, sealed in runs:
        yield await _crypt(opener.open_many, index, sealed)


class _FileReader:
    """Reads and decrypts pieces of one local blob into buffers kept for the stream's life
    (fresh memory per piece costs more than the AES: page faults), in a thread."""

    def __init__(self, fd: int, opener: Opener) -> None:
        self._fd = fd
        self._opener = opener
        self._sealed = bytearray(FILE_PIECE)
        self._plain = bytearray(FILE_PIECE)

    def read(self, size: int, offset: int, index: int) -> bytes:
        with memoryview(self._sealed) as sealed:
            got = os.preadv(self._fd, [sealed[:size]], offset)
            if got != size:
                raise BlobCorrupt("sealed blob ended early")
            n = self._opener.open_into(index, sealed[:size], self._plain)
        with memoryview(self._plain) as plain:
            return bytes(plain[:n])


async def _decrypted_file(
    source: FileRange, first: int, length: int, opener: Opener
) -> AsyncGenerator[bytes]:
    """Plaintext of ``length`` bytes of a local file's segments: each piece read and decrypted
    in one thread hand-off (half the hops of reading, then decrypting), the next piece while
    this one is being sent."""
    fd, pos, _ = source.file_range()
    end = pos + length
    reader = _FileReader(fd, opener)
    index = first

    def start() -> asyncio.Future[bytes] | None:
        nonlocal pos, index
        if pos >= end:
            return None
        size = min(FILE_PIECE, end - pos)
        work = asyncio.ensure_future(asyncio.to_thread(reader.read, size, pos, index))
        pos += size
        index += -(-size // SEALED_SEGMENT)
        return work

    work = start()
    try:
        while work is not None:
            try:
                plain = await asyncio.shield(work)
            except OSError as exc:
                raise StorageFailure(f"blob store I/O failed: {exc.strerror}") from None
            work = start()
            yield plain
    finally:
        if work is not None and not work.done():
            # The thread reads with the fd the inner stream closes next: it finishes first.
            await asyncio.wait([work])
        if work is not None and work.done() and not work.cancelled():
            work.exception()  # retrieved: a read-ahead nobody waits for is no error


class SealedStream:
    """The plaintext ``[start, end)`` of a sealed blob, decrypted segment by segment."""

    def __init__(
        self, plain: AsyncGenerator[bytes], *, skip: int, length: int, closing: BlobStream
    ) -> None:
        self._plain = plain
        self._skip = skip
        self._left = length
        self._length = length
        self._closing = closing
        self._first: bytes | None = None

    @property
    def length(self) -> int:
        return self._length

    async def prime(self) -> None:
        """Decrypt the first piece now, so damage at the start is an error before any byte."""
        self._first = await self._next()

    async def _next(self) -> bytes | None:
        while self._left > 0:
            try:
                plain = await anext(self._plain)
            except StopAsyncIteration:
                raise BlobCorrupt("sealed blob ended early") from None
            if self._skip:
                plain, self._skip = plain[self._skip :], max(0, self._skip - len(plain))
            if len(plain) > self._left:
                plain = plain[: self._left]
            self._left -= len(plain)
            if plain:
                return plain
        return None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        first, self._first = self._first, None
        if first:
            yield first
        while (piece := await self._next()) is not None:
            yield piece

    async def aclose(self) -> None:
        # A thread may still be reading with the fd (a cancelled download): let it finish
        # before the inner stream closes the fd.
        with contextlib.suppress(Exception):
            await self._plain.aclose()
        await self._closing.aclose()


class SealedBackend:
    """Seals new blobs (when ``sealing``) and opens sealed ones, over ``inner``."""

    def __init__(self, inner: BlobBackend, keys: KeyRing, *, sealing: bool) -> None:
        self.inner = inner
        self.keys = keys
        self._sealing = sealing

    @property
    def sealing(self) -> bool:
        return self._sealing

    async def stage(self) -> Staging:
        return await self.inner.stage()

    async def stage_sealed(self, scope: str) -> SealedStaging:
        key = await self.keys.key(scope, create=True)
        return SealedStaging(await self.inner.stage(), key, scope, self)

    async def stat(self, ref: BlobRef) -> int | None:
        stored = await self.inner.stat(ref)
        if stored is None or not is_sealed(ref):
            return stored
        plain = plain_size(stored)
        if plain is None:
            raise BlobCorrupt(f"sealed blob {ref} has a size no sealed blob has")
        return plain

    async def open(self, ref: BlobRef, start: int = 0, end: int | None = None) -> BlobStream:
        if not is_sealed(ref):
            return await self.inner.open(ref, start, end)
        scope = ref_scope(ref)
        assert scope is not None
        key = await self.keys.key(scope, create=False)
        whole = await self.inner.open(ref)
        try:
            stored = whole.length
            if stored <= SMALL_BLOB:
                return await self._open_small(ref, key, whole, start, end)
            tail = await _read_all(await self.inner.open(ref, stored - TRAILER, stored))
            trailer = read_trailer(key, tail, stored=stored, digest=ref_digest(ref), scope=scope)
            stop = trailer.plain if end is None else min(end, trailer.plain)
            if start >= stop:
                await whole.aclose()
                return BytesStream(b"")
            first, lo, hi = stored_range(trailer.plain, start, stop)
            if lo != 0 or hi != stored - TRAILER:
                await whole.aclose()
                whole = await self.inner.open(ref, lo, hi)
            opener = Opener(key, trailer)
            plain = (
                _decrypted_file(whole, first, hi - lo, opener)
                if isinstance(whole, FileRange)
                else _decrypted(_segments(aiter(whole), first, hi - lo), opener)
            )
            stream = SealedStream(
                plain, skip=start - first * SEGMENT, length=stop - start, closing=whole
            )
            await stream.prime()
            return stream
        except BaseException:
            await whole.aclose()
            raise

    async def _open_small(
        self, ref: BlobRef, key: ScopeKey, whole: BlobStream, start: int, end: int | None
    ) -> BlobStream:
        raw = await _read_all(whole)
        scope = ref_scope(ref)
        assert scope is not None
        stored = len(raw)
        trailer = read_trailer(
            key, raw[stored - TRAILER :], stored=stored, digest=ref_digest(ref), scope=scope
        )
        plain = await _crypt(Opener(key, trailer).open_many, 0, raw[: stored - TRAILER])
        stop = trailer.plain if end is None else min(end, trailer.plain)
        return BytesStream(plain[start:stop] if start < stop else b"")

    def read(self, ref: BlobRef, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        return read_opened(self.open(ref, start, end))

    async def delete(self, ref: BlobRef) -> None:
        await self.inner.delete(ref)

    async def scan(self) -> AsyncIterator[BlobInfo]:
        async for info in self.inner.scan():
            if is_sealed(info.ref):
                plain = plain_size(info.size)
                # A size no sealed blob has shows as -1: fsck reports it as a wrong size.
                yield BlobInfo(info.ref, -1 if plain is None else plain)
            else:
                yield info

    async def close(self) -> None:
        await self.inner.close()


async def _read_all(stream: BlobStream) -> bytes:
    try:
        pieces = [piece async for piece in stream]
    finally:
        await stream.aclose()
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


class SealedLocalBackend(SealedBackend):
    """Over the local backend: its files stay reachable for repair's quarantine and fsck's
    temp-file check.  A sealed ref's file holds ciphertext: read content through :meth:`open`."""

    def local_path(self, ref: BlobRef) -> Path:
        assert isinstance(self.inner, LocalFiles)
        return self.inner.local_path(ref)

    def temp_files(self) -> list[tuple[Path, int, float]]:
        assert isinstance(self.inner, TempFiles)
        return self.inner.temp_files()

    async def stat_many(self, refs: Sequence[BlobRef]) -> list[int | None]:
        """The group commit's check, in the inner backend's one hand-off; sealed sizes mapped
        to plaintext (a size no sealed blob has stays as stored: present, and fsck's to judge)."""
        assert isinstance(self.inner, StatMany)
        sizes = await self.inner.stat_many(refs)
        return [
            size if size is None or not is_sealed(ref) else (plain_size(size) or size)
            for ref, size in zip(refs, sizes, strict=True)
        ]


class SealedProbedBackend(SealedBackend):
    """Over a backend behind a network, which the health check can ask whether it answers."""

    async def check(self) -> None:
        assert isinstance(self.inner, Probe)
        await self.inner.check()


class SealedRemoteBackend(SealedProbedBackend):
    """Over S3: also what interrupted writes left there (ciphertext), for fsck and repair."""

    async def leftovers(self) -> list[Leftover]:
        assert isinstance(self.inner, Leftovers)
        return await self.inner.leftovers()

    async def remove_leftover(self, name: str) -> None:
        assert isinstance(self.inner, Leftovers)
        await self.inner.remove_leftover(name)


def seal_backend(inner: BlobBackend, keys: KeyRing, *, sealing: bool) -> SealedBackend:
    """``inner`` wrapped, keeping the optional abilities it has."""
    if (
        isinstance(inner, LocalFiles)
        and isinstance(inner, TempFiles)
        and isinstance(inner, StatMany)
    ):
        return SealedLocalBackend(inner, keys, sealing=sealing)
    if isinstance(inner, Probe) and isinstance(inner, Leftovers):
        return SealedRemoteBackend(inner, keys, sealing=sealing)
    if isinstance(inner, Probe):
        return SealedProbedBackend(inner, keys, sealing=sealing)
    return SealedBackend(inner, keys, sealing=sealing)


__all__ = ["UNSCOPED", "SealedBackend", "seal_backend"]

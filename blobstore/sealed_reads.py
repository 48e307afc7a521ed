"""Reading sealed blobs: ciphertext in, authenticated plaintext out, a piece at a time.

Two sources: a local file (:class:`~blobstore.port.FileRange`), read and decrypted in one thread
hand-off per piece into buffers the stream reuses; any other backend's stream (S3), regrouped
into runs of whole segments and decrypted as they come.  :class:`SealedStream` turns either into
a :class:`~blobstore.port.BlobStream` of a plaintext range, which also offers
:class:`~blobstore.port.Views`: the plaintext buffers themselves, for a download that writes them
to its socket without copying them first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from blobstore.errors import BlobCorrupt, StorageFailure
from blobstore.port import BlobStream, FileRange
from blobstore.sealing import SEALED_SEGMENT, Opener

# Work on at least this many bytes goes to a thread: AES-GCM on a MiB takes about half a
# millisecond, too long for the event loop; a few KiB are cheaper than the hand-off.
THREAD_MIN = 128 << 10
# Sealed bytes read (and decrypted) at once from a local file: 16 segments, about 1 MiB.  Against
# 2 MiB, a piece and its plaintext stay in the CPU's cache and it costs less CPU per byte
# (docs/measured.md); the plain local backend reads 1 MiB at a time too.
FILE_PIECE = 16 * SEALED_SEGMENT
# Plaintext buffers a file stream rotates through: the piece being decrypted, the one being
# handed on, and one or two a socket may still be sending.  A buffer still viewed is never
# reused (another is made), so this bounds only the memory of a stream whose views are dropped.
POOL = 4

Plain = bytes | memoryview


async def crypt(fn: Callable[..., bytes], *args: bytes | bytearray | memoryview | int) -> bytes:
    """Run ``fn(*args)`` here when the work is small, else in a thread (the AES releases the
    GIL)."""
    size = sum(len(a) for a in args if not isinstance(a, int))
    if size < THREAD_MIN:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


async def segments(
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


async def decrypted(
    runs: AsyncIterator[tuple[int, bytes]], opener: Opener
) -> AsyncGenerator[Plain]:
    """Plaintext of runs of whole segments (any backend's stream, regrouped)."""
    async for index, sealed in runs:
        yield await crypt(opener.open_many, index, sealed)


def _unviewed(buf: bytearray) -> bool:
    """True when no view of ``buf`` is alive anywhere: a bytearray with a live view (exported
    buffer) refuses to change size, so shrink it by a byte and grow it back.  Neither moves
    memory: both stay within its allocation."""
    try:
        buf.pop()
    except BufferError:
        return False
    buf.append(0)
    return True


class _FileReader:
    """Reads and decrypts pieces of one local blob, in a thread: ciphertext into one buffer kept
    for the stream's life, plaintext into a small pool of buffers (fresh memory per piece costs
    more than a copy: page faults).

    With ``views`` a piece is a view of its pool buffer, handed on as it is: the buffer is reused
    only once nothing views it any more (:func:`_unviewed`), so a socket that still holds a piece
    it has not sent, or a caller that keeps pieces, can never see it overwritten.  Without, it is
    copied out into bytes (for callers that want bytes)."""

    def __init__(self, fd: int, opener: Opener) -> None:
        self._fd = fd
        self._opener = opener
        self._sealed = bytearray(FILE_PIECE)
        self._copying: bytearray | None = None
        self._pool: list[bytearray] = []
        self._next = 0
        self.views = False

    def _buffer(self) -> bytearray:
        for _ in range(len(self._pool)):
            buf = self._pool[self._next]
            self._next = (self._next + 1) % len(self._pool)
            if _unviewed(buf):
                return buf
        buf = bytearray(FILE_PIECE)
        if len(self._pool) < POOL:
            self._pool.append(buf)
        else:
            # Every buffer is still viewed: this one takes the place of the next in turn (the
            # one it replaces lives on for whoever views it).
            self._pool[self._next] = buf
            self._next = (self._next + 1) % POOL
        return buf

    def read(self, size: int, offset: int, index: int) -> Plain:
        with memoryview(self._sealed) as sealed:
            got = os.preadv(self._fd, [sealed[:size]], offset)
            if got != size:
                raise BlobCorrupt("sealed blob ended early")
            if self.views:
                buf = self._buffer()
                n = self._opener.open_into(index, sealed[:size], buf)
                return memoryview(buf)[:n]
            if self._copying is None:
                self._copying = bytearray(FILE_PIECE)
            n = self._opener.open_into(index, sealed[:size], self._copying)
        with memoryview(self._copying) as plain:
            return bytes(plain[:n])


def decrypted_file(
    source: FileRange, first: int, length: int, opener: Opener
) -> tuple[AsyncGenerator[Plain], _FileReader]:
    """Plaintext of ``length`` bytes of a local file's segments from segment ``first``, and the
    reader (whose ``views`` the stream sets)."""
    reader = _FileReader(source.file_range()[0], opener)
    return _file_pieces(source, first, length, reader), reader


async def _file_pieces(
    source: FileRange, first: int, length: int, reader: _FileReader
) -> AsyncGenerator[Plain]:
    """Each piece read and decrypted in one thread hand-off (half the hops of reading, then
    decrypting), the next piece while this one is being sent."""
    _, pos, _ = source.file_range()
    end = pos + length
    index = first

    def start() -> asyncio.Future[Plain] | None:
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
            del plain  # no longer viewed from here: the consumer decides what it keeps
    finally:
        if work is not None and not work.done():
            # The thread reads with the fd the inner stream closes next: it finishes first.
            await asyncio.wait([work])
        if work is not None and work.done() and not work.cancelled():
            work.exception()  # retrieved: a read-ahead nobody waits for is no error


class SealedStream:
    """The plaintext ``[start, end)`` of a sealed blob, decrypted segment by segment.

    Iterated, it yields bytes; :meth:`views` yields the same bytes as memoryviews, without the
    copy when the stream reads a local file (:class:`~blobstore.port.Views`)."""

    def __init__(
        self,
        plain: AsyncGenerator[Plain],
        *,
        skip: int,
        length: int,
        closing: BlobStream,
        reader: _FileReader | None = None,
    ) -> None:
        self._plain = plain
        self._skip = skip
        self._left = length
        self._length = length
        self._closing = closing
        self._reader = reader
        self._first: Plain | None = None

    @property
    def length(self) -> int:
        return self._length

    async def prime(self) -> None:
        """Decrypt the first piece now, so damage at the start is an error before any byte."""
        self._first = await self._next()

    async def _next(self) -> Plain | None:
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

    async def _pieces(self) -> AsyncIterator[Plain]:
        first, self._first = self._first, None
        if first:
            yield first
        del first
        while (piece := await self._next()) is not None:
            yield piece

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for piece in self._pieces():
            yield piece if isinstance(piece, bytes) else bytes(piece)

    async def views(self) -> AsyncIterator[memoryview]:
        if self._reader is not None:
            self._reader.views = True  # from the next read on: the first is already decrypted
        async for piece in self._pieces():
            yield piece if isinstance(piece, memoryview) else memoryview(piece)

    async def aclose(self) -> None:
        # A thread may still be reading with the fd (a cancelled download): let it finish
        # before the inner stream closes the fd.
        with contextlib.suppress(Exception):
            await self._plain.aclose()
        await self._closing.aclose()


async def read_all(stream: BlobStream) -> bytes:
    """A stream's bytes, whole, and the stream closed."""
    try:
        pieces = [piece async for piece in stream]
    finally:
        await stream.aclose()
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)

"""Reading sealed blobs from a backend behind a network (S3): a range in one ranged GET.

A sealed blob's trailer says how to open its segments.  The streamed path
(:meth:`SealedBackend.open <blobstore.sealed.SealedBackend.open>`) learns it anew for every read:
an open of the whole blob for its size, a GET of the trailer, then a GET of the range, and the
trailer's HMAC and the blob key's derivation each time.  Here a verified trailer is remembered per
ref (a bounded LRU, with the blob's cipher), so once a blob has been read in this process a range
is one GET of exactly the stored segments that hold it, or none when the inner backend's cache
(:mod:`blobstore.blobcache`) has the blob.

The first read of a ref is one suffix GET of up to :func:`first_read` bytes: a small blob comes
whole (and its bytes are decrypted from it, and cached by the inner backend); for a large one it
brings the trailer and the stored size, and the range takes one GET more.

Why a remembered trailer is safe: a blob is never replaced while it is stored (publish creates
or finds, never overwrites).  gc may delete a blob and an upload store the same content again
under the same ref, sealed under a new blob key: then the remembered trailer no longer opens the
stored segments, whose tags fail.  Every segment is still authenticated before its bytes are
handed on, so that shows as BlobCorrupt before any byte, and the read is made once more from
scratch (trailer and, from the engine, the bytes) before the error is believed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Protocol, runtime_checkable

from blobstore.blobcache import BlobCache
from blobstore.errors import BlobCorrupt
from blobstore.keyring import KeyRing
from blobstore.port import BlobStream
from blobstore.refs import BlobRef, ref_scope
from blobstore.sealed_reads import THREAD_MIN, SealedStream, read_all
from blobstore.sealed_trailers import TRAILERS, Verified, VerifiedTrailers
from blobstore.sealing import SEALED_SEGMENT, SEGMENT, TRAILER, Opener, ScopeKey, stored_range
from blobstore.streams import BytesStream

# Stored ranges up to this size are fetched and decrypted whole (one await, one hand-off at
# most); larger ones stream a piece at a time.
WHOLE = (1 << 20) + (1 << 10)
# The first read of a blob when no cache says otherwise: small blobs come whole in it.
FIRST_READ = 64 << 10


async def _plain_runs(
    stream: BlobStream, first: int, length: int, opener: Opener
) -> AsyncGenerator[bytes | memoryview]:
    """The plaintext of ``length`` stored bytes of whole segments from segment ``first``, as the
    engine's pieces arrive: each run of whole segments is decrypted from the buffer it was
    gathered in straight into the run it yields (the general regrouping, which any backend's
    stream goes through, copies each piece twice more)."""
    buf = bytearray()
    index = first
    seen = 0
    async for piece in stream:
        take = len(piece) if seen + len(piece) <= length else length - seen
        buf += piece if take == len(piece) else memoryview(piece)[:take]
        seen += take
        done = seen >= length
        whole = len(buf) if done else len(buf) // SEALED_SEGMENT * SEALED_SEGMENT
        if whole:
            out = bytearray(whole)
            sealed = memoryview(buf)[:whole]
            if whole < THREAD_MIN:
                n = opener.open_into(index, sealed, out)
            else:  # the AES of a MiB: half a millisecond, off the event loop
                n = await asyncio.to_thread(opener.open_into, index, sealed, out)
            sealed.release()
            del buf[:whole]  # the rest of a split segment moves to the front
            del out[n:]
            index += -(-whole // SEALED_SEGMENT)
            yield out  # type: ignore[misc]  # a bytearray: a body like bytes, no copy
        if done:
            return


@runtime_checkable
class Tails(Protocol):
    """What these reads need of the inner backend besides the reader role: a blob's size and
    last bytes in one request, and the cache it keeps (if any)."""

    cache: BlobCache | None

    async def tail(self, ref: BlobRef, count: int) -> tuple[int, bytes]: ...

    async def open_sized(
        self, ref: BlobRef, start: int = 0, end: int | None = None
    ) -> tuple[BlobStream, int]: ...


class RemoteReads:
    """Sealed reads over ``inner``, with the trailers it has verified."""

    def __init__(self, inner: Tails, keys: KeyRing, limit: int = TRAILERS) -> None:
        self._inner = inner
        self._keys = keys
        self._known = VerifiedTrailers(limit)
        cache = inner.cache
        # A blob the cache would keep comes whole in its first read.
        self._first_read = max(FIRST_READ, cache.max_blob if cache is not None else 0)

    def __len__(self) -> int:
        return len(self._known)

    def forget(self, ref: BlobRef) -> None:
        self._known.forget(ref)
        if self._inner.cache is not None:
            self._inner.cache.discard(ref)

    async def open(self, ref: BlobRef, start: int, end: int | None) -> BlobStream:
        scope = ref_scope(ref)
        assert scope is not None
        key = await self._keys.key(scope, create=False)
        known = self._known.get(ref)
        if known is not None and known.key is key:
            try:
                return await self._open_known(ref, known, start, end)
            except BlobCorrupt:
                # Stored again since (gc, then the same content uploaded): learn it anew.
                self.forget(ref)
        return await self._open_first(ref, key, scope, start, end)

    async def _open_first(
        self, ref: BlobRef, key: ScopeKey, scope: str, start: int, end: int | None
    ) -> BlobStream:
        stored, tail = await self._inner.tail(ref, self._first_read)
        if stored < TRAILER:
            raise BlobCorrupt("sealed blob is too short")
        known = self._known.verify(ref, key, scope, tail[-TRAILER:], stored)
        if len(tail) == stored:
            plain = await self._decrypt(known, tail[: stored - TRAILER], start, end, offset=0)
            return BytesStream(plain)
        return await self._open_known(ref, known, start, end)

    async def _decrypt(
        self, known: Verified, sealed: bytes, start: int, end: int | None, *, offset: int
    ) -> bytes:
        """Plaintext ``[start, end)`` from ``sealed``, the stored bytes from ``offset`` on (no
        copy of the ciphertext; the plaintext decrypted into the buffer that is returned)."""
        stop = known.plain if end is None else min(end, known.plain)
        if start >= stop:
            return b""
        first, lo, hi = stored_range(known.plain, start, stop)
        out = bytearray(hi - lo)
        segs = memoryview(sealed)[lo - offset : hi - offset]
        if len(segs) < THREAD_MIN:
            n = known.opener.open_into(first, segs, out)
        else:  # the AES of up to a MiB: half a millisecond, off the event loop
            n = await asyncio.to_thread(known.opener.open_into, first, segs, out)
        skip = start - first * SEGMENT
        # Both cuts move no bytes: a bytearray drops its head by moving its start.
        del out[min(n, skip + stop - start) :]
        del out[:skip]
        return out  # type: ignore[return-value]  # a bytearray: a body like bytes, no copy

    async def _open_known(
        self, ref: BlobRef, known: Verified, start: int, end: int | None
    ) -> BlobStream:
        """The range through the remembered trailer.  The blob's size comes with every answer
        and must still be the one the trailer was verified with; a range that reaches the last
        segment brings the trailer along (48 bytes more in the same GET), and a streamed one
        (over :data:`WHOLE`) reads it first, so a blob cut, grown or given another trailer since
        is BlobCorrupt before any byte.  Only a range of up to :data:`WHOLE` in the middle
        trusts the remembered trailer alone; its segments are still authenticated by it."""
        stop = known.plain if end is None else min(end, known.plain)
        if start >= stop:
            return BytesStream(b"")
        first, lo, hi = stored_range(known.plain, start, stop)
        if hi - lo <= WHOLE:
            upto = known.stored if hi == known.stored - TRAILER else hi
            stream, size = await self._inner.open_sized(ref, lo, upto)
            sealed = await read_all(stream)
            if size != known.stored or len(sealed) != upto - lo:
                raise BlobCorrupt("sealed blob was cut or grown")
            if upto != hi and sealed[hi - lo :] != known.raw:
                raise BlobCorrupt("sealed blob's trailer changed")
            return BytesStream(await self._decrypt(known, sealed, start, stop, offset=lo))
        size, raw = await self._inner.tail(ref, TRAILER)
        if size != known.stored or raw != known.raw:
            raise BlobCorrupt("sealed blob's trailer changed")
        stream, size = await self._inner.open_sized(ref, lo, hi)
        try:
            if size != known.stored:
                raise BlobCorrupt("sealed blob was cut or grown")
            out = SealedStream(
                _plain_runs(stream, first, hi - lo, known.opener),
                skip=start - first * SEGMENT,
                length=stop - start,
                closing=stream,
            )
            await out.prime()
            return out
        except BaseException:
            await stream.aclose()
            raise

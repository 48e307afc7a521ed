"""Whole reads from the local backend through the sealing wrapper: a body of up to a MiB (a small
file, a range) read, checked and decrypted in one go (:class:`~blobstore.port.ReadWhole`).

A sealed blob costs one open, one ``fstat``, one read of its trailer and one read of only the
segments that hold the range, then their decryption, all on one thread: the caller's for a small
range, one hand-off for a larger one.  The streamed path (:meth:`SealedBackend.open
<blobstore.sealed.SealedBackend.open>`) took five hand-offs, three opens, two HMACs and a key
schedule and several copies of the body for the same range.

The trailer is read every time and compared with the one last verified for this ref (a bounded
cache of verified trailers keeps the blob's cipher with it): an equal trailer of a file of the
same size needs neither the binding's HMAC nor the blob key's derivation again; any other
trailer is checked in full, so a blob replaced, cut or damaged is refused exactly as on the
streamed path, and every segment is still authenticated before its bytes are returned.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Protocol, TypeVar, runtime_checkable

from blobstore.errors import BlobCorrupt, translate_oserror
from blobstore.keyring import KeyRing
from blobstore.refs import BlobRef, is_sealed, ref_scope
from blobstore.sealed_trailers import VerifiedTrailers
from blobstore.sealing import SEGMENT, TRAILER, ScopeKey, stored_range

T = TypeVar("T")

# Ranges up to this many bytes are read and decrypted on the caller's thread (a few page-cache
# KiB cost less than the hand-off), larger ones in one hand-off to the store's threads: a blob
# not in the page cache would stall the event loop on the disk (docs/measured.md).
INLINE = 64 * 1024


@runtime_checkable
class LocalReads(Protocol):
    """What the local backend offers the whole reads: its files opened on the calling thread,
    its own threads, and its own whole reads (of plain blobs)."""

    def open_fd(self, ref: BlobRef) -> int: ...

    async def run(self, fn: Callable[..., T], *args: object) -> T: ...

    async def read_whole(self, ref: BlobRef, start: int, end: int) -> bytes | bytearray: ...


class _Scratch(threading.local):
    """Each thread's buffer for the sealed bytes it reads (kept: fresh memory per read costs
    more than the AES on this VM, docs/measured.md)."""

    def __init__(self) -> None:
        self.buf = bytearray()


class WholeReads:
    """The whole reads of a sealing wrapper over the local backend."""

    def __init__(self, inner: LocalReads, keys: KeyRing) -> None:
        self._inner = inner
        self._keys = keys
        self.trailers = VerifiedTrailers()
        self._scratch = _Scratch()

    async def read(self, ref: BlobRef, start: int, end: int) -> bytes | bytearray:
        if not is_sealed(ref):
            return await self._inner.read_whole(ref, start, end)
        scope = ref_scope(ref)
        assert scope is not None
        key = await self._keys.key(scope, create=False)
        if end - start <= INLINE:
            return self.read_sealed(ref, key, scope, start, end)
        return await self._inner.run(self.read_sealed, ref, key, scope, start, end)

    def read_sealed(
        self, ref: BlobRef, key: ScopeKey, scope: str, start: int, end: int
    ) -> bytes | bytearray:
        """The plaintext ``[start, end)`` (fewer bytes when the blob is shorter), on this
        thread."""
        fd = self._inner.open_fd(ref)
        try:
            return self._read_fd(fd, ref, key, scope, start, end)
        except OSError as exc:
            raise translate_oserror(exc) from None
        finally:
            os.close(fd)

    def _read_fd(
        self, fd: int, ref: BlobRef, key: ScopeKey, scope: str, start: int, end: int
    ) -> bytes | bytearray:
        stored = os.fstat(fd).st_size
        if stored < TRAILER:
            raise BlobCorrupt("sealed blob is too short")
        raw = os.pread(fd, TRAILER, stored - TRAILER)
        verified = self.trailers.verify(ref, key, scope, raw, stored)
        stop = min(end, verified.plain)
        if start >= stop:
            return b""
        first, lo, hi = stored_range(verified.plain, start, stop)
        size = hi - lo
        scratch = self._scratch
        if len(scratch.buf) < size:
            scratch.buf = bytearray(size)
        with memoryview(scratch.buf) as whole:
            sealed = whole[:size]
            if os.preadv(fd, [sealed], lo) != size:
                raise BlobCorrupt("sealed blob ended early")
            out = bytearray(size)
            n = verified.opener.open_into(first, sealed, out)
            sealed.release()
        skip = start - first * SEGMENT
        # Both cuts move no bytes: a bytearray drops its head by moving its start.
        del out[min(n, skip + stop - start) :]
        del out[:skip]
        return out  # a bytearray: a body like bytes, without a copy

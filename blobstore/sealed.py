"""Encryption at rest over any backend: a :class:`~blobstore.port.BlobBackend` that seals what it
is asked to seal and opens sealed blobs on read.

The ref says how a blob is stored (``-e<scope>``: sealed under that scope's key, see
:mod:`blobstore.refs`), so plain blobs (written before, or with encryption off) and sealed ones
live in one store and are read side by side.  Writes: :mod:`blobstore.sealed_staging`.  Reads:
the trailer is checked against the ref before anything is returned, and each segment is
authenticated before its bytes are handed on (:mod:`blobstore.sealed_reads`); the first piece is
decrypted inside :meth:`SealedBackend.open`, so a damaged start is an error before any byte is
sent, and a damaged segment later ends the stream with BlobCorrupt.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from blobstore.errors import BlobCorrupt
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
    Staging,
    StatMany,
    StatManyBlocking,
    TempFiles,
)
from blobstore.refs import BlobRef, is_sealed, ref_digest, ref_scope
from blobstore.sealed_reads import (
    SealedStream,
    crypt,
    decrypted,
    decrypted_file,
    read_all,
    segments,
)
from blobstore.sealed_remote import RemoteReads, Tails
from blobstore.sealed_staging import SealedStaging
from blobstore.sealed_whole import LocalReads, WholeReads
from blobstore.sealing import (
    SEGMENT,
    TRAILER,
    Opener,
    ScopeKey,
    plain_size,
    read_trailer,
    sealed_size,
    stored_range,
)
from blobstore.streams import BytesStream, read_opened

# A sealed blob stored in at most this many bytes is read whole in one go (one open, one read):
# most blobs are small, and that is the fewest round trips.
SMALL_BLOB = sealed_size(1 << 20)


class SealedBackend:
    """Seals new blobs (when ``sealing``) and opens sealed ones, over ``inner``."""

    def __init__(self, inner: BlobBackend, keys: KeyRing, *, sealing: bool) -> None:
        self.inner = inner
        self.keys = keys
        self._sealing = sealing

    @property
    def sealing(self) -> bool:
        return self._sealing

    async def stage(self, size: int | None = None) -> Staging:
        return await self.inner.stage(size)

    async def stage_sealed(self, scope: str, size: int | None = None) -> SealedStaging:
        key = await self.keys.key(scope, create=True)
        inner = await self.inner.stage(None if size is None else sealed_size(size))
        return SealedStaging(inner, key, scope, self)

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
            tail = await read_all(await self.inner.open(ref, stored - TRAILER, stored))
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
            skip = start - first * SEGMENT
            if isinstance(whole, FileRange):
                plain, reader = decrypted_file(whole, first, hi - lo, opener)
                stream = SealedStream(
                    plain, skip=skip, length=stop - start, closing=whole, reader=reader
                )
            else:
                runs = segments(aiter(whole), first, hi - lo)
                stream = SealedStream(
                    decrypted(runs, opener), skip=skip, length=stop - start, closing=whole
                )
            await stream.prime()
            return stream
        except BaseException:
            await whole.aclose()
            raise

    async def _open_small(
        self, ref: BlobRef, key: ScopeKey, whole: BlobStream, start: int, end: int | None
    ) -> BlobStream:
        raw = await read_all(whole)
        scope = ref_scope(ref)
        assert scope is not None
        stored = len(raw)
        trailer = read_trailer(
            key, raw[stored - TRAILER :], stored=stored, digest=ref_digest(ref), scope=scope
        )
        plain = await crypt(Opener(key, trailer).open_many, 0, raw[: stored - TRAILER])
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


class SealedLocalBackend(SealedBackend):
    """Over the local backend: its files stay reachable for repair's quarantine and fsck's
    temp-file check.  A sealed ref's file holds ciphertext: read content through :meth:`open`
    or :meth:`read_whole`."""

    def __init__(self, inner: BlobBackend, keys: KeyRing, *, sealing: bool) -> None:
        super().__init__(inner, keys, sealing=sealing)
        self._whole = WholeReads(inner, keys) if isinstance(inner, LocalReads) else None

    async def read_whole(self, ref: BlobRef, start: int, end: int) -> bytes | bytearray:
        """A body of up to a MiB in at most one hand-off (:mod:`blobstore.sealed_whole`)."""
        if self._whole is None:
            return await read_all(await self.open(ref, start, end))
        return await self._whole.read(ref, start, end)

    def local_path(self, ref: BlobRef) -> Path:
        assert isinstance(self.inner, LocalFiles)
        return self.inner.local_path(ref)

    def temp_files(self) -> list[tuple[Path, int, float]]:
        assert isinstance(self.inner, TempFiles)
        return self.inner.temp_files()

    async def stat_many(self, refs: Sequence[BlobRef]) -> list[int | None]:
        """The group commit's check, in the inner backend's one hand-off."""
        assert isinstance(self.inner, StatMany)
        return _plain_sizes(refs, await self.inner.stat_many(refs))

    def stat_many_blocking(self, refs: Sequence[BlobRef]) -> list[int | None]:
        """:meth:`stat_many` on the caller's thread (a commit's check inside a write unit)."""
        assert isinstance(self.inner, StatManyBlocking)
        return _plain_sizes(refs, self.inner.stat_many_blocking(refs))


def _plain_sizes(refs: Sequence[BlobRef], sizes: list[int | None]) -> list[int | None]:
    """Sealed sizes mapped to plaintext (a size no sealed blob has stays as stored: present,
    and fsck's to judge)."""
    return [
        size if size is None or not is_sealed(ref) else (plain_size(size) or size)
        for ref, size in zip(refs, sizes, strict=True)
    ]


class SealedProbedBackend(SealedBackend):
    """Over a backend behind a network, which the health check can ask whether it answers.
    Sealed reads remember verified trailers, so a range is one ranged GET
    (:mod:`blobstore.sealed_remote`), when the backend can read a blob's tail."""

    def __init__(self, inner: BlobBackend, keys: KeyRing, *, sealing: bool) -> None:
        super().__init__(inner, keys, sealing=sealing)
        self._remote = RemoteReads(inner, keys) if isinstance(inner, Tails) else None

    async def open(self, ref: BlobRef, start: int = 0, end: int | None = None) -> BlobStream:
        if self._remote is None or not is_sealed(ref):
            return await super().open(ref, start, end)
        return await self._remote.open(ref, start, end)

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
        and isinstance(inner, StatManyBlocking)
    ):
        return SealedLocalBackend(inner, keys, sealing=sealing)
    if isinstance(inner, Probe) and isinstance(inner, Leftovers):
        return SealedRemoteBackend(inner, keys, sealing=sealing)
    if isinstance(inner, Probe):
        return SealedProbedBackend(inner, keys, sealing=sealing)
    return SealedBackend(inner, keys, sealing=sealing)


__all__ = ["UNSCOPED", "SealedBackend", "seal_backend"]

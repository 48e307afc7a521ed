"""S3 backend (SeaweedFS in tests and CI), through one kept obstore client per backend.

Why obstore rather than aiobotocore: on SeaweedFS here it did 4 KiB PUTs about 2.8x faster at 32
in flight (1,013/s against 364/s) and 2.3x faster one at a time, and a 256 MiB multipart upload
1.7x faster; botocore's request building costs milliseconds of Python per call, which is the
wall for small uploads.  obstore also has conditional PUT and copy (``If-None-Match: *``) and
ships its own types.  docs/storage-s3.md has the table.

Layout in the bucket (under an optional prefix): ``blobs/<ref>`` (one object per blob: its bytes,
or for a large blob a pointer to them) and ``data/<name>`` (a large blob's bytes).  The put path:

- **Small blobs** (up to :data:`PART_SIZE`) stay in memory while they stream and are published
  with one conditional PUT (``If-None-Match: *``) straight to ``blobs/<ref>``: one round trip, and
  a blob is never replaced (412 means "exists": a dedup candidate).
- **Large blobs** stream to ``data/<name>``, since the ref is known only at the end: as one PUT
  when their size is known before the first byte (:mod:`blobstore.s3_one_put`), else as a
  multipart upload with at most :data:`~blobstore.s3_staging.PARTS_IN_FLIGHT` parts in flight
  besides the one filling.  Publish completes it, then writes a pointer to it at
  ``blobs/<ref>``, conditional again (:mod:`blobstore.s3_pointers`): nothing is copied.  Reads of
  a large blob follow the pointer (one small GET more, remembered per process).

Dedup stays collision-safe: a hit is trusted only after the bytes compare equal (a GET of the
small blob compared in memory; for large ones a size check by HEAD, then both objects compared by
ranged GETs of a part at a time, stopping at the first difference).

Bodies go out signed as ``UNSIGNED-PAYLOAD``, with no extra checksum: the blob's ref (and, when
sealed, its AES-GCM tags) verify every byte end to end (docs/storage-s3.md, "Integrity of what
is sent").
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TYPE_CHECKING

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

from blobstore import s3_leftovers, s3_pointers
from blobstore.backends import S3Location
from blobstore.blobcache import BlobCache
from blobstore.errors import BlobNotFound, StorageFailure, StoreUnavailable
from blobstore.port import BlobInfo, Leftover
from blobstore.refs import BlobRef, is_ref
from blobstore.s3_errors import RETRY_AFTER_S, call, translate
from blobstore.s3_one_put import HttpClient, OnePut
from blobstore.s3_staging import BLOBS, DATA, PART_SIZE, S3Staging
from blobstore.streams import BytesStream, read_opened

if TYPE_CHECKING:
    from obstore import GetOptions, GetResult

__all__ = [
    "DATA",
    "PART_SIZE",
    "RETRY_AFTER_S",
    "S3Backend",
    "S3Location",
    "S3Staging",
    "translate",
]

# Pieces a download yields: the same 1 MiB as the local backend's reads.
READ_PIECE = 1 << 20
# An engine that does not answer within this is treated as unavailable (503, Retry-After),
# never waited for by a client holding a connection.
CONNECT_TIMEOUT = timedelta(seconds=5)
REQUEST_TIMEOUT = timedelta(seconds=120)
RETRY_TIMEOUT = timedelta(seconds=10)
MAX_RETRIES = 3

# Pointers remembered per process, so repeated (range) reads of a large blob skip the pointer.
POINTER_CACHE = 4096


class S3BlobStream:
    """A GET of one blob's range, read in pieces of about :data:`READ_PIECE`."""

    def __init__(self, result: GetResult | None, length: int) -> None:
        self._result = result
        self._length = length

    @property
    def length(self) -> int:
        return self._length

    async def __aiter__(self) -> AsyncIterator[bytes]:
        result, self._result = self._result, None
        if result is None:
            return
        try:
            if self._length <= READ_PIECE:
                # One piece at most (a small blob, a 1 MiB range): one await for the whole body
                # instead of the stream's machinery.
                data = await result.bytes_async()
                if len(data):
                    yield bytes(data)
                return
            async for piece in result.stream(min_chunk_size=READ_PIECE):
                yield bytes(piece)
        except (BaseError, OSError) as exc:
            raise translate(exc) from None

    async def aclose(self) -> None:
        self._result = None  # dropping the result releases its connection


class S3Backend:
    """Blobs as objects in one bucket, through one kept client (connections are pooled)."""

    def __init__(self, location: S3Location, *, cache: BlobCache | None = None) -> None:
        self.location = location
        self._pointers: dict[BlobRef, tuple[str, int]] = {}
        self._http: HttpClient | None = None  # for one-PUT uploads
        self._closed = False
        # Small blobs' bytes, for reads only (never for stat or dedup: :mod:`blobstore.blobcache`).
        self.cache = cache if cache is not None and cache.enabled else None
        self.store = S3Store(
            location.bucket,
            endpoint=location.endpoint,
            region=location.region,
            access_key_id=location.access_key_id,
            secret_access_key=location.secret_access_key,
            virtual_hosted_style_request=False,
            # No SHA-256 of every body for the signature (a core's worth of work per ~1.3 GB/s
            # in the client, and the engine's to check it): the headers stay signed, and the
            # bytes are verified end to end by their ref (and AES-GCM tags when sealed).
            unsigned_payload=True,
            # SeaweedFS, MinIO and AWS honour If-None-Match on CopyObject: a copy never
            # replaces a blob.
            copy_if_not_exists="header:If-None-Match:*",
            client_options={
                "allow_http": location.endpoint.startswith("http://"),
                "connect_timeout": CONNECT_TIMEOUT,
                "timeout": REQUEST_TIMEOUT,
            },
            retry_config={
                "max_retries": MAX_RETRIES,
                "retry_timeout": RETRY_TIMEOUT,
                "backoff": {
                    "init_backoff": timedelta(milliseconds=100),
                    "max_backoff": timedelta(seconds=2),
                    "base": 2,
                },
            },
        )

    def key(self, kind: str, name: str) -> str:
        return f"{self.location.prefix}{kind}{name}"

    async def check(self) -> None:
        """One cheap request (a listing of at most one key), so a bad endpoint, bucket or key
        shows at start.  Raises StoreUnavailable or StorageFailure."""
        stream = obstore.list(self.store, prefix=self.key(BLOBS, ""), chunk_size=1)
        try:
            async for _ in stream:
                break
        except (BaseError, OSError) as exc:
            raise translate(exc) from None

    async def stage(self, size: int | None = None) -> S3Staging:
        return S3Staging(self, size)

    def one_put(self, key: str, size: int) -> OnePut:
        """A PUT of ``size`` bytes to ``key``, under way (:mod:`blobstore.s3_one_put`)."""
        if self._closed:
            raise StoreUnavailable("the blob store is closing", retry_after=RETRY_AFTER_S)
        if self._http is None:
            # Made on first use, inside the running loop; its pool is kept for the next ones.
            self._http = HttpClient()
        return OnePut(self._http, self.location, key, size)

    def remember(self, ref: BlobRef, key: str, size: int) -> None:
        """Where a large blob's bytes are, for reads (never for stat: gc may have taken it)."""
        if len(self._pointers) >= POINTER_CACHE:
            self._pointers.pop(next(iter(self._pointers)))
        self._pointers[ref] = (key, size)

    async def locate(self, ref: BlobRef) -> tuple[str, int] | None:
        """(key, size) of the object holding the blob's bytes, asking the engine (a HEAD, and
        a GET of the pointer for a large blob); None when the blob is not stored."""
        key = self.key(BLOBS, ref)
        try:
            meta = await call(obstore.head_async(self.store, key))
            if meta["size"] != s3_pointers.POINTER_SIZE:
                return key, int(meta["size"])
            result = await call(obstore.get_async(self.store, key))
            body = bytes(await call(result.bytes_async()))
        except BlobNotFound:
            return None
        pointer = s3_pointers.decode(body, result.attributes.get("Content-Type"))
        if pointer is None:
            return key, len(body)
        data = self.key(DATA, pointer[0])
        self.remember(ref, data, pointer[1])
        return data, pointer[1]

    async def stat(self, ref: BlobRef) -> int | None:
        found = await self.locate(ref)
        return None if found is None else found[1]

    async def open(
        self, ref: BlobRef, start: int = 0, end: int | None = None
    ) -> S3BlobStream | BytesStream:
        return (await self.open_sized(ref, start, end))[0]

    async def open_sized(
        self, ref: BlobRef, start: int = 0, end: int | None = None
    ) -> tuple[S3BlobStream | BytesStream, int]:
        """:meth:`open`, and the blob's whole size as the engine (or the cache) holds it now,
        learnt from the same answer (a range past the end: at most ``start``)."""
        cache = self.cache
        if cache is not None:
            held = cache.get(ref)
            if held is not None:
                return BytesStream(held[start:end] if start or end is not None else held), len(held)
        if end is not None and end <= start:
            size = await self.stat(ref)
            if size is None:
                raise BlobNotFound(ref)
            return S3BlobStream(None, 0), size
        known = self._pointers.get(ref)
        if known is not None:
            try:
                return await self._open_at(known, ref, start, end)
            except BlobNotFound:
                known = None  # gone, or gc took it and an upload stored it again elsewhere
        if known is None:
            # Optimistic: one GET serves a small blob; a pointer is recognised by its header.
            result = await self._get(self.key(BLOBS, ref), ref, start, end)
            if result is not None and not self._is_pointer(result):
                lo, hi = result.range
                size = int(result.meta["size"])
                if cache is not None and lo == 0 and hi == size and cache.fits(hi):
                    # The whole of a small blob: read it now and keep it.
                    data = await self._body(result)
                    cache.put(ref, data)
                    return BytesStream(data), size
                return S3BlobStream(result, hi - lo), size
            known = await self.locate(ref)
            if known is None:
                raise BlobNotFound(ref)
            if known[0] == self.key(BLOBS, ref):
                return S3BlobStream(None, 0), known[1]  # a range past the end of a small blob
        return await self._open_at(known, ref, start, end)

    async def _open_at(
        self, known: tuple[str, int], ref: BlobRef, start: int, end: int | None
    ) -> tuple[S3BlobStream, int]:
        key, size = known
        if start >= size:
            return S3BlobStream(None, 0), size
        result = await self._get(key, ref, start, None if end is None else min(end, size))
        if result is None:
            return S3BlobStream(None, 0), min(start, size)
        lo, hi = result.range
        return S3BlobStream(result, hi - lo), int(result.meta["size"])

    @staticmethod
    def _is_pointer(result: GetResult) -> bool:
        return bool(
            result.meta["size"] == s3_pointers.POINTER_SIZE
            and result.attributes.get("Content-Type") == s3_pointers.POINTER_TYPE
        )

    async def _get(self, key: str, ref: BlobRef, start: int, end: int | None) -> GetResult | None:
        """GET ``[start, end)`` of ``key``; None when the range starts past its end (416)."""
        if start == 0 and end is None:
            return await self._fetch(key, ref, None)
        if end is None:
            return await self._fetch(key, ref, {"range": {"offset": start}})
        return await self._fetch(key, ref, {"range": (start, end)})

    async def tail(self, ref: BlobRef, count: int) -> tuple[int, bytes]:
        """``(size, the blob's last count bytes)`` (all of it when it is shorter), in one GET
        (two for a large blob whose pointer is not remembered yet; none when the blob is
        cached).  A small blob read whole is kept in the cache.  Raises BlobNotFound."""
        cache = self.cache
        if cache is not None:
            held = cache.get(ref)
            if held is not None:
                return len(held), held[-count:] if count < len(held) else held
        known = self._pointers.get(ref)
        if known is not None:
            try:
                return await self._tail_of(known[0], ref, count)
            except BlobNotFound:
                self._pointers.pop(ref, None)
        key = self.key(BLOBS, ref)
        result = await self._suffix(key, ref, count)
        if result is None:
            return 0, b""
        if self._is_pointer(result):
            known = await self.locate(ref)
            if known is None:
                raise BlobNotFound(ref)
            return await self._tail_of(known[0], ref, count)
        size = int(result.meta["size"])
        data = await self._body(result)
        if cache is not None and len(data) == size and cache.fits(size):
            cache.put(ref, data)
        return size, data

    async def _tail_of(self, key: str, ref: BlobRef, count: int) -> tuple[int, bytes]:
        result = await self._suffix(key, ref, count)
        if result is None:
            return 0, b""
        return int(result.meta["size"]), await self._body(result)

    async def _suffix(self, key: str, ref: BlobRef, count: int) -> GetResult | None:
        """GET the last ``count`` bytes of ``key``; None when the object is empty."""
        return await self._fetch(key, ref, {"range": {"suffix": count}})

    async def _fetch(self, key: str, ref: BlobRef, options: GetOptions | None) -> GetResult | None:
        """GET ``key`` with ``options``; None for an unsatisfiable range (416), BlobNotFound
        (naming ``ref``, whose remembered pointer is dropped) when the object is gone."""
        try:
            return await call(obstore.get_async(self.store, key, options=options))
        except BlobNotFound:
            self._pointers.pop(ref, None)
            raise BlobNotFound(ref) from None
        except StorageFailure as exc:
            if "416" not in str(exc):
                raise
            return None

    @staticmethod
    async def _body(result: GetResult) -> bytes:
        try:
            return bytes(await result.bytes_async())
        except (BaseError, OSError) as exc:
            raise translate(exc) from None

    def read(self, ref: BlobRef, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        return read_opened(self.open(ref, start, end))

    async def delete(self, ref: BlobRef) -> None:
        """The ref first (so the blob is gone at once), then a large blob's bytes; a crash in
        between leaves a data object no pointer names, which fsck reports as a leftover."""
        self._pointers.pop(ref, None)
        if self.cache is not None:
            self.cache.discard(ref)
        found = await self.locate(ref)
        await call(obstore.delete_async(self.store, self.key(BLOBS, ref)))
        if found is not None and found[0] != self.key(BLOBS, ref):
            await call(obstore.delete_async(self.store, found[0]))
        self._pointers.pop(ref, None)

    async def scan(self) -> AsyncIterator[BlobInfo]:
        data = await self._data_objects()
        async for ref, size, pointer in self._scan_blobs():
            if pointer is None:
                yield BlobInfo(ref, size)
            elif pointer in data:  # a pointer whose bytes are gone: the blob is missing
                yield BlobInfo(ref, data[pointer])

    async def _data_objects(self) -> dict[str, int]:
        prefix = self.key(DATA, "")
        found: dict[str, int] = {}
        try:
            async for batch in obstore.list(self.store, prefix=prefix, chunk_size=1000):
                for meta in batch:
                    found[meta["path"][len(prefix) :]] = int(meta["size"])
        except (BaseError, OSError) as exc:
            raise translate(exc) from None
        return found

    async def _scan_blobs(self) -> AsyncIterator[tuple[BlobRef, int, str | None]]:
        """(ref, listed size, data object name if it is a pointer) of every blob."""
        prefix = self.key(BLOBS, "")
        try:
            async for batch in obstore.list(self.store, prefix=prefix, chunk_size=1000):
                for meta in batch:
                    name = meta["path"][len(prefix) :]
                    if not is_ref(name):
                        continue
                    ref, size, pointer = BlobRef(name), int(meta["size"]), None
                    if size == s3_pointers.POINTER_SIZE:
                        try:
                            result = await call(obstore.get_async(self.store, meta["path"]))
                            body = bytes(await call(result.bytes_async()))
                        except BlobNotFound:
                            continue  # deleted since the listing: not a blob any more
                        decoded = s3_pointers.decode(body, result.attributes.get("Content-Type"))
                        pointer = decoded[0] if decoded else None
                    yield ref, size, pointer
        except (BaseError, OSError) as exc:
            raise translate(exc) from None

    async def leftovers(self) -> list[Leftover]:
        """Data objects no pointer names, and incomplete multipart uploads
        (:mod:`blobstore.s3_leftovers`)."""
        named = {pointer async for _, _, pointer in self._scan_blobs() if pointer is not None}
        prefix = self.key(DATA, "")
        objects = await s3_leftovers.staged_objects(self.store, self.location, prefix, named)
        return objects + await s3_leftovers.multipart_uploads(self.location, prefix)

    async def remove_leftover(self, name: str) -> None:
        await s3_leftovers.remove(self.store, self.location, name, self.key(DATA, ""))

    async def close(self) -> None:
        # obstore's pool goes with the object; the one-PUT client's must be closed.
        self._closed = True
        if self._http is not None:
            await self._http.close()
            self._http = None

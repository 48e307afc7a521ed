"""S3 backend (SeaweedFS in tests and CI), through one kept obstore client per backend.

Why obstore rather than aiobotocore: on SeaweedFS here it did 4 KiB PUTs about 2.8x faster at 32
in flight (1,013/s against 364/s) and 2.3x faster one at a time, and a 256 MiB multipart upload
1.7x faster; botocore's request building costs milliseconds of Python per call, which is the
wall for small uploads.  obstore also has conditional PUT and copy (``If-None-Match: *``) and
ships its own types.  docs/storage-s3.md has the table.

Layout in the bucket (under an optional prefix): ``blobs/<ref>`` (one object per blob) and
``staging/<uuid>`` (large blobs while their ref is unknown).  The put path:

- **Small blobs** (up to :data:`PART_SIZE`) stay in memory while they stream and are published
  with one conditional PUT (``If-None-Match: *``) straight to ``blobs/<ref>``: one round trip, and
  a blob is never replaced (412 means "exists": a dedup candidate).
- **Large blobs** stream to ``staging/<uuid>`` as a multipart upload with at most
  :data:`PARTS_IN_FLIGHT` parts in flight besides the one filling, since the ref is known only
  at the end.  Publish completes it, then copies it server-side to ``blobs/<ref>`` (conditional
  again) and deletes the staging object.  The copy is the price of hashing as the bytes pass:
  SeaweedFS copies the bytes (about 2 s per 256 MiB here), docs/storage-s3.md has the figures.

Dedup stays collision-safe: a hit is trusted only after the bytes compare equal (a GET of the
small blob compared in memory; for large ones a size check by HEAD, then both objects compared by
ranged GETs of a part at a time, stopping at the first difference).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar

import obstore
from obstore.exceptions import AlreadyExistsError, BaseError, NotFoundError
from obstore.store import S3Store

from blobstore.backends import S3Location
from blobstore.errors import BlobNotFound, StorageFailure, StoreFull, StoreUnavailable
from blobstore.port import BlobInfo
from blobstore.refs import BlobRef, is_ref
from blobstore.streams import read_opened

if TYPE_CHECKING:
    from obstore import AsyncWritableFile, GetResult

__all__ = ["PART_SIZE", "S3Backend", "S3Location", "S3Staging"]

T = TypeVar("T")

# Multipart part size: S3 wants at least 5 MiB per part; 8 MiB keeps the per-upload memory at
# two parts (16 MiB) while a part still takes tens of ms on the wire, so requests amortise.
PART_SIZE = 8 << 20
# Parts uploading at once while the next one fills.  One keeps memory at two parts per upload;
# the stream from the client is the pace-setter anyway.
PARTS_IN_FLIGHT = 1
# Pieces a download yields: the same 1 MiB as the local backend's reads.
READ_PIECE = 1 << 20
# An engine that does not answer within this is treated as unavailable (503, Retry-After),
# never waited for by a client holding a connection.
CONNECT_TIMEOUT = timedelta(seconds=5)
REQUEST_TIMEOUT = timedelta(seconds=120)
RETRY_TIMEOUT = timedelta(seconds=10)
MAX_RETRIES = 3
# What a client is told to wait before retrying when the engine is unreachable.
RETRY_AFTER_S = 5

BLOBS = "blobs/"
STAGING = "staging/"

_STATUS_RE = re.compile(r"status code: (\d{3})")
# Servers say "out of space" in their own words; these are the ones S3 engines use.
_FULL_MARKERS = ("QuotaExceeded", "InsufficientStorage", "no free volume", "NoFreeVolume")


def translate(exc: BaseException) -> Exception:
    """One switch from the client's errors to the store's typed errors (no secret, no URL)."""
    if isinstance(exc, (NotFoundError, FileNotFoundError)):
        return BlobNotFound("blob not stored")
    text = str(exc)
    if any(marker in text for marker in _FULL_MARKERS):
        return StoreFull("no space left in the blob store")
    m = _STATUS_RE.search(text)
    status = int(m.group(1)) if m else None
    if status == 507:
        return StoreFull("no space left in the blob store")
    if status is None or status >= 500 or status == 429:
        # Connection refused or reset, a timeout, or the engine's own overload: come back later.
        return StoreUnavailable("the blob store cannot be reached", retry_after=RETRY_AFTER_S)
    return StorageFailure(f"the blob store refused a request (HTTP {status})")


async def _call(op: Awaitable[T]) -> T:
    try:
        return await op
    except (BaseError, OSError, TimeoutError) as exc:
        if isinstance(exc, AlreadyExistsError):
            raise
        raise translate(exc) from None


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
            async for piece in result.stream(min_chunk_size=READ_PIECE):
                yield bytes(piece)
        except (BaseError, OSError) as exc:
            raise translate(exc) from None

    async def aclose(self) -> None:
        self._result = None  # dropping the result releases its connection


class S3Staging:
    """A blob being written: held in memory up to a part, then a multipart upload."""

    def __init__(self, backend: S3Backend) -> None:
        self._backend = backend
        self._held = bytearray()
        self._size = 0
        self._key = backend.key(STAGING, uuid.uuid4().hex)
        self._writer: AsyncWritableFile | None = None
        self._staged = False  # a staging object exists (the multipart upload completed)

    async def write(self, data: bytes) -> None:
        self._size += len(data)
        if self._writer is None:
            self._held += data
            if len(self._held) <= PART_SIZE:
                return
            self._writer = obstore.open_writer_async(
                self._backend.store,
                self._key,
                buffer_size=PART_SIZE,
                max_concurrency=PARTS_IN_FLIGHT,
            )
            data, self._held = bytes(self._held), bytearray()
        await _call(self._writer.write(data))

    async def _finish_upload(self) -> None:
        if self._writer is not None and not self._staged:
            await _call(self._writer.close())
            self._staged = True

    async def publish(self, ref: BlobRef) -> bool:
        store, target = self._backend.store, self._backend.key(BLOBS, ref)
        try:
            if self._writer is None:
                await _call(obstore.put_async(store, target, bytes(self._held), mode="create"))
            else:
                await self._finish_upload()
                await _call(obstore.copy_async(store, self._key, target, overwrite=False))
        except AlreadyExistsError:
            return False
        await self.discard()
        return True

    async def same_as(self, ref: BlobRef) -> bool:
        store, target = self._backend.store, self._backend.key(BLOBS, ref)
        try:
            if self._writer is None:
                result = await _call(obstore.get_async(store, target))
                if result.meta["size"] != self._size:
                    return False
                return bytes(await _call(result.bytes_async())) == self._held
            meta = await _call(obstore.head_async(store, target))
            if meta["size"] != self._size:
                return False
            await self._finish_upload()
            return await self._compare_ranges(target)
        except BlobNotFound:
            return False

    async def _compare_ranges(self, target: str) -> bool:
        store = self._backend.store
        for start in range(0, self._size, PART_SIZE):
            end = min(start + PART_SIZE, self._size)
            ours, theirs = await asyncio.gather(
                _call(obstore.get_range_async(store, self._key, start=start, end=end)),
                _call(obstore.get_range_async(store, target, start=start, end=end)),
            )
            if bytes(ours) != bytes(theirs):
                return False
        return True

    async def staged(self) -> AsyncIterator[bytes]:
        if self._writer is None:
            if self._held:
                yield bytes(self._held)
            return
        await self._finish_upload()
        store = self._backend.store
        for start in range(0, self._size, PART_SIZE):
            end = min(start + PART_SIZE, self._size)
            yield bytes(
                await _call(obstore.get_range_async(store, self._key, start=start, end=end))
            )

    async def found_durable(self, ref: BlobRef) -> None:
        return None  # an object S3 answered for is durable

    async def discard(self) -> None:
        self._held = bytearray()
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        if not self._staged:
            # obstore's writer cannot abort: complete the upload, then delete what it made.
            # If the engine is gone this fails, and an incomplete upload stays for the bucket's
            # lifecycle rule (docs/storage-s3.md).
            with contextlib.suppress(Exception):
                await writer.close()
                self._staged = True
        if self._staged:
            with contextlib.suppress(Exception):
                await obstore.delete_async(self._backend.store, self._key)
            self._staged = False


class S3Backend:
    """Blobs as objects in one bucket, through one kept client (connections are pooled)."""

    def __init__(self, location: S3Location) -> None:
        self.location = location
        self.store = S3Store(
            location.bucket,
            endpoint=location.endpoint,
            region=location.region,
            access_key_id=location.access_key_id,
            secret_access_key=location.secret_access_key,
            virtual_hosted_style_request=False,
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

    async def stage(self) -> S3Staging:
        return S3Staging(self)

    async def stat(self, ref: BlobRef) -> int | None:
        try:
            meta = await _call(obstore.head_async(self.store, self.key(BLOBS, ref)))
        except BlobNotFound:
            return None
        return int(meta["size"])

    async def open(self, ref: BlobRef, start: int = 0, end: int | None = None) -> S3BlobStream:
        key = self.key(BLOBS, ref)
        if end is not None and end <= start:
            await self._require(ref)
            return S3BlobStream(None, 0)
        try:
            if start == 0 and end is None:
                result = await _call(obstore.get_async(self.store, key))
            elif end is None:
                result = await _call(
                    obstore.get_async(self.store, key, options={"range": {"offset": start}})
                )
            else:
                result = await _call(
                    obstore.get_async(self.store, key, options={"range": (start, end)})
                )
        except BlobNotFound:
            raise BlobNotFound(ref) from None
        except StorageFailure as exc:
            # A range starting at or past the end is refused (416): that range is empty.
            if "416" not in str(exc):
                raise
            await self._require(ref)
            return S3BlobStream(None, 0)
        lo, hi = result.range
        return S3BlobStream(result, hi - lo)

    async def _require(self, ref: BlobRef) -> None:
        if await self.stat(ref) is None:
            raise BlobNotFound(ref)

    def read(self, ref: BlobRef, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        return read_opened(self.open(ref, start, end))

    async def delete(self, ref: BlobRef) -> None:
        await _call(obstore.delete_async(self.store, self.key(BLOBS, ref)))

    async def scan(self) -> AsyncIterator[BlobInfo]:
        prefix = self.key(BLOBS, "")
        try:
            async for batch in obstore.list(self.store, prefix=prefix, chunk_size=1000):
                for meta in batch:
                    name = meta["path"][len(prefix) :]
                    if not is_ref(name):
                        continue
                    yield BlobInfo(BlobRef(name), int(meta["size"]))
        except (BaseError, OSError) as exc:
            raise translate(exc) from None

    async def close(self) -> None:
        return None  # the client's pool goes with the object

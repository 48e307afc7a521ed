"""A blob being written to S3: held in memory up to a part and published with one conditional PUT,
or streamed to ``data/<name>`` and published as a pointer to it (see :mod:`blobstore.s3` for the
layout and why).  A large blob streams as one PUT when its size is known before its first byte
(:mod:`blobstore.s3_one_put`), else as a multipart upload."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import obstore
from obstore.exceptions import AlreadyExistsError

from blobstore import s3_one_put, s3_pointers
from blobstore.errors import BlobNotFound
from blobstore.refs import BlobRef
from blobstore.s3_errors import call

if TYPE_CHECKING:
    from obstore import AsyncWritableFile

    from blobstore.s3 import S3Backend
    from blobstore.s3_one_put import OnePut

# Multipart part size: S3 wants at least 5 MiB per part; at 8 MiB a part still takes tens of ms
# on the wire, so requests amortise (16 MiB measured no faster, at twice the memory).
PART_SIZE = 8 << 20
# Parts uploading at once while the next one fills: per upload at most (PARTS_IN_FLIGHT + 1)
# parts, 24 MiB, in memory.  With one in flight the client waited for every part's round trip
# through the engine (S3 gateway, filer, volume); two keep the engine busy while a part's answer
# is on its way (docs/storage-s3.md has the measurement).  tests/test_blob_s3.py pins the bound.
PARTS_IN_FLIGHT = 2
BLOBS = "blobs/"
DATA = "data/"


class S3Staging:
    """A blob being written: held in memory up to a part, then one PUT (``size`` known) or a
    multipart upload."""

    def __init__(self, backend: S3Backend, size: int | None = None) -> None:
        self._backend = backend
        self._announced = size
        self._held = bytearray()
        self._size = 0
        self._name = uuid.uuid4().hex
        self._key = backend.key(DATA, self._name)
        self._writer: AsyncWritableFile | None = None
        self._one: OnePut | None = None
        self._staged = False  # a data object exists (its upload completed)

    @property
    def _streaming(self) -> bool:
        """True once the bytes go to a data object (else they are held for one small PUT)."""
        return self._writer is not None or self._one is not None

    async def write(self, data: bytes) -> None:
        self._size += len(data)
        if self._one is not None:
            await self._one.send(data)
            return
        if self._writer is None:
            announced = self._announced
            if announced is not None and PART_SIZE < announced <= s3_one_put.MAX_SIZE:
                self._one = self._backend.one_put(self._key, announced)
                await self._one.send(data)
                return
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
        await call(self._writer.write(data))

    async def _finish_upload(self) -> None:
        if self._staged:
            return
        if self._one is not None:
            await self._one.finish()
        elif self._writer is not None:
            await call(self._writer.close())
        else:
            return
        self._staged = True

    async def publish(self, ref: BlobRef) -> bool:
        store, target = self._backend.store, self._backend.key(BLOBS, ref)
        try:
            if not self._streaming:
                body = bytes(self._held)
                await call(obstore.put_async(store, target, body, mode="create"))
                cache = self._backend.cache
                if cache is not None:
                    cache.put(ref, body)  # likely read soon (a thumbnail, a first download)
            else:
                await self._finish_upload()
                pointer = s3_pointers.encode(self._name, self._size)
                await call(
                    obstore.put_async(
                        store,
                        target,
                        pointer,
                        mode="create",
                        attributes={"Content-Type": s3_pointers.POINTER_TYPE},
                    )
                )
                self._backend.remember(ref, self._key, self._size)
                # The data object is the blob's now: discard must leave it.
                self._writer, self._one, self._staged = None, None, False
        except AlreadyExistsError:
            return False
        await self.discard()
        return True

    async def same_as(self, ref: BlobRef) -> bool:
        try:
            if not self._streaming:
                key = self._backend.key(BLOBS, ref)
                result = await call(obstore.get_async(self._backend.store, key))
                if result.meta["size"] != self._size:
                    return False
                body = bytes(await call(result.bytes_async()))
                # A pointer is a large blob, never these bytes, even if they spell one.
                if s3_pointers.decode(body, result.attributes.get("Content-Type")):
                    return False
                return body == self._held
            found = await self._backend.locate(ref)
            if found is None or found[1] != self._size:
                return False
            await self._finish_upload()
            return await self._compare_ranges(found[0])
        except BlobNotFound:
            return False

    async def _compare_ranges(self, target: str) -> bool:
        store = self._backend.store
        for start in range(0, self._size, PART_SIZE):
            end = min(start + PART_SIZE, self._size)
            ours, theirs = await asyncio.gather(
                call(obstore.get_range_async(store, self._key, start=start, end=end)),
                call(obstore.get_range_async(store, target, start=start, end=end)),
            )
            if bytes(ours) != bytes(theirs):
                return False
        return True

    async def staged(self) -> AsyncIterator[bytes]:
        if not self._streaming:
            if self._held:
                yield bytes(self._held)
            return
        await self._finish_upload()
        store = self._backend.store
        for start in range(0, self._size, PART_SIZE):
            end = min(start + PART_SIZE, self._size)
            yield bytes(await call(obstore.get_range_async(store, self._key, start=start, end=end)))

    async def found_durable(self, ref: BlobRef) -> None:
        return None  # an object S3 answered for is durable

    async def discard(self) -> None:
        self._held = bytearray()
        one, self._one = self._one, None
        if one is not None and not self._staged:
            await one.abort()
            # A PUT cut short stores nothing; one whose every byte went may still be stored.
            self._staged = one.whole
        writer, self._writer = self._writer, None
        if writer is not None and not self._staged:
            # obstore's writer cannot abort: complete the upload, then delete what it made.
            # If the engine is gone this fails, and an incomplete upload stays: fsck reports
            # it and --repair aborts it (blobstore/s3_leftovers.py), or the bucket's lifecycle
            # rule does (docs/storage-s3.md).
            with contextlib.suppress(Exception):
                await writer.close()
                self._staged = True
        if self._staged:
            with contextlib.suppress(Exception):
                await obstore.delete_async(self._backend.store, self._key)
            self._staged = False

"""Reads from S3 (a real SeaweedFS, behind a proxy that counts its requests): a cached small blob
costs no request, a sealed range one ranged GET of exactly its cipher segments, a blob deleted
(or stored again under a new blob key) is never answered from what a process remembered."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from blobstore.blobcache import BlobCache
from blobstore.errors import BlobCorrupt, BlobNotFound
from blobstore.keyring import KeyRing
from blobstore.refs import BlobRef
from blobstore.s3 import S3Backend, S3Location
from blobstore.sealed import SealedBackend, seal_backend
from blobstore.sealing import SEALED_SEGMENT, SEGMENT, TRAILER, sealed_size
from blobstore.store import ContentStore
from tests.engines import key_ring
from tests.s3_counting_proxy import Seen, counting_proxy

SCOPE = "c" * 32
MiB = 1 << 20


async def pieces(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), MiB):
        await asyncio.sleep(0)
        yield data[i : i + MiB]


async def read(backend: S3Backend | SealedBackend, ref: BlobRef, start: int = 0,
               end: int | None = None) -> bytes:  # fmt: skip
    return b"".join([p async for p in backend.read(ref, start, end)])


@pytest.fixture
async def proxied(s3_location: S3Location) -> AsyncIterator[tuple[S3Location, Seen]]:
    async with counting_proxy(s3_location.endpoint) as (endpoint, seen):
        yield replace(s3_location, endpoint=endpoint), seen


@pytest.fixture
async def keys(tmp_path: Path) -> AsyncIterator[KeyRing]:
    async with key_ring(tmp_path / "meta") as ring:
        yield ring


async def test_a_cached_small_blob_is_read_with_no_request(
    proxied: tuple[S3Location, Seen],
) -> None:
    location, seen = proxied
    writer = S3Backend(location, cache=BlobCache(1 << 20))
    data = os.urandom(4096)
    put = await ContentStore(writer).put(pieces(data))
    seen.clear()
    # Filled on upload: the uploader had the bytes.
    assert await read(writer, put.ref) == data
    assert await read(writer, put.ref, 100, 200) == data[100:200]
    assert seen.requests == []

    # Another process: its first read is one GET, which fills its cache; then none.
    reader = S3Backend(location, cache=BlobCache(1 << 20))
    assert await read(reader, put.ref) == data
    assert len(seen.requests) == 1 and seen.requests[0][0] == "GET"
    assert await read(reader, put.ref, 4000) == data[4000:]
    assert len(seen.requests) == 1
    assert reader.cache is not None and reader.cache.stats.hits == 1


async def test_without_a_cache_every_read_asks_the_engine(
    proxied: tuple[S3Location, Seen],
) -> None:
    location, seen = proxied
    backend = S3Backend(location, cache=BlobCache(0))
    assert backend.cache is None
    put = await ContentStore(backend).put(pieces(b"tiny blob"))
    seen.clear()
    for _ in range(3):
        assert await read(backend, put.ref) == b"tiny blob"
    assert len(seen.gets()) == 3


async def test_a_blob_over_the_size_limit_is_not_cached(
    proxied: tuple[S3Location, Seen],
) -> None:
    location, seen = proxied
    backend = S3Backend(location, cache=BlobCache(8 << 20, max_blob=64 << 10))
    data = os.urandom((64 << 10) + 1)
    put = await ContentStore(backend).put(pieces(data))
    assert backend.cache is not None and len(backend.cache) == 0
    seen.clear()
    assert await read(backend, put.ref) == data
    assert await read(backend, put.ref) == data
    assert len(seen.gets()) == 2 and len(backend.cache) == 0


async def test_a_deleted_blob_is_gone_from_the_cache_and_stored_again_from_the_upload(
    proxied: tuple[S3Location, Seen],
) -> None:
    location, _ = proxied
    backend = S3Backend(location, cache=BlobCache(1 << 20))
    store = ContentStore(backend)
    put = await store.put(pieces(b"doomed bytes"))
    assert await read(backend, put.ref) == b"doomed bytes"
    await backend.delete(put.ref)  # what gc does
    with pytest.raises(BlobNotFound):
        await read(backend, put.ref)
    # Another process still holding the bytes does not make an upload skip the engine: the
    # write path's checks ask S3, so the blob is published again.
    other = S3Backend(location, cache=BlobCache(1 << 20))
    other_cache = other.cache
    assert other_cache is not None
    other_cache.put(put.ref, b"doomed bytes")
    again = await ContentStore(other).put(pieces(b"doomed bytes"))
    assert again.ref == put.ref and again.created
    assert await S3Backend(location).stat(put.ref) == len(b"doomed bytes")


async def test_a_sealed_range_is_one_get_of_exactly_its_segments(
    proxied: tuple[S3Location, Seen], keys: KeyRing
) -> None:
    location, seen = proxied
    inner = S3Backend(location, cache=BlobCache(1 << 20))
    sealed = seal_backend(inner, keys, sealing=True)
    data = os.urandom(3 * MiB + 777)
    put = await ContentStore(sealed).put(pieces(data), scope=SCOPE)
    stored = sealed_size(len(data))

    # A fresh process: the first read learns the trailer (a suffix GET), then the range.
    reader = seal_backend(S3Backend(location, cache=BlobCache(1 << 20)), keys, sealing=False)
    seen.clear()
    start, end = SEGMENT + 5, 3 * SEGMENT + 9
    assert await read(reader, put.ref, start, end) == data[start:end]
    assert len(seen.requests) == 2
    assert seen.requests[0][2].startswith("bytes=-")
    # Every range after that: one GET, of the cipher segments that hold it and nothing else;
    # a range in the last segment brings the trailer along (checked against the one verified).
    for start, end in ((SEGMENT + 5, 3 * SEGMENT + 9), (0, 10), (len(data) - 5, len(data))):
        seen.clear()
        assert await read(reader, put.ref, start, end) == data[start:end]
        assert len(seen.requests) == 1, seen.requests
        method, _, byte_range = seen.requests[0]
        first, last = start // SEGMENT, (end - 1) // SEGMENT
        lo = first * SEALED_SEGMENT
        hi = min((last + 1) * SEALED_SEGMENT, stored - TRAILER)
        hi = stored if hi == stored - TRAILER else hi
        assert (method, byte_range) == ("GET", f"bytes={lo}-{hi - 1}")
    # A range streamed (over a MiB) checks the trailer first, then is one GET.
    seen.clear()
    assert await read(reader, put.ref, 5, 2 * MiB + 3) == data[5 : 2 * MiB + 3]
    assert [r[2] for r in seen.requests] == [
        f"bytes=-{TRAILER}",
        f"bytes=0-{(2 * MiB + 2) // SEGMENT * SEALED_SEGMENT + SEALED_SEGMENT - 1}",
    ]


async def test_a_small_sealed_blob_is_cached_and_read_with_no_request(
    proxied: tuple[S3Location, Seen], keys: KeyRing
) -> None:
    location, seen = proxied
    sealed = seal_backend(S3Backend(location, cache=BlobCache(1 << 20)), keys, sealing=True)
    data = os.urandom(4096)
    put = await ContentStore(sealed).put(pieces(data), scope=SCOPE)
    seen.clear()
    assert await read(sealed, put.ref) == data
    assert await read(sealed, put.ref, 10, 20) == data[10:20]
    assert seen.requests == []
    # A fresh process: one suffix GET brings the whole small blob.
    reader = seal_backend(S3Backend(location, cache=BlobCache(1 << 20)), keys, sealing=False)
    assert await read(reader, put.ref) == data
    assert await read(reader, put.ref, 4000) == data[4000:]
    assert len(seen.requests) == 1


@pytest.mark.parametrize("size", [4096, 3 * MiB])
async def test_a_blob_stored_again_under_a_new_blob_key_is_still_read_right(
    proxied: tuple[S3Location, Seen], keys: KeyRing, size: int
) -> None:
    """gc deleted it and an upload sealed the same content anew: what a reader remembered (the
    trailer, the cached ciphertext) no longer matches the engine, and it must not matter."""
    location, _ = proxied
    reader = seal_backend(S3Backend(location, cache=BlobCache(1 << 20)), keys, sealing=True)
    data = os.urandom(size)
    put = await ContentStore(reader).put(pieces(data), scope=SCOPE)
    assert await read(reader, put.ref, 1, size - 1) == data[1 : size - 1]
    other = seal_backend(S3Backend(location), keys, sealing=True)
    await other.delete(put.ref)
    again = await ContentStore(other).put(pieces(data), scope=SCOPE)
    assert again.ref == put.ref and again.created
    assert await read(reader, put.ref, 1, size - 1) == data[1 : size - 1]
    assert await read(reader, put.ref) == data
    # And without the cache in the way: a remembered trailer is dropped, not trusted.
    assert isinstance(reader.inner, S3Backend) and reader.inner.cache is not None
    reader.inner.cache.discard(put.ref)
    assert await read(reader, put.ref, size // 2) == data[size // 2 :]


async def test_a_blob_cut_since_its_trailer_was_verified_is_refused_before_any_byte(
    proxied: tuple[S3Location, Seen], keys: KeyRing
) -> None:
    location, _ = proxied
    sealed = seal_backend(S3Backend(location), keys, sealing=True)
    data = os.urandom(3 * MiB)
    put = await ContentStore(sealed).put(pieces(data), scope=SCOPE)
    assert await read(sealed, put.ref, SEGMENT, SEGMENT + 10) == data[SEGMENT : SEGMENT + 10]
    inner = sealed.inner
    whole = b"".join([p async for p in inner.read(put.ref)])
    await inner.delete(put.ref)
    staging = await inner.stage()
    await staging.write(whole[: -TRAILER - 1000] + whole[-TRAILER:])  # the last segment cut
    assert await staging.publish(put.ref)
    with pytest.raises(BlobCorrupt):
        await sealed.open(put.ref, SEGMENT, SEGMENT + 10)  # a middle range: the size tells

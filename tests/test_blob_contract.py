"""One contract suite, run against every blob backend (memory, local filesystem, and S3 on a
real SeaweedFS)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import xxhash

from blobstore.errors import BlobNotFound, TooLarge
from blobstore.local import LocalBackend
from blobstore.memory import MemoryBackend
from blobstore.port import BlobBackend, LocalFiles, StatMany, TempFiles
from blobstore.refs import BlobRef, is_ref, make_ref, ref_digest, ref_scope
from blobstore.store import ContentStore, PutResult
from tests.blob_backends import KINDS, opened_backend


@pytest.fixture(params=KINDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobBackend]:
    async with opened_backend(request, tmp_path) as chosen:
        yield chosen


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        await asyncio.sleep(0)
        yield p


async def read_all(
    backend: BlobBackend, ref: BlobRef, start: int = 0, end: int | None = None
) -> bytes:
    return b"".join([d async for d in backend.read(ref, start, end)])


async def refs(backend: BlobBackend) -> set[BlobRef]:
    return {info.ref async for info in backend.scan()}


async def leftovers(backend: BlobBackend) -> list[Path]:
    if not isinstance(backend, TempFiles):
        return []
    return [p for p, _, _ in await asyncio.to_thread(backend.temp_files)]


async def test_put_names_blob_by_xxh3_128_and_reads_back(backend: BlobBackend) -> None:
    store = ContentStore(backend)
    data = os.urandom(3 << 20) + b"tail"
    put = await store.put(chunks(data[:100], data[100:2_000_000], data[2_000_000:]))
    assert put.ref == f"xxh3_128-{xxhash.xxh3_128_hexdigest(data)}"
    assert is_ref(put.ref) and put.size == len(data) and put.created
    assert await read_all(backend, put.ref) == data
    assert await backend.stat(put.ref) == len(data)
    assert await refs(backend) == {put.ref}
    assert await leftovers(backend) == []


async def test_range_reads(backend: BlobBackend) -> None:
    data = bytes(range(256)) * 10_000
    put = await ContentStore(backend).put(chunks(data))
    assert await read_all(backend, put.ref, 5, 9) == data[5:9]
    assert await read_all(backend, put.ref, len(data) - 3) == data[-3:]
    assert await read_all(backend, put.ref, 1_500_000, 2_000_000) == data[1_500_000:2_000_000]


async def test_empty_blob(backend: BlobBackend) -> None:
    put = await ContentStore(backend).put(chunks())
    assert put.size == 0 and await read_all(backend, put.ref) == b""


async def test_identical_content_is_stored_once(backend: BlobBackend) -> None:
    store = ContentStore(backend)
    a = await store.put(chunks(b"same bytes"))
    b = await store.put(chunks(b"same ", b"bytes"))
    assert a.ref == b.ref and a.created and not b.created
    assert await refs(backend) == {a.ref}
    assert await leftovers(backend) == []


async def test_concurrent_identical_puts_converge(backend: BlobBackend) -> None:
    store = ContentStore(backend)
    results = await asyncio.gather(*(store.put(chunks(b"x" * 100_000)) for _ in range(8)))
    assert len({r.ref for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert len(await refs(backend)) == 1


async def test_large_blobs_are_deduplicated_and_compared_whole(backend: BlobBackend) -> None:
    """Blobs past the size a backend may hold in memory: a duplicate is found by comparing the
    stored bytes, and one differing in its last byte under a forced collision is not."""
    big = os.urandom(3 << 20)
    store = ContentStore(backend)
    a = await store.put(chunks(big[:1_000_000], big[1_000_000:]))
    b = await store.put(chunks(big))
    assert a.ref == b.ref and a.created and not b.created
    colliding = ContentStore(backend, hasher=ConstantHash)
    c = await colliding.put(chunks(big))
    d = await colliding.put(chunks(big[:-1] + bytes([big[-1] ^ 1])))
    e = await colliding.put(chunks(big))
    assert len({c.ref, d.ref}) == 2 and e.ref == c.ref and not e.created
    assert await read_all(backend, d.ref) == big[:-1] + bytes([big[-1] ^ 1])
    assert await leftovers(backend) == []


class ConstantHash:
    """A test seam: every content hashes alike, as a planted collision would."""

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        pass

    def hexdigest(self) -> str:
        return "0" * 32


async def test_hash_collision_never_aliases_different_content(backend: BlobBackend) -> None:
    store = ContentStore(backend, hasher=ConstantHash)
    a = await store.put(chunks(b"tenant A's bytes"))
    b = await store.put(chunks(b"tenant B's different bytes"))
    a2 = await store.put(chunks(b"tenant A's bytes"))
    assert a.ref != b.ref
    assert ref_digest(a.ref) == ref_digest(b.ref) == "0" * 32
    assert a2.ref == a.ref and not a2.created
    assert await read_all(backend, a.ref) == b"tenant A's bytes"
    assert await read_all(backend, b.ref) == b"tenant B's different bytes"


SCOPE_A, SCOPE_B = "a" * 32, "b" * 32


async def test_scopes_never_share_content_even_under_forced_collisions(
    backend: BlobBackend,
) -> None:
    store = ContentStore(backend, hasher=ConstantHash)
    a = await store.put(chunks(b"same bytes"), scope=SCOPE_A)
    b = await store.put(chunks(b"same bytes"), scope=SCOPE_B)
    # The same content in another scope is written anew, exactly like content never seen.
    assert a.created and b.created and a.ref != b.ref
    assert (ref_scope(a.ref), ref_scope(b.ref)) == (SCOPE_A, SCOPE_B)
    assert ref_digest(a.ref) == ref_digest(b.ref) == "0" * 32
    # Within a scope: dedup after a byte comparison; a planted collision gets a variant.
    again = await store.put(chunks(b"same bytes"), scope=SCOPE_A)
    other = await store.put(chunks(b"different bytes"), scope=SCOPE_A)
    assert again.ref == a.ref and not again.created
    assert other.created and other.ref == make_ref("0" * 32, 1, SCOPE_A)
    # Unscoped refs (made before scopes existed) are a scope of their own, still valid.
    old = await store.put(chunks(b"same bytes"))
    assert old.created and ref_scope(old.ref) is None and is_ref(old.ref)
    for put, data in ((a, b"same bytes"), (b, b"same bytes"), (other, b"different bytes")):
        assert await read_all(backend, put.ref) == data
    assert await refs(backend) == {a.ref, b.ref, other.ref, old.ref}


async def test_size_limit_stores_nothing(backend: BlobBackend) -> None:
    with pytest.raises(TooLarge):
        await ContentStore(backend).put(chunks(b"a" * 600, b"b" * 600), max_size=1000)
    assert await refs(backend) == set()
    assert await leftovers(backend) == []


async def test_failing_stream_stores_nothing(backend: BlobBackend) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * (3 << 20)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await ContentStore(backend).put(broken())
    assert await refs(backend) == set()
    assert await leftovers(backend) == []


async def test_missing_blob(backend: BlobBackend) -> None:
    ghost = BlobRef("xxh3_128-" + "ab" * 16)
    assert await backend.stat(ghost) is None
    with pytest.raises(BlobNotFound):
        await read_all(backend, ghost)
    await backend.delete(ghost)  # idempotent: not an error


async def test_delete_is_idempotent(backend: BlobBackend) -> None:
    put = await ContentStore(backend).put(chunks(b"bye"))
    await backend.delete(put.ref)
    await backend.delete(put.ref)
    assert await backend.stat(put.ref) is None and await refs(backend) == set()


async def test_a_deleted_blob_is_published_anew_and_a_present_one_deduplicated(
    backend: BlobBackend,
) -> None:
    store = ContentStore(backend)
    put = await store.put(chunks(b"shared"))
    await backend.delete(put.ref)
    again = await store.put(chunks(b"shared"))
    assert again.created  # gone, so published anew
    hit = await store.put(chunks(b"shared"))
    assert hit == PutResult(put.ref, 6, created=False)
    assert await read_all(backend, put.ref) == b"shared"


async def test_local_blob_is_a_whole_file_at_its_fanout_path(tmp_path: Path) -> None:
    backend = await asyncio.to_thread(LocalBackend, tmp_path / "blobs")
    try:
        put = await ContentStore(backend).put(chunks(b"on disk"))
        assert isinstance(backend, LocalFiles)
        path = backend.local_path(put.ref)
        digest = ref_digest(put.ref)
        assert path == tmp_path / "blobs" / digest[:2] / digest[2:4] / put.ref
        assert await asyncio.to_thread(path.read_bytes) == b"on disk"
    finally:
        await backend.close()


async def test_the_local_backend_stats_many_blobs_as_stat_does_in_order(tmp_path: Path) -> None:
    # An optional ability (confirmations use it when present): only the local backend has it.
    backend = await asyncio.to_thread(LocalBackend, tmp_path / "blobs")
    assert isinstance(backend, StatMany)
    assert not isinstance(MemoryBackend(), StatMany)
    try:
        store = ContentStore(backend)
        small = await store.put(chunks(b"x" * 10))
        big = await store.put(chunks(os.urandom(2 << 20)))
        ghost = make_ref("0" * 32)
        asked = [big.ref, ghost, small.ref, big.ref]
        assert await backend.stat_many(asked) == [await backend.stat(r) for r in asked]
        assert await backend.stat_many(asked) == [2 << 20, None, 10, 2 << 20]
        assert await backend.stat_many([]) == []
    finally:
        await backend.close()

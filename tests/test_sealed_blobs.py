"""Encryption at rest in the blob layer, over every backend (memory, local files, S3 on a real
SeaweedFS): sealed puts, reads and ranges, dedup inside a scope only, and tampering of every
kind refused before a wrong byte comes out."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import xxhash

from blobstore import keyring
from blobstore.errors import BlobCorrupt, BlobNotFound, KeyUnavailable
from blobstore.keyring import KeyRing
from blobstore.masterkey import key_check_value
from blobstore.memory import MemoryBackend
from blobstore.port import BlobBackend, LocalFiles, Views
from blobstore.refs import BlobRef, is_sealed, make_ref, ref_scope
from blobstore.sealed import SealedBackend, seal_backend
from blobstore.sealing import SEALED_SEGMENT, SEGMENT, TRAILER, plain_size, sealed_size
from blobstore.store import ContentStore
from tests.blob_backends import KINDS, opened_backend
from tests.engines import migrated

SCOPE_A = "a" * 32
SCOPE_B = "b" * 32
MARKER = b"PLAINTEXT-MARKER-7f3c"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[object]:
    async with migrated(None, tmp_path / "meta") as engine:
        yield engine


@pytest.fixture(params=KINDS)
async def inner(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobBackend]:
    async with opened_backend(request, tmp_path) as chosen:
        yield chosen


@pytest.fixture
async def sealed(inner: BlobBackend, db: object) -> SealedBackend:
    keys = KeyRing(db, os.urandom(32))  # type: ignore[arg-type]
    await keys.check(record=True)
    return seal_backend(inner, keys, sealing=True)


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        await asyncio.sleep(0)
        yield p


async def read_all(b: BlobBackend, ref: BlobRef, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([d async for d in b.read(ref, start, end)])


async def raw(inner: BlobBackend, ref: BlobRef) -> bytes:
    return await read_all(inner, ref)


async def replace(inner: BlobBackend, ref: BlobRef, data: bytes) -> None:
    """Overwrite a stored blob's bytes behind the store's back (the attacker with the disk)."""
    await inner.delete(ref)
    staging = await inner.stage()
    await staging.write(data)
    assert await staging.publish(ref)


def sizes() -> list[int]:
    return [0, 1, 100, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT, (2 << 20) + 12345]


async def test_sealed_put_round_trips_every_size_and_range(sealed: SealedBackend) -> None:
    store = ContentStore(sealed)
    for size in sizes():
        data = (MARKER + os.urandom(97)) * (size // 118 + 1)
        data = data[:size]
        put = await store.put(chunks(data[:7], data[7:]), scope=SCOPE_A)
        assert is_sealed(put.ref) and ref_scope(put.ref) == SCOPE_A
        assert put.ref.startswith(f"xxh3_128-{xxhash.xxh3_128_hexdigest(data)}-e{SCOPE_A}")
        assert await read_all(sealed, put.ref) == data
        assert await sealed.stat(put.ref) == size
        assert await sealed.inner.stat(put.ref) == sealed_size(size)
        stored = await raw(sealed.inner, put.ref)
        assert MARKER not in stored
        for start, end in [(0, 1), (SEGMENT - 3, SEGMENT + 3), (size // 2, None), (5, size - 5)]:
            assert await read_all(sealed, put.ref, start, end) == data[start:end]


async def test_dedup_within_a_scope_and_never_across(sealed: SealedBackend) -> None:
    store = ContentStore(sealed)
    data = os.urandom(3 * SEGMENT + 5)
    first = await store.put(chunks(data), scope=SCOPE_A)
    again = await store.put(chunks(data[:10], data[10:]), scope=SCOPE_A)
    other = await store.put(chunks(data), scope=SCOPE_B)
    assert first.created and not again.created and again.ref == first.ref
    assert other.created and other.ref != first.ref
    assert await raw(sealed.inner, first.ref) != await raw(sealed.inner, other.ref)
    assert {i.ref async for i in sealed.scan()} == {first.ref, other.ref}


async def test_planted_collisions_stay_apart_when_sealed(sealed: SealedBackend) -> None:
    class Fixed:
        def update(self, data: bytes | bytearray | memoryview, /) -> None:
            pass

        def hexdigest(self) -> str:
            return "0" * 32

    store = ContentStore(sealed, hasher=Fixed)
    a = await store.put(chunks(b"content a"), scope=SCOPE_A)
    b = await store.put(chunks(b"content b"), scope=SCOPE_A)
    a2 = await store.put(chunks(b"content a"), scope=SCOPE_A)
    assert a.ref != b.ref and a2.ref == a.ref and not a2.created
    assert await read_all(sealed, a.ref) == b"content a"
    assert await read_all(sealed, b.ref) == b"content b"


async def expect_refused(sealed: SealedBackend, ref: BlobRef) -> None:
    with pytest.raises(BlobCorrupt):
        await read_all(sealed, ref)


async def test_flipped_byte_in_any_segment_or_the_trailer_is_refused(sealed: SealedBackend) -> None:
    data = os.urandom(40 * SEGMENT + 99)  # large: streamed, not read whole
    put = await ContentStore(sealed).put(chunks(data), scope=SCOPE_A)
    good = await raw(sealed.inner, put.ref)
    for pos in (0, SEALED_SEGMENT + 5, 20 * SEALED_SEGMENT, len(good) - TRAILER - 1, len(good) - 1):
        bad = bytearray(good)
        bad[pos] ^= 0x01
        await replace(sealed.inner, put.ref, bytes(bad))
        await expect_refused(sealed, put.ref)
    await replace(sealed.inner, put.ref, good)
    assert await read_all(sealed, put.ref) == data


async def test_damage_at_the_start_fails_open_before_any_byte(sealed: SealedBackend) -> None:
    for size in (100, 40 * SEGMENT):
        put = await ContentStore(sealed).put(chunks(os.urandom(size)), scope=SCOPE_A)
        bad = bytearray(await raw(sealed.inner, put.ref))
        bad[3] ^= 0x80
        await replace(sealed.inner, put.ref, bytes(bad))
        with pytest.raises(BlobCorrupt):
            await sealed.open(put.ref)  # the caller can still answer 500


async def test_reordered_truncated_and_grown_blobs_are_refused(sealed: SealedBackend) -> None:
    data = os.urandom(40 * SEGMENT + 99)
    put = await ContentStore(sealed).put(chunks(data), scope=SCOPE_A)
    good = await raw(sealed.inner, put.ref)
    seg = [good[i : i + SEALED_SEGMENT] for i in range(0, len(good) - TRAILER, SEALED_SEGMENT)]
    trailer = good[-TRAILER:]
    swapped = seg[1] + seg[0] + b"".join(seg[2:]) + trailer
    cut_at_boundary = b"".join(seg[:-1]) + trailer  # one segment short
    cut_mid = good[: len(good) - 1000]
    grown = good[:-TRAILER] + seg[5] + trailer
    for bad in (swapped, cut_at_boundary, cut_mid, grown):
        await replace(sealed.inner, put.ref, bad)
        await expect_refused(sealed, put.ref)
        with pytest.raises(BlobCorrupt):
            await read_all(sealed, put.ref, 30 * SEGMENT, 31 * SEGMENT)


async def test_a_blob_swapped_for_another_is_refused_even_for_a_range(
    sealed: SealedBackend,
) -> None:
    store = ContentStore(sealed)
    one = await store.put(chunks(os.urandom(40 * SEGMENT)), scope=SCOPE_A)
    two = await store.put(chunks(os.urandom(40 * SEGMENT)), scope=SCOPE_A)
    small1 = await store.put(chunks(b"small one"), scope=SCOPE_A)
    small2 = await store.put(chunks(b"small two"), scope=SCOPE_A)
    other_scope = await store.put(chunks(b"small one"), scope=SCOPE_B)
    bytes_two, bytes_small2 = await raw(sealed.inner, two.ref), await raw(sealed.inner, small2.ref)
    await replace(sealed.inner, one.ref, bytes_two)
    await replace(sealed.inner, small1.ref, bytes_small2)
    await expect_refused(sealed, one.ref)
    with pytest.raises(BlobCorrupt):
        await read_all(sealed, one.ref, 10 * SEGMENT, 11 * SEGMENT)
    await expect_refused(sealed, small1.ref)
    # A segment spliced in from another blob of the same scope and place fails its tag.
    good_one = await raw(sealed.inner, two.ref)
    spliced = bytes_two[:SEALED_SEGMENT] + good_one[SEALED_SEGMENT:]
    await replace(sealed.inner, one.ref, spliced)
    await expect_refused(sealed, one.ref)
    # The same content sealed for another company does not open under this one's name.
    await replace(sealed.inner, small2.ref, await raw(sealed.inner, other_scope.ref))
    await expect_refused(sealed, small2.ref)


async def test_plain_and_sealed_blobs_live_side_by_side(inner: BlobBackend, db: object) -> None:
    keys = KeyRing(db, os.urandom(32))  # type: ignore[arg-type]
    plain_store = ContentStore(seal_backend(inner, keys, sealing=False))
    plain = await plain_store.put(chunks(MARKER), scope=SCOPE_A)
    assert not is_sealed(plain.ref) and await raw(inner, plain.ref) == MARKER
    sealing = seal_backend(inner, keys, sealing=True)
    sealed_put = await ContentStore(sealing).put(chunks(MARKER), scope=SCOPE_A)
    assert sealed_put.created and sealed_put.ref != plain.ref
    for reader in (sealing, plain_store.backend):
        assert await read_all(reader, plain.ref) == MARKER
        assert await read_all(reader, sealed_put.ref) == MARKER


async def test_wrong_master_key_is_told_apart_from_damage(db: object) -> None:
    master = os.urandom(32)
    keys = KeyRing(db, master)  # type: ignore[arg-type]
    await keys.check(record=True)
    backend = seal_backend(MemoryBackend(), keys, sealing=True)
    put = await ContentStore(backend).put(chunks(b"x"), scope=SCOPE_A)
    with pytest.raises(KeyUnavailable, match="key check value differs"):
        await KeyRing(db, os.urandom(32)).check(record=True)  # type: ignore[arg-type]
    # Right key, damaged row: the check passes, the unwrap says the row is damaged.
    async with db.write() as tx:  # type: ignore[attr-defined]
        await tx.execute("UPDATE scope_keys SET wrapped = 'AAAA' WHERE scope = ?", SCOPE_A)
    fresh = KeyRing(db, master)  # type: ignore[arg-type]
    await fresh.check(record=True)
    with pytest.raises(KeyUnavailable, match="damaged"):
        await read_all(seal_backend(backend.inner, fresh, sealing=True), put.ref)
    no_key = seal_backend(backend.inner, KeyRing(db, None), sealing=False)  # type: ignore[arg-type]
    with pytest.raises(KeyUnavailable, match="needs the master key"):
        await read_all(no_key, put.ref)


async def test_rotation_rewraps_keys_and_blobs_still_open(db: object) -> None:
    old, new = os.urandom(32), os.urandom(32)
    keys = KeyRing(db, old)  # type: ignore[arg-type]
    await keys.check(record=True)
    backend = seal_backend(MemoryBackend(), keys, sealing=True)
    store = ContentStore(backend)
    puts = [
        await store.put(chunks(b"doc %d" % i), scope=s) for i, s in enumerate([SCOPE_A, SCOPE_B])
    ]
    before = dict(backend.inner.blobs)  # type: ignore[attr-defined]
    assert await keyring.rotate(db, old, new) == 2  # type: ignore[arg-type]
    assert await keyring.rotate(db, old, new) == 0  # type: ignore[arg-type]
    assert dict(backend.inner.blobs) == before  # type: ignore[attr-defined]  # blobs untouched
    async with db.read() as tx:  # type: ignore[attr-defined]
        assert await keyring.stored_check(tx) == key_check_value(new)
    rotated = seal_backend(backend.inner, KeyRing(db, new), sealing=True)  # type: ignore[arg-type]
    for i, put in enumerate(puts):
        assert await read_all(rotated, put.ref) == b"doc %d" % i
    # The process still on the old key keeps what it unwrapped, and cannot add a key the new
    # master could not open.
    assert await read_all(backend, puts[0].ref) == b"doc 0"
    with pytest.raises(KeyUnavailable, match="rotated"):
        await store.put(chunks(b"new company"), scope="c" * 32)
    with pytest.raises(KeyUnavailable):
        await keyring.rotate(db, os.urandom(32), os.urandom(32))  # type: ignore[arg-type]


def test_size_mapping_is_exact() -> None:
    for plain in [*sizes(), 10 * SEGMENT, 10 * SEGMENT - 16, 10 * SEGMENT + 16]:
        assert plain_size(sealed_size(plain)) == plain
    valid = {sealed_size(p) for p in range(0, 3 * SEGMENT + 40)}
    for stored in range(0, 3 * SEALED_SEGMENT + 100):
        assert (plain_size(stored) is not None) == (stored in valid)


async def test_missing_sealed_blob_is_not_found(sealed: SealedBackend) -> None:
    ref = make_ref("1" * 32, scope=SCOPE_A, sealed=True)
    await ContentStore(sealed).put(chunks(b"make the key"), scope=SCOPE_A)
    with pytest.raises(BlobNotFound):
        await sealed.open(ref)
    assert await sealed.stat(ref) is None


async def views_of(b: BlobBackend, ref: BlobRef, start: int = 0) -> list[memoryview]:
    """Every piece of a read as the download takes it (views where the stream offers them),
    all kept: no buffer behind a kept view may be reused."""
    stream = await b.open(ref, start)
    try:
        it = stream.views() if isinstance(stream, Views) else aiter(stream)
        return [memoryview(piece) async for piece in it]
    finally:
        await stream.aclose()


async def test_kept_views_never_change_under_the_reader(sealed: SealedBackend) -> None:
    # Many more pieces than the reader's buffers, fed in uneven pieces (small writes sealed on
    # the loop, then batches sealed in the writer's thread).
    data = os.urandom(12 * SEALED_SEGMENT * 16 + 777)
    cuts = [0, 5, 70_000, 3 << 20, 3 << 20 | 12345, len(data)]
    put = await ContentStore(sealed).put(
        chunks(*(data[a:b] for a, b in itertools.pairwise(cuts))), scope=SCOPE_A
    )
    for start in (0, SEGMENT + 7):
        views = await views_of(sealed, put.ref, start)
        copies = [bytes(v) for v in views]
        assert b"".join(copies) == data[start:]
        if isinstance(sealed.inner, LocalFiles):
            assert len(views) > 4  # more pieces than the reader's buffers
        assert [bytes(v) for v in views] == copies  # still the same after all were read
    # Views dropped as they go (the download's way) read the same bytes.
    stream = await sealed.open(put.ref)
    got = bytearray()
    try:
        async for piece in stream.views() if isinstance(stream, Views) else aiter(stream):
            got += piece
    finally:
        await stream.aclose()
    assert got == data


async def test_views_stop_at_a_damaged_segment_with_only_good_bytes(
    sealed: SealedBackend,
) -> None:
    data = os.urandom(40 * SEGMENT + 99)
    put = await ContentStore(sealed).put(chunks(data), scope=SCOPE_A)
    bad = bytearray(await raw(sealed.inner, put.ref))
    bad[33 * SEALED_SEGMENT + 10] ^= 0x04
    await replace(sealed.inner, put.ref, bytes(bad))
    got = bytearray()
    with pytest.raises(BlobCorrupt):  # at open (a backend read in one piece) or on the way
        stream = await sealed.open(put.ref)
        try:
            async for piece in stream.views() if isinstance(stream, Views) else aiter(stream):
                got += piece
        finally:
            await stream.aclose()
    assert len(got) <= 33 * SEGMENT
    assert got == data[: len(got)]

"""Whole reads through the sealing wrapper over local files (a download's body of up to a MiB):
the same bytes as the streamed path for every size and range, and the remembered trailers never
let a blob changed on disk after a first read through: flipped, cut, grown, reordered or swapped
for another blob, it is refused, and served again once it is back."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from blobstore.errors import BlobCorrupt, BlobNotFound
from blobstore.keyring import KeyRing
from blobstore.local import LocalBackend
from blobstore.port import ReadWhole
from blobstore.refs import BlobRef, make_ref
from blobstore.sealed import SealedBackend, seal_backend
from blobstore.sealed_trailers import VerifiedTrailers
from blobstore.sealed_whole import WholeReads
from blobstore.sealing import SEALED_SEGMENT, SEGMENT, TRAILER
from blobstore.store import ContentStore
from tests.blob_backends import local_backend
from tests.engines import key_ring

SCOPE_A = "a" * 32
SCOPE_B = "b" * 32
MiB = 1 << 20


@pytest.fixture
async def keys(tmp_path: Path) -> AsyncIterator[KeyRing]:
    async with key_ring(tmp_path / "meta") as ring:
        yield ring


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    async with local_backend(tmp_path / "blobs") as backend:
        yield backend


@pytest.fixture
def sealed(local: LocalBackend, keys: KeyRing) -> SealedBackend:
    return seal_backend(local, keys, sealing=True)


def whole(backend: SealedBackend) -> ReadWhole:
    assert isinstance(backend, ReadWhole)
    return backend


async def one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def put(backend: SealedBackend, data: bytes, scope: str = SCOPE_A) -> BlobRef:
    return (await ContentStore(backend).put(one(data), scope=scope)).ref


async def streamed(backend: SealedBackend, ref: BlobRef, start: int, end: int) -> bytes:
    return b"".join([piece async for piece in backend.read(ref, start, end)])


def replace(local: LocalBackend, ref: BlobRef, data: bytes) -> None:
    """Change a stored blob's file behind the store's back (the attacker with the disk)."""
    path = local.local_path(ref)
    path.chmod(0o600)
    path.write_bytes(data)


async def test_every_size_and_range_reads_as_the_streamed_path(sealed: SealedBackend) -> None:
    reads = whole(sealed)
    for size in (0, 1, 100, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT + 7, 2 * MiB + 5):
        data = os.urandom(size)
        ref = await put(sealed, data)
        spans = [(0, size), (0, 1), (SEGMENT - 3, SEGMENT + 3), (size // 2, size // 2 + MiB)]
        spans += [(5, size - 5), (4096, 4096 + MiB), (size - 1, size + 10), (size, size + 1)]
        for start, end in spans:
            if start < 0 or end - start > MiB or start > end:
                continue
            got = await reads.read_whole(ref, start, end)
            assert bytes(got) == data[start:end], (size, start, end)
            assert bytes(got) == await streamed(sealed, ref, start, end)


async def test_plain_blobs_read_whole_beside_sealed_ones(
    local: LocalBackend, keys: KeyRing
) -> None:
    plain = seal_backend(local, keys, sealing=False)
    small, large = os.urandom(1000), os.urandom(3 * MiB)
    small_ref, large_ref = await put(plain, small), await put(plain, large)
    reads = whole(plain)
    assert await reads.read_whole(small_ref, 10, 900) == small[10:900]
    assert await reads.read_whole(large_ref, 12345, 12345 + MiB) == large[12345 : 12345 + MiB]
    assert await reads.read_whole(large_ref, 3 * MiB - 10, 3 * MiB + 10) == large[-10:]


async def test_a_missing_blob_is_not_found(sealed: SealedBackend) -> None:
    await put(sealed, b"makes the scope's key")
    with pytest.raises(BlobNotFound):
        await whole(sealed).read_whole(make_ref("1" * 32, scope=SCOPE_A, sealed=True), 0, 10)


def damaged(good: bytes) -> dict[str, bytes]:
    seg = [good[i : i + SEALED_SEGMENT] for i in range(0, len(good) - TRAILER, SEALED_SEGMENT)]
    trailer = good[-TRAILER:]

    def flip(at: int) -> bytes:
        out = bytearray(good)
        out[at] ^= 0x10
        return bytes(out)

    return {
        "flip in a read segment": flip(2 * SEALED_SEGMENT + 77),
        "flip in the trailer's mac": flip(len(good) - 3),
        "flip in the trailer's size": flip(len(good) - TRAILER + 31),
        "cut at a segment boundary": b"".join(seg[:-1]) + trailer,
        "cut mid-segment": good[:-1000],
        "grown by a segment": good[:-TRAILER] + seg[1] + trailer,
        "segments reordered": seg[0] + seg[2] + seg[1] + b"".join(seg[3:]) + trailer,
    }


async def test_a_blob_changed_after_a_first_read_is_refused(
    sealed: SealedBackend, local: LocalBackend
) -> None:
    data = os.urandom(6 * SEGMENT + 999)
    ref = await put(sealed, data)
    reads = whole(sealed)
    start, end = SEGMENT + 10, 4 * SEGMENT  # segments 1 to 3
    assert await reads.read_whole(ref, start, end) == data[start:end]  # trailer remembered
    good = local.local_path(ref).read_bytes()
    for what, bad in damaged(good).items():
        replace(local, ref, bad)
        with pytest.raises(BlobCorrupt):
            await reads.read_whole(ref, start, end)
            pytest.fail(f"{what}: served")
        replace(local, ref, good)
        assert await reads.read_whole(ref, start, end) == data[start:end], what


async def test_a_blob_swapped_for_another_after_a_first_read_is_refused(
    sealed: SealedBackend, local: LocalBackend
) -> None:
    first, second = os.urandom(3 * SEGMENT), os.urandom(3 * SEGMENT)
    ref_one, ref_two = await put(sealed, first), await put(sealed, second)
    other_scope = await put(sealed, first, scope=SCOPE_B)
    reads = whole(sealed)
    assert await reads.read_whole(ref_one, 0, 100) == first[:100]
    assert await reads.read_whole(ref_two, 0, 100) == second[:100]
    good = local.local_path(ref_one).read_bytes()
    for source in (ref_two, other_scope):  # same size, sealed under this scope or another
        replace(local, ref_one, local.local_path(source).read_bytes())
        with pytest.raises(BlobCorrupt):
            await reads.read_whole(ref_one, 0, 100)
    replace(local, ref_one, good)
    assert await reads.read_whole(ref_one, 0, 100) == first[:100]


async def test_remembered_trailers_are_bounded(local: LocalBackend, keys: KeyRing) -> None:
    sealed = seal_backend(local, keys, sealing=True)
    reads = WholeReads(local, keys)
    reads.trailers = VerifiedTrailers(limit=3)
    blobs = {await put(sealed, os.urandom(100 + i)): i for i in range(6)}
    for _ in range(2):
        for ref, i in blobs.items():
            assert len(await reads.read(ref, 0, 1000)) == 100 + i
            assert len(reads.trailers) <= 3
    assert len(reads.trailers) == 3

"""A large upload reaches the blob store in the HTTP parser's pieces, which the store writes (and
seals) without joining them, and whose write-back to the disk it starts step by step: the bytes
stored are exactly the bytes sent, whatever the pieces, sealed or not."""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import random
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import xxhash

from blobstore import local_staging
from blobstore.errors import StorageFailure
from blobstore.local import LocalBackend
from blobstore.memory import MemoryBackend
from blobstore.port import BlobBackend
from blobstore.refs import ref_digest
from blobstore.sealing import SEGMENT, ScopeKey, Sealer
from blobstore.store import MAX_PIECES, ContentStore
from tests.blob_backends import local_backend, plain_or_sealed

SCOPE = "c" * 32
DIGEST = "d" * 32


def _twin(key: ScopeKey) -> tuple[Sealer, Sealer]:
    """Two sealers of one blob (same id, same key): their output can be compared byte for byte."""
    a, b = Sealer(key), Sealer(key)
    b.blob_id, b._cipher = a.blob_id, a._cipher
    return a, b


@pytest.mark.parametrize("seed", range(40))
def test_sealing_in_pieces_matches_sealing_whole(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.choice([0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 4 * SEGMENT])
    size = size if seed % 2 else rng.randrange(0, 9 * SEGMENT)
    data = rng.randbytes(size)
    whole, pieces = _twin(ScopeKey(os.urandom(32)))
    expected = whole.feed(data) + whole.finish(DIGEST, SCOPE)
    got = bytearray()
    pos = 0
    while pos < size:
        batch: list[bytes | memoryview] = []
        for _ in range(rng.randrange(1, 6)):
            n = rng.choice([1, 7, SEGMENT, SEGMENT + 3, 250_000, rng.randrange(1, 3 * SEGMENT)])
            part = data[pos : pos + n]
            batch.append(memoryview(part) if rng.random() < 0.5 else part)
            pos += n
        got += pieces.feed_many(batch)
    got += pieces.finish(DIGEST, SCOPE)
    assert bytes(got) == expected


def _pieces(data: bytes, sizes: list[int]) -> list[bytes]:
    out, pos, k = [], 0, 0
    while pos < len(data):
        n = sizes[k % len(sizes)]
        out.append(data[pos : pos + n])
        pos += n
        k += 1
    return out


async def _stream(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for p in pieces:
        await asyncio.sleep(0)
        yield p


@pytest.fixture(params=["local", "memory"])
async def inner(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobBackend]:
    backend: BlobBackend
    if request.param == "memory":
        backend = MemoryBackend()
    else:
        backend = await asyncio.to_thread(LocalBackend, tmp_path / "blobs")
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture(params=["plain", "sealed"])
async def backend(
    request: pytest.FixtureRequest, inner: BlobBackend, tmp_path: Path
) -> AsyncIterator[BlobBackend]:
    async with plain_or_sealed(request.param, inner, tmp_path / "meta") as chosen:
        yield chosen


# The parser's pieces (250,000 bytes), single bytes, pieces that straddle segments and batches,
# and a run of tiny pieces long enough to be gathered before a batch is full.
SHAPES = {
    "parser": [250_000],
    "mixed": [1, 250_000, SEGMENT + 5, 3, (1 << 20) + 1, 777],
    "tiny": [100] * (MAX_PIECES * 3) + [300_000],
}


@pytest.mark.parametrize("shape", SHAPES)
async def test_put_in_pieces_stores_exactly_the_bytes_sent(
    backend: BlobBackend, shape: str
) -> None:
    data = random.Random(shape).randbytes(3 * (1 << 20) + 12_345)
    store = ContentStore(backend)
    put = await store.put(_stream(_pieces(data, SHAPES[shape])), scope=SCOPE)
    assert put.size == len(data)
    assert ref_digest(put.ref) == xxhash.xxh3_128_hexdigest(data)
    got = b"".join([p async for p in backend.read(put.ref)])
    assert got == data
    # The same bytes in other pieces are the same content: deduplicated.
    again = await store.put(_stream(_pieces(data, [len(data)])), scope=SCOPE)
    assert again.ref == put.ref and not again.created


@pytest.fixture
def kicks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The write-back starts a local staging asks for: (offset, bytes)."""
    seen: list[tuple[int, int]] = []

    def record(fd: int, offset: int, nbytes: int) -> int:
        os.fstat(fd)  # a real, open descriptor
        seen.append((offset, nbytes))
        return 0

    monkeypatch.setattr(local_staging, "_start_writeback", record)
    return seen


@pytest.mark.parametrize("sealed", [False, True])
async def test_large_blob_starts_its_write_back_step_by_step(
    tmp_path: Path, kicks: list[tuple[int, int]], sealed: bool
) -> None:
    step = local_staging.WRITEBACK_STEP
    size = 3 * step + step // 2
    kind = "sealed" if sealed else "plain"
    async with (
        local_backend(tmp_path / "blobs") as local,
        plain_or_sealed(kind, local, tmp_path / "meta") as backend,
    ):
        data = random.Random(7).randbytes(size)
        put = await ContentStore(backend).put(_stream(_pieces(data, [250_000])), scope=SCOPE)
        stored = os.path.getsize(local.local_path(put.ref))
    # Each start covers the bytes since the last one, in order, at least a step of them, never
    # past what was written; what is left (under a step) is written back by publish's flush.
    # (A start still running when the next step is full makes the next one cover both.)
    assert 1 <= len(kicks) <= 3
    assert kicks[0][0] == 0
    for (offset, nbytes), (following, _) in itertools.pairwise(kicks):
        assert following == offset + nbytes
    assert all(nbytes >= step for _, nbytes in kicks)
    end = kicks[-1][0] + kicks[-1][1]
    assert stored - step < end <= stored


async def test_blocked_write_back_start_does_not_hold_up_the_writes(
    tmp_path: Path, kicks: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # sync_file_range blocks while the device's queue is full: the upload's bytes keep being
    # written meanwhile, and the next start covers everything written since the blocked one.
    release = threading.Event()
    record = local_staging._start_writeback
    assert record is not None

    def blocking(fd: int, offset: int, nbytes: int) -> object:
        if not kicks:
            release.wait(30)
        return record(fd, offset, nbytes)

    monkeypatch.setattr(local_staging, "_start_writeback", blocking)
    step = local_staging.WRITEBACK_STEP
    data = random.Random(9).randbytes(4 * step)
    consumed = asyncio.Event()

    async def stream() -> AsyncIterator[bytes]:
        for piece in _pieces(data, [250_000]):
            yield piece
        consumed.set()

    local = await asyncio.to_thread(LocalBackend, tmp_path / "blobs")
    try:
        put = asyncio.ensure_future(ContentStore(local).put(stream()))
        await asyncio.wait_for(consumed.wait(), 30)  # every byte taken while the start blocks
        assert not put.done()  # publish waits for the start still running
        release.set()
        stored = await put
        assert b"".join([p async for p in local.read(stored.ref)]) == data
    finally:
        release.set()
        await local.close()
    # The blocked start covered the first step; a later one, if the writer saw it finished
    # before publishing, covers everything since (publish's flush writes the rest anyway).
    assert kicks[0][0] == 0 and kicks[0][1] >= step
    assert len(kicks) <= 2
    for (offset, nbytes), (following, _) in itertools.pairwise(kicks):
        assert following == offset + nbytes


async def test_small_blob_starts_no_write_back(
    tmp_path: Path, kicks: list[tuple[int, int]]
) -> None:
    local = await asyncio.to_thread(LocalBackend, tmp_path / "blobs")
    try:
        data = os.urandom(local_staging.HOLD_BYTES)
        put = await ContentStore(local).put(_stream(_pieces(data, [250_000])))
        assert b"".join([p async for p in local.read(put.ref)]) == data
    finally:
        await local.close()
    assert kicks == []


@pytest.fixture
def flushes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The early flushes a local staging asks for: the file's size at each."""
    seen: list[int] = []

    def record(fd: int) -> None:
        try:
            seen.append(os.fstat(fd).st_size)
        finally:
            os.close(fd)

    monkeypatch.setattr(local_staging, "_flush", record)
    monkeypatch.setattr(local_staging, "FLUSH_STEP", 2 * local_staging.WRITEBACK_STEP)
    return seen


async def test_large_blob_is_flushed_while_it_streams(
    tmp_path: Path, kicks: list[tuple[int, int]], flushes: list[int]
) -> None:
    # The device's own write cache is flushed every FLUSH_STEP while the bytes still arrive,
    # so the publish's flush finds at most a step of them still to persist.
    step = local_staging.FLUSH_STEP
    data = random.Random(11).randbytes(3 * step + step // 2)
    local = await asyncio.to_thread(LocalBackend, tmp_path / "blobs")
    try:
        put = await ContentStore(local).put(_stream(_pieces(data, [250_000])))
        assert b"".join([p async for p in local.read(put.ref)]) == data
    finally:
        await local.close()
    assert 1 <= len(flushes) <= 3
    assert all(step <= size < len(data) for size in flushes)
    assert flushes == sorted(flushes)
    assert kicks  # write-back is still started between flushes


async def test_failed_early_flush_fails_the_put(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The descriptor an early flush uses shares the file's error state with the staging's own:
    # its failure must fail the publish, not be consumed unseen.
    def failing(fd: int) -> None:
        os.close(fd)
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(local_staging, "_flush", failing)
    monkeypatch.setattr(local_staging, "FLUSH_STEP", local_staging.WRITEBACK_STEP)
    data = random.Random(12).randbytes(3 * local_staging.WRITEBACK_STEP)
    local = await asyncio.to_thread(LocalBackend, tmp_path / "blobs")
    try:
        with pytest.raises(StorageFailure, match="blob store I/O failed: EIO"):
            await ContentStore(local).put(_stream(_pieces(data, [250_000])))
        assert [b async for b in local.scan()] == []
        assert await asyncio.to_thread(local.temp_files) == []
    finally:
        await local.close()

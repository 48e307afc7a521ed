"""A large blob whose size is announced before its first byte goes to S3 as one streamed PUT:
no multipart upload, the bytes and dedup as on every path, nothing stored when the stream is cut
or is not the announced length, memory bounded while the engine takes nothing, and an engine
that stops taking bytes reported as StoreUnavailable."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from blobstore import s3_one_put, s3_staging
from blobstore.errors import StorageFailure, StoreFull, StoreUnavailable
from blobstore.refs import ref_candidates
from blobstore.s3 import PART_SIZE, S3Backend, S3Location
from blobstore.s3_errors import by_status
from blobstore.sealed import SealedBackend
from blobstore.store import ContentStore
from tests.engines import key_ring
from tests.s3_counting_proxy import counting_proxy
from tests.server_proc import free_port
from tests.test_blob_s3 import PausableRelay, list_meta, pieces, read_all, taken_until_blocked

MiB = 1 << 20


def socket_buffers() -> int:
    """The most a TCP sender's and a receiver's kernel buffers may hold on this host."""
    most = 0
    for name in ("tcp_wmem", "tcp_rmem"):
        most += int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2])
    return most


@pytest.fixture
async def silent_engine(
    s3_location: S3Location, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[S3Backend, PausableRelay]]:
    """A backend whose engine reads nothing and answers nothing (behind a held relay), with a
    stall limit of one second."""
    monkeypatch.setattr(s3_one_put, "STALL_S", 1.0)
    relay = PausableRelay(s3_location.endpoint)
    backend = S3Backend(replace(s3_location, endpoint=await relay.start()))
    relay.flowing.clear()
    try:
        yield backend, relay
    finally:
        relay.flowing.set()
        await relay.close()
        await backend.close()


async def nothing_stored(backend: S3Backend) -> None:
    assert [i async for i in backend.scan()] == []
    assert [m async for m in list_meta(backend, s3_staging.DATA)] == []
    assert await backend.leftovers() == []


async def test_an_announced_large_blob_is_one_put_and_no_multipart_upload(
    s3_location: S3Location,
) -> None:
    data = os.urandom(3 * PART_SIZE + 7)
    async with counting_proxy(s3_location.endpoint) as (endpoint, seen):
        backend = S3Backend(replace(s3_location, endpoint=endpoint))
        try:
            put = await ContentStore(backend).put(pieces(data), size=len(data))
            writes = [(m, p) for m, p, _ in seen.requests if m in ("PUT", "POST")]
            data_key = f"/{s3_location.bucket}/{backend.key(s3_staging.DATA, '')}"
            assert [m for m, p in writes if p.startswith(data_key)] == ["PUT"]
            assert not any("uploads" in p or "uploadId" in p for _, p in writes)
            assert await read_all(backend, put.ref) == data
            assert (
                await read_all(backend, put.ref, PART_SIZE - 3, PART_SIZE + 3)
                == (data[PART_SIZE - 3 : PART_SIZE + 3])
            )
            assert await backend.leftovers() == []
        finally:
            await backend.close()


async def test_an_announced_small_blob_stays_one_conditional_put(s3_backend: S3Backend) -> None:
    data = os.urandom(PART_SIZE)  # at most a part: held in memory, never a data object
    put = await ContentStore(s3_backend).put(pieces(data), size=len(data))
    assert await read_all(s3_backend, put.ref) == data
    assert [m async for m in list_meta(s3_backend, s3_staging.DATA)] == []


async def test_announced_duplicates_and_collisions_compare_bytes(s3_backend: S3Backend) -> None:
    store = ContentStore(s3_backend)
    data = os.urandom(PART_SIZE + 1)
    first = await store.put(pieces(data), size=len(data))
    again = await store.put(pieces(data, 3 * MiB), size=len(data))
    unannounced = await store.put(pieces(data))
    assert first.created and again.ref == unannounced.ref == first.ref
    assert not again.created and not unannounced.created
    assert len([m async for m in list_meta(s3_backend, s3_staging.DATA)]) == 1
    assert await s3_backend.leftovers() == []


async def test_a_sealed_announced_blob_is_one_put_round_trips_and_deduplicates(
    s3_location: S3Location, tmp_path: Path
) -> None:
    async with counting_proxy(s3_location.endpoint) as (endpoint, seen), key_ring(tmp_path) as keys:
        backend = S3Backend(replace(s3_location, endpoint=endpoint))
        try:
            sealed = SealedBackend(backend, keys, sealing=True)
            store = ContentStore(sealed)
            data = os.urandom(2 * PART_SIZE + 5)
            put = await store.put(pieces(data), scope="ab" * 16, size=len(data))
            data_key = f"/{s3_location.bucket}/{backend.key(s3_staging.DATA, '')}"
            writes = [m for m, p, _ in seen.requests if m in ("PUT", "POST")]
            assert [m for m, p, _ in seen.requests if p.startswith(data_key)] == ["PUT"]
            assert writes.count("POST") == 0  # no multipart upload
            assert b"".join([p async for p in sealed.read(put.ref)]) == data
            again = await store.put(pieces(data), scope="ab" * 16, size=len(data))
            assert (again.ref, again.created) == (put.ref, False)
            assert len([m async for m in list_meta(backend, s3_staging.DATA)]) == 1
        finally:
            await backend.close()


@pytest.mark.parametrize("delta", [-1, 1])
async def test_a_stream_not_of_the_announced_length_stores_nothing(
    s3_backend: S3Backend, delta: int
) -> None:
    data = os.urandom(PART_SIZE + MiB)
    with pytest.raises(ValueError, match="announced"):
        await ContentStore(s3_backend).put(pieces(data), size=len(data) + delta)
    await nothing_stored(s3_backend)


async def test_memory_is_bounded_while_the_engine_takes_nothing(s3_location: S3Location) -> None:
    """With the engine reading nothing, writes stop being taken once the queue and the
    sockets' buffers are full; once it reads again, the blob is stored intact."""
    relay = PausableRelay(s3_location.endpoint)
    backend = S3Backend(replace(s3_location, endpoint=await relay.start()))
    size = 64 * MiB
    staging = await backend.stage(size)
    piece = os.urandom(MiB)
    try:
        await staging.write(piece)
        relay.flowing.clear()
        taken, blocked = await taken_until_blocked(lambda: staging.write(piece), size - 2 * MiB)
        taken += MiB  # the first piece
        # The queue and the piece being sent, and what the two sockets before the held relay
        # may buffer (the kernel's memory, not this process's).
        assert taken <= s3_one_put.QUEUED + MiB + socket_buffers()
        relay.flowing.set()
        await blocked
        taken += MiB
        for _ in range((size - taken) // MiB):
            await staging.write(piece)
        ref = next(ref_candidates("ab" * 16))
        assert await staging.publish(ref)
        assert await backend.stat(ref) == size
        assert await read_all(backend, ref, size - MiB) == piece
    finally:
        await staging.discard()
        relay.flowing.set()
        await relay.close()
        await backend.close()


async def test_an_engine_taking_nothing_for_too_long_is_unavailable(
    silent_engine: tuple[S3Backend, PausableRelay], s3_location: S3Location
) -> None:
    backend, relay = silent_engine

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield os.urandom(MiB)

    with pytest.raises(StoreUnavailable):
        await ContentStore(backend).put(endless(), size=1 << 30)
    relay.flowing.set()  # what the sockets held reaches the engine: a PUT short of its length
    await relay.close()
    await nothing_stored(S3Backend(s3_location))


async def test_an_unreachable_engine_is_unavailable_for_an_announced_blob(
    s3_location: S3Location,
) -> None:
    dead = S3Backend(replace(s3_location, endpoint=f"http://127.0.0.1:{free_port()}"))
    data = os.urandom(PART_SIZE + 1)
    try:
        with pytest.raises(StoreUnavailable):
            await ContentStore(dead).put(pieces(data), size=len(data))
    finally:
        await dead.close()


async def test_an_engine_silent_after_the_last_byte_is_unavailable(
    silent_engine: tuple[S3Backend, PausableRelay], s3_location: S3Location
) -> None:
    """Every byte given, the engine reads none and answers nothing: finish gives up."""
    backend, _ = silent_engine
    data = os.urandom(PART_SIZE + MiB)  # fits the queue and the sockets' buffers
    with pytest.raises(StoreUnavailable):
        await ContentStore(backend).put(pieces(data), size=len(data))
    assert [i async for i in S3Backend(s3_location).scan()] == []  # nothing published


async def test_a_closed_backend_starts_no_upload(s3_backend: S3Backend) -> None:
    await s3_backend.close()
    with pytest.raises(StoreUnavailable):
        await ContentStore(s3_backend).put(pieces(os.urandom(PART_SIZE + 1)), size=PART_SIZE + 1)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, "<Code>RequestTimeout</Code>", StoreUnavailable),
        (503, "<Code>SlowDown</Code>", StoreUnavailable),
        (507, "", StoreFull),
        (403, "<Code>SignatureDoesNotMatch</Code>", StorageFailure),
    ],
)
def test_an_answer_to_a_put_maps_to_a_typed_error(
    status: int, body: str, expected: type[Exception]
) -> None:
    assert type(by_status(status, body)) is expected

"""What the S3 backend does beyond the shared contract: large blobs through multipart staging,
collision-safe dedup of large blobs, published by a pointer (no copy) that no content can pose as,
nothing left behind, memory bounded by the parts in flight, and an unreachable engine reported as StoreUnavailable."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import obstore
import pytest
import xxhash
from obstore.exceptions import GenericError, NotFoundError, PermissionDeniedError

from blobstore import s3, s3_pointers, s3_staging
from blobstore.errors import BlobNotFound, StorageFailure, StoreFull, StoreUnavailable
from blobstore.refs import BlobRef, ref_candidates
from blobstore.s3 import PART_SIZE, S3Backend, S3Location
from blobstore.store import ContentStore
from tests.server_proc import free_port
from tests.test_blob_contract import ConstantHash

MiB = 1 << 20


async def pieces(data: bytes, size: int = MiB) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        await asyncio.sleep(0)
        yield data[i : i + size]


async def read_all(
    backend: S3Backend, ref: BlobRef, start: int = 0, end: int | None = None
) -> bytes:
    return b"".join([p async for p in backend.read(ref, start, end)])


async def test_large_blob_streams_through_staging_and_leaves_none(s3_backend: S3Backend) -> None:
    data = os.urandom(2 * PART_SIZE + 12345)
    put = await ContentStore(s3_backend).put(pieces(data))
    assert put.created and put.size == len(data)
    assert await s3_backend.stat(put.ref) == len(data)
    assert await read_all(s3_backend, put.ref) == data
    assert (
        await read_all(s3_backend, put.ref, PART_SIZE - 10, PART_SIZE + 10)
        == (data[PART_SIZE - 10 : PART_SIZE + 10])
    )
    assert await s3_backend.leftovers() == []


async def test_large_duplicate_is_compared_and_deduplicated(s3_backend: S3Backend) -> None:
    data = os.urandom(PART_SIZE + 1)
    store = ContentStore(s3_backend)
    first = await store.put(pieces(data))
    again = await store.put(pieces(data, 3 * MiB))
    assert again.ref == first.ref and not again.created
    assert await s3_backend.leftovers() == []


async def test_large_collision_of_equal_size_gets_its_own_ref(s3_backend: S3Backend) -> None:
    """Same (forced) hash and same size: only the byte comparison by ranges tells them apart."""
    a = os.urandom(PART_SIZE + 100)
    b = a[:-1] + bytes([a[-1] ^ 1])  # differs in the very last byte
    store = ContentStore(s3_backend, hasher=ConstantHash)
    put_a = await store.put(pieces(a))
    put_b = await store.put(pieces(b))
    assert put_a.ref != put_b.ref and put_b.created
    assert await read_all(s3_backend, put_a.ref) == a
    assert await read_all(s3_backend, put_b.ref) == b
    assert await s3_backend.leftovers() == []


@pytest.mark.parametrize("announced", [None, 4 * PART_SIZE], ids=["multipart", "one-put"])
async def test_client_failing_mid_upload_stores_nothing(
    s3_backend: S3Backend, announced: int | None
) -> None:
    async def broken() -> AsyncIterator[bytes]:
        for _ in range(3 * PART_SIZE // MiB):
            yield os.urandom(MiB)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await ContentStore(s3_backend).put(broken(), size=announced)
    assert [i async for i in s3_backend.scan()] == []
    assert await s3_backend.leftovers() == []


class PausableRelay:
    """A TCP relay to the engine whose backend-to-engine direction can be held: what the
    backend sends then waits in socket buffers, and none of its requests is answered."""

    def __init__(self, endpoint: str) -> None:
        url = urlsplit(endpoint)
        assert url.hostname is not None and url.port is not None
        self._target = (url.hostname, url.port)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        engine_r, engine_w = await asyncio.open_connection(*self._target)
        for pump in (self._pump(client_r, engine_w, self.flowing), self._pump(engine_r, client_w)):
            task = asyncio.create_task(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    @staticmethod
    async def _pump(
        src: asyncio.StreamReader, dst: asyncio.StreamWriter, gate: asyncio.Event | None = None
    ) -> None:
        try:
            while True:
                if gate is not None:
                    await gate.wait()
                data = await src.read(1 << 16)
                if not data:
                    break
                dst.write(data)
                await dst.drain()
        except ConnectionError:
            pass
        finally:
            dst.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._pumps):
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)


async def taken_until_blocked(
    write: Callable[[], Awaitable[None]], most: int
) -> tuple[int, asyncio.Task[None]]:
    """Call ``write`` (a MiB a call) until a call is still waiting after 2 s: the bytes taken
    before it, and that call.  Fails when ``most`` bytes were taken with none waiting."""
    taken = 0
    while taken <= most:
        task = asyncio.ensure_future(write())
        done, _ = await asyncio.wait({task}, timeout=2)
        if not done:
            return taken, task
        task.result()
        taken += MiB
    raise AssertionError(f"took {taken} bytes while the engine took none")


async def test_a_large_upload_holds_a_bounded_number_of_parts(s3_location: S3Location) -> None:
    """With the engine taking no bytes, the staging stops taking them too once the parts in
    flight and the one filling are full: memory per upload is bounded, whatever the client
    sends.  Once the engine reads again, the upload completes intact."""
    relay = PausableRelay(s3_location.endpoint)
    backend = S3Backend(replace(s3_location, endpoint=await relay.start()))
    staging = await backend.stage()
    piece = os.urandom(MiB)
    hasher = xxhash.xxh3_128()

    async def write() -> None:
        hasher.update(piece)
        await staging.write(piece)

    try:
        for _ in range(2 * PART_SIZE // MiB):  # parts go up as they fill
            await write()
        relay.flowing.clear()
        taken, blocked = await taken_until_blocked(write, 8 * PART_SIZE)
        assert taken <= (s3_staging.PARTS_IN_FLIGHT + 1) * PART_SIZE
        relay.flowing.set()
        await blocked
        await write()
        ref = next(ref_candidates(hasher.hexdigest()))
        assert await staging.publish(ref)
        size = 2 * PART_SIZE + taken + 2 * MiB
        assert await backend.stat(ref) == size
        assert await read_all(backend, ref, size - MiB) == piece
        assert await backend.leftovers() == []
    finally:
        await staging.discard()
        relay.flowing.set()
        await relay.close()


async def test_ranges_at_and_past_the_end_are_empty(s3_backend: S3Backend) -> None:
    put = await ContentStore(s3_backend).put_bytes(b"0123456789")
    assert await read_all(s3_backend, put.ref, 10) == b""
    assert await read_all(s3_backend, put.ref, 4, 4) == b""
    assert await read_all(s3_backend, put.ref, 8, 100) == b"89"
    opened = await s3_backend.open(put.ref, 3, 7)
    assert opened.length == 4
    await opened.aclose()


async def test_missing_blob_fails_at_open_before_any_byte(s3_backend: S3Backend) -> None:
    with pytest.raises(BlobNotFound):
        await s3_backend.open(BlobRef("xxh3_128-" + "cd" * 16), 5, 9)


async def test_unreachable_engine_is_store_unavailable(s3_location: S3Location) -> None:
    dead = S3Backend(replace(s3_location, endpoint=f"http://127.0.0.1:{free_port()}"))
    ref = BlobRef("xxh3_128-" + "ef" * 16)
    with pytest.raises(StoreUnavailable):
        await ContentStore(dead).put_bytes(b"hello")
    with pytest.raises(StoreUnavailable):
        await dead.stat(ref)
    with pytest.raises(StoreUnavailable):
        await dead.open(ref)
    with pytest.raises(StoreUnavailable):
        await dead.check()


PUT = "Generic S3 error: Error performing PUT http://127.0.0.1:1/b/blobs/k in 2ms - "


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (
            GenericError(PUT + "Server returned non-2xx status code: 507 Insufficient Storage: "),
            StoreFull,
        ),
        (
            GenericError(
                PUT + "Server returned non-2xx status code: 500 Internal Server Error: "
                "assign volume: no free volumes left"
            ),
            StoreFull,
        ),
        (
            GenericError(PUT + "Server returned non-2xx status code: 403 Forbidden: QuotaExceeded"),
            StoreFull,
        ),
        (
            GenericError(
                PUT + "Server returned non-2xx status code: 503 Service Unavailable: SlowDown"
            ),
            StoreUnavailable,
        ),
        (
            GenericError(PUT + "Server returned non-2xx status code: 500 Internal Server Error: "),
            StoreUnavailable,
        ),
        (
            GenericError(PUT + "Server returned non-2xx status code: 429 Too Many Requests: "),
            StoreUnavailable,
        ),
        (
            GenericError(PUT + "error sending request: tcp connect error: Connection refused"),
            StoreUnavailable,
        ),
        (TimeoutError("timed out"), StoreUnavailable),
        (
            PermissionDeniedError(PUT + "Server returned non-2xx status code: 403 Forbidden: "),
            StorageFailure,
        ),
        (
            GenericError(PUT + "Server returned non-2xx status code: 400 Bad Request: "),
            StorageFailure,
        ),
        (NotFoundError("Object at location b/blobs/k not found"), BlobNotFound),
        (FileNotFoundError("Object at location b/blobs/k not found"), BlobNotFound),
    ],
)
def test_engine_errors_map_to_typed_errors(raised: Exception, expected: type[Exception]) -> None:
    got = s3.translate(raised)
    assert type(got) is expected
    assert "http://" not in str(got) and "127.0.0.1" not in str(got)
    if isinstance(got, StoreUnavailable):
        assert got.retry_after == s3.RETRY_AFTER_S


async def test_a_large_blob_is_published_by_a_pointer_without_a_copy(s3_backend: S3Backend) -> None:
    data = os.urandom(PART_SIZE + 5)
    put = await ContentStore(s3_backend).put(pieces(data))
    [pointer] = [m async for m in list_meta(s3_backend, s3_staging.BLOBS)]
    assert pointer["size"] == s3_pointers.POINTER_SIZE
    assert [m["size"] async for m in list_meta(s3_backend, s3_staging.DATA)] == [len(data)]
    assert [(i.ref, i.size) async for i in s3_backend.scan()] == [(put.ref, len(data))]
    # Another process (no pointer remembered) reads it, whole and in ranges past the pointer.
    other = S3Backend(s3_backend.location)
    assert await other.stat(put.ref) == len(data)
    assert await read_all(other, put.ref, PART_SIZE, PART_SIZE + 5) == data[PART_SIZE:]
    assert await read_all(other, put.ref, PART_SIZE + 5) == b""
    assert await read_all(other, put.ref) == data
    # gc deletes it (pointer, then bytes); stored again, it is read where it is now, even by a
    # process that remembered where it was.
    await s3_backend.delete(put.ref)
    assert await other.stat(put.ref) is None and await s3_backend.leftovers() == []
    await ContentStore(s3_backend).put(pieces(data))
    assert await read_all(other, put.ref, 1, 3) == data[1:3]


async def test_content_that_spells_a_pointer_is_content(s3_backend: S3Backend) -> None:
    big = os.urandom(PART_SIZE + 5)
    await ContentStore(s3_backend).put(pieces(big))
    [name] = [m["path"].rsplit("/", 1)[1] async for m in list_meta(s3_backend, s3_staging.DATA)]
    forged = s3_pointers.encode(name, len(big))
    put = await ContentStore(s3_backend).put(pieces(forged))
    assert await s3_backend.stat(put.ref) == len(forged)
    assert await read_all(s3_backend, put.ref) == forged
    again = await ContentStore(s3_backend).put(pieces(forged))
    assert (again.ref, again.created) == (put.ref, False)


async def list_meta(backend: S3Backend, kind: str) -> AsyncIterator[dict[str, Any]]:
    async for batch in obstore.list(backend.store, prefix=backend.key(kind, "")):
        for meta in batch:
            yield dict(meta)

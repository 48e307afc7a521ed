"""A staged blob's writes queue behind the one running (blobstore/write_lane.py): they run in the
order given, one at a time, with at most a few in flight (memory stays flat), and once one fails
nothing after it runs: the put fails and leaves nothing behind, sealed or not."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest
import xxhash

from blobstore import local_staging
from blobstore.errors import StorageFailure
from blobstore.local import LocalBackend
from blobstore.port import BlobBackend
from blobstore.refs import ref_digest
from blobstore.sealing import Sealer
from blobstore.store import WRITE_BATCH, ContentStore
from blobstore.write_lane import WriteLane
from tests.blob_backends import local_backend, plain_or_sealed

SCOPE = "c" * 32


def _lane(pool: ThreadPoolExecutor, depth: int) -> WriteLane:
    async def run(fn: Callable[[], None]) -> None:
        await asyncio.get_running_loop().run_in_executor(pool, fn)

    return WriteLane(run, depth)


async def test_operations_run_one_at_a_time_in_the_order_pushed() -> None:
    # A pool of many threads, as the store's: the lane still runs its operations in order and
    # never two at once; a push returns with at most `depth` in flight.
    with ThreadPoolExecutor(8) as pool:
        lane = _lane(pool, 3)
        ran: list[int] = []
        running = 0
        most = 0
        lock = threading.Lock()
        pushed = 0

        def op(k: int) -> None:
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
                # Pushed but not finished: this one and those queued behind it.
                assert pushed - len(ran) <= 3 + 1
            time.sleep(random.Random(k).random() / 500)
            ran.append(k)
            with lock:
                running -= 1

        for k in range(60):
            pushed += 1
            await lane.push(partial(op, k))
            assert pushed - len(ran) <= 3
        await lane.settle()
    assert ran == list(range(60))
    assert most == 1


async def test_a_failed_operation_skips_every_later_one_and_is_raised() -> None:
    with ThreadPoolExecutor(8) as pool:
        lane = _lane(pool, 5)
        gate = threading.Event()
        ran: list[int] = []

        def op(k: int) -> None:
            if k == 0:
                assert gate.wait(10)
            if k == 2:
                raise OSError(5, "disk gone")
            ran.append(k)

        for k in range(5):  # all queued while the first is held
            await lane.push(partial(op, k))
        gate.set()
        with pytest.raises(OSError, match="disk gone"):
            await lane.settle()
    assert ran == [0, 1]


async def test_a_push_beyond_the_depth_raises_an_earlier_failure() -> None:
    with ThreadPoolExecutor(2) as pool:
        lane = _lane(pool, 1)

        def fail() -> None:
            raise ValueError("sealing failed")

        await lane.push(fail)
        with pytest.raises(ValueError, match="sealing failed"):
            await lane.push(lambda: None)
        # With room in the queue, the next push still reports it once the failure is known.
        roomy = _lane(pool, 5)
        failed = threading.Event()

        def fail_and_tell() -> None:
            failed.set()
            raise ValueError("sealing failed")

        await roomy.push(fail_and_tell)
        assert await asyncio.to_thread(failed.wait, 10)
        for _ in range(100):
            await asyncio.sleep(0.01)  # the thread records the failure after raising
            if roomy._broken is not None:
                break
        with pytest.raises(ValueError, match="sealing failed"):
            await roomy.push(lambda: None)


async def test_abandoned_operations_do_not_run() -> None:
    with ThreadPoolExecutor(2) as pool:
        lane = _lane(pool, 5)
        entered, gate = threading.Event(), threading.Event()
        ran: list[int] = []

        def first() -> None:
            entered.set()
            assert gate.wait(10)
            ran.append(0)

        await lane.push(first)
        await lane.push(lambda: ran.append(1))
        assert await asyncio.to_thread(entered.wait, 10)
        lane.abandon()  # the running one finishes, the queued one never starts
        gate.set()
        with contextlib.suppress(Exception):
            await lane.settle()
        assert lane.idle
    assert ran == [0]


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    async with local_backend(tmp_path / "blobs") as backend:
        yield backend


@pytest.fixture(params=["plain", "sealed"])
async def backend(
    request: pytest.FixtureRequest, local: LocalBackend, tmp_path: Path
) -> AsyncIterator[BlobBackend]:
    async with plain_or_sealed(request.param, local, tmp_path / "meta") as chosen:
        yield chosen


async def test_batches_queued_behind_a_slow_write_are_stored_in_order_and_bounded(
    backend: BlobBackend, local: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first write to the file is held in its thread: the upload goes on receiving, its
    # next batches queue (a few, no more: the stream is not read further), and once the write
    # goes on, they follow it in order.
    gate = threading.Event()
    real = local_staging.LocalStaging._write_pieces

    def held_first(self: local_staging.LocalStaging, pieces: Sequence[bytes | memoryview]) -> None:
        if self._filled == 0:
            assert gate.wait(10)
        real(self, pieces)

    monkeypatch.setattr(local_staging.LocalStaging, "_write_pieces", held_first)
    piece = 250_000
    batch = -(-WRITE_BATCH // piece) * piece  # the store writes whole pieces, at least a batch
    data = random.Random(3).randbytes(16 * batch + 999)
    read = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal read
        for pos in range(0, len(data), piece):
            read = pos
            yield data[pos : pos + piece]

    put = asyncio.create_task(ContentStore(backend).put(body(), scope=SCOPE))
    for _ in range(200):
        await asyncio.sleep(0.01)
    # Read so far: the batches in flight (the one being written, those queued behind it), the
    # one being gathered, and (not sealed) the first batch, held in memory before any write.
    assert not put.done()
    assert read <= (local_staging.WRITES_IN_FLIGHT + 2) * batch
    gate.set()
    done = await put
    assert ref_digest(done.ref) == xxhash.xxh3_128_hexdigest(data)
    assert b"".join([p async for p in backend.read(done.ref)]) == data


async def test_a_failure_in_the_sealing_thread_fails_the_put_and_leaves_nothing(
    backend: BlobBackend, local: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The third batch fails in the writer's thread (sealing, or the write when not sealed):
    # the put fails, no batch after it is made, no blob is published, no temp file stays.
    calls = 0
    if isinstance(backend, LocalBackend):
        real_write = local_staging.LocalStaging._write_pieces

        def failing_write(
            self: local_staging.LocalStaging, pieces: Sequence[bytes | memoryview]
        ) -> None:
            nonlocal calls
            calls += 1
            if calls == 3:
                raise OSError(5, "I/O error")
            real_write(self, pieces)

        monkeypatch.setattr(local_staging.LocalStaging, "_write_pieces", failing_write)
        expected: type[Exception] = StorageFailure
    else:
        real_seal = Sealer.feed_many

        def failing_seal(self: Sealer, pieces: Sequence[bytes | memoryview]) -> memoryview:
            nonlocal calls
            calls += 1
            if calls == 3:
                raise ValueError("sealing failed")
            return real_seal(self, pieces)

        monkeypatch.setattr(Sealer, "feed_many", failing_seal)
        expected = ValueError
    data = random.Random(5).randbytes(10 * WRITE_BATCH)

    async def body() -> AsyncIterator[bytes]:
        for pos in range(0, len(data), 250_000):
            yield data[pos : pos + 250_000]

    with pytest.raises(expected):
        await ContentStore(backend).put(body(), scope=SCOPE)
    assert calls == 3
    assert [info async for info in local.scan()] == []
    assert await asyncio.to_thread(os.listdir, local.tmp) == []

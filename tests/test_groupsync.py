"""GroupSync delivers every outcome of a round to its waiters, whatever the failure."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from blobstore.errors import StorageFailure
from blobstore.groupsync import GroupSync


async def _settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_a_flush_that_cannot_even_run_fails_its_waiters(tmp_path: Path) -> None:
    """E.g. the store's thread pool already shut down: the waiters must hear it, not hang."""

    async def run(fn: Callable[[], None]) -> None:
        raise RuntimeError("cannot schedule new futures after shutdown")

    syncer = GroupSync(tmp_path, run)
    waiters = [asyncio.create_task(syncer.sync()) for _ in range(3)]
    await _settle()
    assert all(w.done() for w in waiters)
    for w in waiters:
        with pytest.raises(StorageFailure):
            w.result()
    # And the next call starts a new round.
    again = asyncio.create_task(syncer.sync())
    await _settle()
    assert again.done()
    assert isinstance(again.exception(), StorageFailure)


async def test_a_cancelled_flusher_does_not_strand_its_waiters(tmp_path: Path) -> None:
    gate = asyncio.Event()

    async def run(fn: Callable[[], None]) -> None:
        await gate.wait()

    syncer = GroupSync(tmp_path, run)
    waiter = asyncio.create_task(syncer.sync())
    await _settle()
    flusher = syncer._task
    assert flusher is not None
    flusher.cancel()  # e.g. the loop shutting down
    await _settle()
    assert waiter.done()
    assert isinstance(waiter.exception(), StorageFailure)

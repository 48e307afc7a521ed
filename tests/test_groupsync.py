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


async def test_carried_operations_share_one_round_and_keep_their_outcomes(tmp_path: Path) -> None:
    """Operations carried by one round run in its one hand-off, before its flush; each caller
    gets its own result, and one that raises fails only its own caller."""
    hops: list[int] = []
    flushed: list[list[str]] = []
    order: list[str] = []

    async def run(fn: Callable[[], object]) -> object:
        hops.append(1)
        return fn()

    syncer = GroupSync(tmp_path, run)

    def flush() -> None:
        flushed.append(list(order))

    syncer._flush = flush  # type: ignore[method-assign]

    def op(name: str) -> Callable[[], str]:
        def fn() -> str:
            order.append(name)
            if name == "bad":
                raise OSError(5, "I/O error")
            return name.upper()

        return fn

    carried = [syncer.carry(op(n)) for n in ("a", "bad", "b")]
    await _settle()
    assert len(hops) == 1
    assert flushed == [["a", "bad", "b"]]  # every operation ran before the flush
    assert carried[0].durable.result() == "A"
    assert carried[2].durable.result() == "B"
    assert isinstance(carried[1].durable.exception(), OSError)
    assert carried[0].ran.result() == "A"
    assert isinstance(carried[1].ran.exception(), OSError)


async def test_a_failed_flush_fails_the_carried_operations(tmp_path: Path) -> None:
    """An operation that ran but whose flush failed is not durable: its caller hears the
    flush's error, though ``ran`` tells that it did run."""

    async def run(fn: Callable[[], object]) -> object:
        return fn()

    syncer = GroupSync(tmp_path, run)

    def flush() -> None:
        raise OSError(5, "I/O error")

    syncer._flush = flush  # type: ignore[method-assign]
    carried = syncer.carry(lambda: "done")
    waiter = asyncio.create_task(syncer.sync())
    await _settle()
    assert carried.ran.result() == "done"
    assert isinstance(carried.durable.exception(), OSError)
    assert isinstance(waiter.exception(), OSError)


async def test_a_cancelled_round_still_reports_what_ran(tmp_path: Path) -> None:
    """The flusher cancelled (shutdown) while its thread runs: callers are failed at once, and
    ``ran`` resolves only when the thread is done with their files."""
    gate = asyncio.Event()

    async def run(fn: Callable[[], object]) -> object:
        await gate.wait()
        return fn()

    syncer = GroupSync(tmp_path, run)
    syncer._flush = lambda: None  # type: ignore[method-assign]
    carried = syncer.carry(lambda: "late")
    await _settle()
    flusher = syncer._task
    assert flusher is not None
    flusher.cancel()
    await _settle()
    assert isinstance(carried.durable.exception(), StorageFailure)
    assert not carried.ran.done()
    gate.set()
    await _settle()
    assert carried.ran.result() == "late"

"""``Engine.write_unit``: a write transaction recorded in its block and run as one unit at the
end.  Its statements and checks run in order, all commit or none does (a failed statement or
check rolls back everything and its own error reaches the caller), and on SQLite the whole unit,
writer lock included, runs without waiting for a turn of the event loop."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest
from blockbuster import BlockBuster

from blobstore import layout
from blobstore.engine.base import Engine
from blobstore.engine.sqlite import Database
from blobstore.errors import StorageFailure
from tests.engines import SCRATCH_INSERT, SCRATCH_SCHEMA, scratch_rows, with_scratch_table


class CheckFailed(Exception):
    pass


@pytest.fixture
async def db(engine: str | None, tmp_path: Path) -> AsyncIterator[Engine]:
    async with with_scratch_table(engine, tmp_path) as opened:
        yield opened


async def test_a_unit_runs_its_statements_and_checks_in_order(db: Engine) -> None:
    seen: list[str] = []
    async with db.write_unit() as tx:
        await tx.executemany_later(SCRATCH_INSERT, [(1, "a"), (2, "b")])
        await tx.check_later(lambda: seen.append("check"))
        await tx.executemany_later("UPDATE t SET y = ? WHERE x = ?", [("B", 2)])
        await tx.executemany_later(SCRATCH_INSERT, [])  # nothing to do
    assert seen == ["check"]
    assert await scratch_rows(db) == [(1, "a"), (2, "B")]


async def test_a_failing_statement_rolls_the_whole_unit_back(db: Engine) -> None:
    seen: list[str] = []
    with pytest.raises((sqlite3.IntegrityError, asyncpg.UniqueViolationError)):
        async with db.write_unit() as tx:
            await tx.executemany_later(SCRATCH_INSERT, [(1, "a")])
            await tx.executemany_later(SCRATCH_INSERT, [(1, "again")])
            await tx.check_later(lambda: seen.append("after the failure"))
            await tx.executemany_later(SCRATCH_INSERT, [(2, "b")])
    assert await scratch_rows(db) == []
    if db.dialect.name == "sqlite":
        assert seen == []  # nothing after the failed statement ran
    async with db.write_unit() as tx:  # the writer is usable again
        await tx.executemany_later(SCRATCH_INSERT, [(5, "e")])
    assert await scratch_rows(db) == [(5, "e")]


async def test_a_failing_check_rolls_the_whole_unit_back_with_its_own_error(db: Engine) -> None:
    def refuse() -> None:
        raise CheckFailed("blob gone")

    with pytest.raises(CheckFailed, match="blob gone"):
        async with db.write_unit() as tx:
            await tx.executemany_later(SCRATCH_INSERT, [(1, "a")])
            await tx.check_later(refuse)
            await tx.executemany_later(SCRATCH_INSERT, [(2, "b")])
    assert await scratch_rows(db) == []


async def test_a_block_that_raises_writes_nothing(db: Engine) -> None:
    with pytest.raises(RuntimeError):
        async with db.write_unit() as tx:
            await tx.executemany_later(SCRATCH_INSERT, [(1, "a")])
            raise RuntimeError("the caller gave up")
    assert await scratch_rows(db) == []


@pytest.mark.sqlite_only
async def test_a_sqlite_unit_reads_nothing(db: Engine) -> None:
    """Its statements run only at the end: a read in the block could not see them."""
    async with db.write_unit() as tx:
        with pytest.raises(TypeError):
            await tx.fetch("SELECT x FROM t")
        with pytest.raises(TypeError):
            await tx.execute("DELETE FROM t")
    assert tx.runs_later


@pytest.mark.sqlite_only
async def test_a_sqlite_unit_commits_while_the_event_loop_is_blocked(
    db: Engine, tmp_path: Path, blockbuster: BlockBuster
) -> None:
    """Once the unit has begun (its check runs under the writer lock), it reaches COMMIT with
    the event loop blocked: the lock is never held across a turn of the loop, which a busy
    server is slow to give (two workers' group commits waited on each other for that)."""
    begun = threading.Event()
    task = asyncio.create_task(_unit_with_check(db, begun.set))
    while not begun.is_set():
        await asyncio.sleep(0.001)
    # Block the loop (no await from here on, on purpose) and watch from another connection.
    blockbuster.deactivate()
    reader = sqlite3.connect(layout.db_path(tmp_path))
    try:
        deadline = time.monotonic() + 10
        count = 0
        while time.monotonic() < deadline:
            count = reader.execute("SELECT count(*) FROM t").fetchone()[0]
            if count:
                break
            time.sleep(0.001)
    finally:
        reader.close()
        blockbuster.activate()
    assert count == 2
    await task


async def _unit_with_check(db: Engine, check: Callable[[], None]) -> None:
    async with db.write_unit() as tx:
        await tx.executemany_later(SCRATCH_INSERT, [(1, "a")])
        await tx.check_later(check)
        await tx.executemany_later(SCRATCH_INSERT, [(2, "b")])


@pytest.mark.sqlite_only
async def test_a_durable_unit_syncs_the_wal_after_commit_before_it_returns(
    db: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``synchronous`` FULL (the default) the unit's connection commits without the WAL's
    fsync and syncs the WAL itself once the writer lock is free: the commit is durable before
    the unit returns, and the other writers did not wait for the flush."""
    path = layout.db_path(tmp_path)
    real = os.fdatasync
    seen: list[tuple[str, int, bool]] = []

    def watched(fd: int) -> None:
        other = sqlite3.connect(path, isolation_level=None, timeout=0)
        try:
            rows = other.execute("SELECT count(*) FROM t").fetchone()[0]
            try:
                other.execute("BEGIN IMMEDIATE")  # the writer lock is free during the sync
                other.execute("ROLLBACK")
                free = True
            except sqlite3.OperationalError:
                free = False
        finally:
            other.close()
        seen.append((os.readlink(f"/proc/self/fd/{fd}"), rows, free))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", watched)
    async with db.write_unit() as tx:
        await tx.executemany_later(SCRATCH_INSERT, [(1, "a"), (2, "b")])
    assert seen == [(f"{path}-wal", 2, True)]


@pytest.mark.sqlite_only
async def test_a_unit_whose_wal_sync_fails_is_not_reported_durable(
    db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fdatasync", broken)
    with pytest.raises(StorageFailure, match="could not be synced"):
        async with db.write_unit() as tx:
            await tx.executemany_later(SCRATCH_INSERT, [(1, "a")])


async def test_a_unit_without_durable_commits_syncs_nothing_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``FILESVC_SQLITE_SYNCHRONOUS=NORMAL`` (a benchmark setting) keeps SQLite's own rule."""
    calls: list[int] = []
    monkeypatch.setattr(os, "fdatasync", calls.append)
    db = Database(tmp_path / "normal.db", synchronous="NORMAL")
    await db.open([SCRATCH_SCHEMA])
    try:
        async with db.write_unit() as tx:
            await tx.executemany_later(SCRATCH_INSERT, [(1, "a")])
    finally:
        await db.close()
    assert calls == []


@pytest.mark.sqlite_only
async def test_the_next_unit_commits_while_the_last_ones_wal_sync_runs(
    db: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The WAL's flush runs off the writer: a second unit commits meanwhile (its ``committed``
    is set), but neither block returns before a flush that started after its own COMMIT has
    finished."""
    path = layout.db_path(tmp_path)
    real = os.fdatasync
    entered = threading.Event()
    release = threading.Event()
    synced_rows: list[int] = []

    def held(fd: int) -> None:
        other = sqlite3.connect(path, isolation_level=None)
        try:
            synced_rows.append(other.execute("SELECT count(*) FROM t").fetchone()[0])
        finally:
            other.close()
        entered.set()
        release.wait(10)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", held)

    async def unit(row: tuple[int, str], committed: asyncio.Event) -> None:
        async with db.write_unit(committed=committed.set) as tx:
            await tx.executemany_later(SCRATCH_INSERT, [row])

    first_committed, second_committed = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(unit((1, "a"), first_committed))
    while not entered.is_set():
        await asyncio.sleep(0.001)
    assert first_committed.is_set()
    second = asyncio.create_task(unit((2, "b"), second_committed))
    await asyncio.wait_for(second_committed.wait(), 10)
    assert await scratch_rows(db) == [(1, "a"), (2, "b")]
    assert not first.done() and not second.done()  # nobody is told before the flush ends
    release.set()
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    # The first flush started after the first COMMIT only; the second unit waited for one
    # that started after its own.
    assert synced_rows == [1, 2]


async def test_committed_is_set_when_a_unit_fails_too(db: Engine) -> None:
    committed = asyncio.Event()
    with pytest.raises(CheckFailed):
        async with db.write_unit(committed=committed.set) as tx:
            await tx.executemany_later(SCRATCH_INSERT, [(1, "a")])

            def fail() -> None:
                raise CheckFailed()

            await tx.check_later(fail)
    assert committed.is_set()
    assert await scratch_rows(db) == []


async def test_committed_and_durable_are_each_called_once_before_the_block_exits(
    db: Engine,
) -> None:
    calls: list[str] = []
    async with db.write_unit(
        committed=lambda: calls.append("committed"), durable=lambda: calls.append("durable")
    ) as tx:
        await tx.executemany_later(SCRATCH_INSERT, [(1, "a")])
    assert calls == ["committed", "durable"]
    assert await scratch_rows(db) == [(1, "a")]


async def test_durable_is_not_called_for_a_unit_that_fails(db: Engine) -> None:
    calls: list[str] = []
    with pytest.raises(CheckFailed):
        async with db.write_unit(
            committed=lambda: calls.append("committed"), durable=lambda: calls.append("durable")
        ) as tx:
            await tx.executemany_later(SCRATCH_INSERT, [(1, "a")])

            def fail() -> None:
                raise CheckFailed()

            await tx.check_later(fail)
    assert calls == ["committed"]


@pytest.mark.sqlite_only
async def test_a_unit_whose_caller_is_cancelled_runs_to_its_end_before_the_caller_leaves(
    db: Engine,
) -> None:
    """The thread cannot be stopped: the cancelled caller leaves only once the unit has ended
    (its write lock covers it till then), the unit commits, and the next unit runs."""
    begun, let_go = threading.Event(), threading.Event()

    def held() -> None:
        begun.set()
        assert let_go.wait(10)

    task = asyncio.create_task(_unit_with_check(db, held))
    while not begun.is_set():
        await asyncio.sleep(0.001)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done()  # still waiting for the unit's thread
    let_go.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert await scratch_rows(db) == [(1, "a"), (2, "b")]
    async with db.write_unit() as tx:
        await tx.executemany_later(SCRATCH_INSERT, [(3, "c")])
    assert len(await scratch_rows(db)) == 3


@pytest.mark.sqlite_only
async def test_durable_is_called_from_the_wal_flush_and_not_when_it_fails(
    db: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite the flush's own answer calls ``durable`` (a turn before the block's task
    resumes), only after the WAL's ``fdatasync`` has returned; a failed flush never calls it."""
    path = layout.db_path(tmp_path)
    real = os.fdatasync
    synced: list[str] = []

    def watched(fd: int) -> None:
        real(fd)
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(os, "fdatasync", watched)
    seen: list[list[str]] = []
    async with db.write_unit(durable=lambda: seen.append(list(synced))) as tx:
        await tx.executemany_later(SCRATCH_INSERT, [(1, "a")])
    assert seen == [[f"{path}-wal"]]

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fdatasync", broken)
    with pytest.raises(StorageFailure, match="could not be synced"):
        async with db.write_unit(durable=lambda: seen.append(["called"])) as tx:
            await tx.executemany_later(SCRATCH_INSERT, [(2, "b")])
    assert seen == [[f"{path}-wal"]]


@pytest.mark.sqlite_only
async def test_units_of_other_processes_queue_on_the_units_lock_file(
    db: Engine, tmp_path: Path
) -> None:
    """Units queue for the writer on an flock of ``<db>-units.lock`` (woken as soon as it is
    free, where SQLite's busy handler sleeps): while another process's unit holds it, this one
    has not begun; once it is let go, this one commits."""
    path = layout.db_path(tmp_path)
    other = os.open(path.with_name(path.name + "-units.lock"), os.O_RDWR)
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        committed = asyncio.Event()

        async def unit() -> None:
            async with db.write_unit(committed=committed.set) as tx:
                await tx.executemany_later(SCRATCH_INSERT, [(1, "a")])

        task = asyncio.create_task(unit())
        await asyncio.sleep(0.3)
        assert not committed.is_set()
        writer = sqlite3.connect(path, isolation_level=None, timeout=0)
        try:
            writer.execute("BEGIN IMMEDIATE")  # SQLite's writer lock is still free
            writer.execute("ROLLBACK")
        finally:
            writer.close()
        fcntl.flock(other, fcntl.LOCK_UN)
        await asyncio.wait_for(task, 10)
    finally:
        os.close(other)
    assert await scratch_rows(db) == [(1, "a")]

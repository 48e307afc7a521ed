"""The group commit of new files and its callers: each upload waits on a future of its own, so
one that goes away takes nothing from the others, and no batch's end leaves files waiting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from blobstore.engine.migrate import migrate
from blobstore.engine.sqlite import Database
from blobstore.memory import MemoryBackend
from filesvc.creates import CreateBatcher
from filesvc.schema import TRACKS
from tests.new_files import new_file


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    opened = Database(tmp_path / "m.sqlite3", readers=1)
    await opened.open()
    await migrate(opened, TRACKS)
    try:
        yield opened
    finally:
        await opened.close()


async def _ids(db: Database) -> set[str]:
    async with db.read() as conn:
        return {row[0] for row in await conn.fetch("SELECT file_id FROM files")}


async def test_a_caller_that_goes_away_leaves_its_file_and_its_batch_committed(
    db: Database,
) -> None:
    batcher = CreateBatcher(db, MemoryBackend())
    batcher.start()
    try:
        files = [new_file() for _ in range(4)]
        adds = [asyncio.create_task(batcher.add(f)) for f in files]
        await asyncio.sleep(0)  # all four queued
        adds[1].cancel()
        done, _ = await asyncio.wait(adds, timeout=10)
        assert len(done) == 4
        assert adds[1].cancelled()
        for i in (0, 2, 3):
            assert adds[i].result() is None
        assert await _ids(db) == {f.file_id for f in files}
    finally:
        await batcher.stop()


async def test_a_file_whose_batch_was_cancelled_before_it_ran_is_still_committed(
    db: Database,
) -> None:
    """A batch's task cancelled before its first step never took its files nor released the
    writer; its end starts another batch for them, with no new upload to set it off."""
    batcher = CreateBatcher(db, MemoryBackend())
    batcher.start()
    try:
        file = new_file()
        add = asyncio.create_task(batcher.add(file))
        await asyncio.sleep(0)  # queued; its batch's task is created, not yet run
        batches = [
            t
            for t in asyncio.all_tasks()
            if getattr(t.get_coro(), "__qualname__", "") == "CreateBatcher._commit_batch"
        ]
        assert len(batches) == 1
        batches[0].cancel()
        await asyncio.wait_for(add, 10)
        assert await _ids(db) == {file.file_id}
    finally:
        await batcher.stop()

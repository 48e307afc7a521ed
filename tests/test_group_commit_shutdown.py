"""The group commit of new files at shutdown."""

from __future__ import annotations

import asyncio
from pathlib import Path

from blobstore.engine.migrate import migrate
from blobstore.engine.sqlite import Database
from blobstore.memory import MemoryBackend
from filesvc.creates import CreateBatcher
from filesvc.schema import TRACKS
from tests.new_files import new_file


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_create_arriving_while_stop_runs_is_answered(tmp_path: Path) -> None:
    """A create that arrives while stop() runs must be committed or refused, never left
    waiting forever."""
    db = Database(tmp_path / "m.sqlite3", synchronous="NORMAL", readers=1)
    await db.open()
    await migrate(db, TRACKS)
    batcher = CreateBatcher(db, MemoryBackend())
    batcher.start()
    try:
        await _settle()
        stopping = asyncio.create_task(batcher.stop())
        await asyncio.sleep(0)  # stop() is under way
        late = asyncio.create_task(batcher.add(new_file()))
        await stopping
        await _settle()
        assert late.done()
        late.exception()  # committed, or refused: either is an answer
    finally:
        await db.close()


async def test_stop_commits_what_is_queued(tmp_path: Path) -> None:
    db = Database(tmp_path / "m.sqlite3", synchronous="NORMAL", readers=1)
    await db.open()
    await migrate(db, TRACKS)
    batcher = CreateBatcher(db, MemoryBackend())
    batcher.start()
    try:
        adds = [asyncio.create_task(batcher.add(new_file())) for _ in range(5)]
        await asyncio.sleep(0)
        await batcher.stop()
        await asyncio.gather(*adds)
        async with db.read() as conn:
            rows = list(await conn.fetch("SELECT COUNT(*) FROM files"))
        assert rows[0][0] == 5
    finally:
        await db.close()

"""The group commit of new files overlaps a batch's COMMIT with the previous batch's log flush
(filesvc/creates.py, blobstore/engine/sqlite_unit.py), and still answers no upload before a
flush that started after its own COMMIT has finished."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from blobstore.engine.migrate import migrate
from blobstore.engine.sqlite import Database
from blobstore.local import LocalBackend
from filesvc.creates import CreateBatcher
from filesvc.schema import TRACKS
from tests.new_files import new_file


def _rows_within(path: Path, want: int, seconds: float) -> int:
    """The files table's row count once it reaches ``want``, or after ``seconds``."""
    probe = sqlite3.connect(path)
    try:
        for _ in range(int(seconds / 0.002)):
            count = int(probe.execute("SELECT count(*) FROM files").fetchone()[0])
            if count >= want:
                return count
            time.sleep(0.002)
        return int(probe.execute("SELECT count(*) FROM files").fetchone()[0])
    finally:
        probe.close()


async def test_the_next_batch_commits_during_the_last_ones_log_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.sqlite3"
    db = Database(path, readers=1)  # synchronous FULL: the WAL is flushed after each unit
    await db.open()
    await migrate(db, TRACKS)
    store = await asyncio.to_thread(LocalBackend, tmp_path / "blobs")
    batcher = CreateBatcher(db, store)
    real = os.fdatasync
    entered = threading.Event()
    release = threading.Event()
    seen: list[int] = []

    def held(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}") == f"{path}-wal":
            probe = sqlite3.connect(path)
            try:
                seen.append(probe.execute("SELECT count(*) FROM files").fetchone()[0])
            finally:
                probe.close()
            entered.set()
            assert release.wait(10)
        real(fd)

    batcher.start()
    try:
        monkeypatch.setattr(os, "fdatasync", held)
        first = asyncio.create_task(batcher.add(new_file()))
        while not entered.is_set():
            await asyncio.sleep(0.001)
        second = asyncio.create_task(batcher.add(new_file()))
        # The second batch commits while the first one's flush is still held.
        assert await asyncio.to_thread(_rows_within, path, 2, 10.0) == 2
        assert not first.done() and not second.done()  # neither told before its flush
        release.set()
        await asyncio.wait_for(asyncio.gather(first, second), 10)
        assert seen == [1, 2]  # the second was answered after a flush that saw its COMMIT
    finally:
        release.set()
        await batcher.stop()
        await store.close()
        await db.close()

"""A caller cancelled while its transaction is being opened (a client that goes away)
must not leave the connection inside a transaction for the next user."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from blobstore.engine.sqlite import Database

SCHEMA = ["CREATE TABLE IF NOT EXISTS t (x INTEGER)"]


async def _opened(tmp_path: Path) -> Database:
    db = Database(tmp_path / "m.sqlite3", synchronous="NORMAL", readers=1)
    await db.open(SCHEMA)
    return db


async def test_read_cancelled_at_begin_leaves_the_reader_usable(tmp_path: Path) -> None:
    db = await _opened(tmp_path)
    try:

        async def reader() -> None:
            async with db.read() as conn:
                await conn.execute("SELECT 1")

        task = asyncio.create_task(reader())
        await asyncio.sleep(0)  # the task now waits on its BEGIN, which the thread still runs
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # The one reader connection again: a fresh snapshot, not "transaction within a
        # transaction" (and not a snapshot left open since the cancelled BEGIN).
        async with db.write() as conn:
            await conn.execute("INSERT INTO t VALUES (1)")
        async with db.read() as conn:
            rows = list(await conn.fetch("SELECT x FROM t"))
        assert [r[0] for r in rows] == [1]
    finally:
        await db.close()


async def test_write_cancelled_at_begin_leaves_the_writer_usable(tmp_path: Path) -> None:
    db = await _opened(tmp_path)
    try:

        async def writer() -> None:
            async with db.write() as conn:
                await conn.execute("INSERT INTO t VALUES (7)")

        task = asyncio.create_task(writer())
        await asyncio.sleep(0)  # waiting on BEGIN IMMEDIATE
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        async with db.write() as conn:
            await conn.execute("INSERT INTO t VALUES (1)")
        async with db.read() as conn:
            rows = list(await conn.fetch("SELECT x FROM t"))
        assert [r[0] for r in rows] == [1]
    finally:
        await db.close()


async def test_failed_commit_is_rolled_back(tmp_path: Path) -> None:
    """A COMMIT that fails (here: a deferred foreign key) must not leave the writer inside the
    transaction: every later write would fail at BEGIN."""
    db = await _opened(tmp_path)
    try:
        async with db.write() as conn:
            await conn.execute("CREATE TABLE p (id INTEGER PRIMARY KEY)")
            await conn.execute(
                "CREATE TABLE c (pid INTEGER REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED)"
            )
        failed = False
        try:
            async with db.write() as conn:
                await conn.execute("INSERT INTO c VALUES (42)")
        except Exception:
            failed = True
        assert failed
        async with db.write() as conn:
            await conn.execute("INSERT INTO t VALUES (1)")
        async with db.read() as conn:
            rows = list(await conn.fetch("SELECT x FROM t"))
            orphans = list(await conn.fetch("SELECT pid FROM c"))
        assert [r[0] for r in rows] == [1]
        assert orphans == []
    finally:
        await db.close()

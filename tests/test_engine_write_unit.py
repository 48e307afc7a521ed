"""``Engine.write_unit``: a write transaction recorded in its block and run as one unit at the
end.  Its statements and checks run in order, all commit or none does (a failed statement or
check rolls back everything and its own error reaches the caller), and on SQLite the whole unit,
writer lock included, runs without waiting for a turn of the event loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest
from blockbuster import BlockBuster

from blobstore import layout
from blobstore.engine import make_engine, parse_db_url
from blobstore.engine.base import Engine
from blobstore.engine.postgres import PostgresEngine
from blobstore.engine.sqlite import Database

SCHEMA = "CREATE TABLE IF NOT EXISTS t (x INTEGER PRIMARY KEY, y TEXT)"
INSERT = "INSERT INTO t (x, y) VALUES (?, ?)"


class CheckFailed(Exception):
    pass


@pytest.fixture
async def db(engine: str | None, tmp_path: Path) -> AsyncIterator[Engine]:
    opened = make_engine(parse_db_url(engine, tmp_path))
    if isinstance(opened, Database):
        await opened.open()
    else:
        assert isinstance(opened, PostgresEngine)
        await opened.connect()
    async with opened.write() as tx:
        await tx.execute(SCHEMA)
        await tx.execute("DELETE FROM t")
    try:
        yield opened
    finally:
        await opened.close()


async def _rows(db: Engine) -> list[tuple[int, str]]:
    return [(r["x"], r["y"]) for r in await db.query("SELECT x, y FROM t ORDER BY x")]


async def test_a_unit_runs_its_statements_and_checks_in_order(db: Engine) -> None:
    seen: list[str] = []
    async with db.write_unit() as tx:
        await tx.executemany_later(INSERT, [(1, "a"), (2, "b")])
        await tx.check_later(lambda: seen.append("check"))
        await tx.executemany_later("UPDATE t SET y = ? WHERE x = ?", [("B", 2)])
        await tx.executemany_later(INSERT, [])  # nothing to do
    assert seen == ["check"]
    assert await _rows(db) == [(1, "a"), (2, "B")]


async def test_a_failing_statement_rolls_the_whole_unit_back(db: Engine) -> None:
    seen: list[str] = []
    with pytest.raises((sqlite3.IntegrityError, asyncpg.UniqueViolationError)):
        async with db.write_unit() as tx:
            await tx.executemany_later(INSERT, [(1, "a")])
            await tx.executemany_later(INSERT, [(1, "again")])
            await tx.check_later(lambda: seen.append("after the failure"))
            await tx.executemany_later(INSERT, [(2, "b")])
    assert await _rows(db) == []
    if db.dialect.name == "sqlite":
        assert seen == []  # nothing after the failed statement ran
    async with db.write_unit() as tx:  # the writer is usable again
        await tx.executemany_later(INSERT, [(5, "e")])
    assert await _rows(db) == [(5, "e")]


async def test_a_failing_check_rolls_the_whole_unit_back_with_its_own_error(db: Engine) -> None:
    def refuse() -> None:
        raise CheckFailed("blob gone")

    with pytest.raises(CheckFailed, match="blob gone"):
        async with db.write_unit() as tx:
            await tx.executemany_later(INSERT, [(1, "a")])
            await tx.check_later(refuse)
            await tx.executemany_later(INSERT, [(2, "b")])
    assert await _rows(db) == []


async def test_a_block_that_raises_writes_nothing(db: Engine) -> None:
    with pytest.raises(RuntimeError):
        async with db.write_unit() as tx:
            await tx.executemany_later(INSERT, [(1, "a")])
            raise RuntimeError("the caller gave up")
    assert await _rows(db) == []


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
        await tx.executemany_later(INSERT, [(1, "a")])
        await tx.check_later(check)
        await tx.executemany_later(INSERT, [(2, "b")])

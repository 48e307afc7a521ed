"""``Tx.executemany_later``: a group commit's inserts.  They run in order before the
transaction's next statement or commit (at once on SQLite, where a statement queued behind a
failed one would be refused as misuse), their error rolls the whole transaction back, and a
transaction abandoned before they ran leaves nothing."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from blobstore.engine.base import Engine
from tests.engines import scratch_rows, with_scratch_table


@pytest.fixture
async def db(engine: str | None, tmp_path: Path) -> AsyncIterator[Engine]:
    async with with_scratch_table(engine, tmp_path) as opened:
        yield opened


async def test_deferred_statements_run_in_order_before_the_next_one(db: Engine) -> None:
    async with db.write() as tx:
        await tx.executemany_later("INSERT INTO t (x, y) VALUES (?, ?)", [(1, "a"), (2, "b")])
        await tx.executemany_later("UPDATE t SET y = ? WHERE x = ?", [("B", 2)])
        await tx.executemany_later("INSERT INTO t (x, y) VALUES (?, ?)", [])  # nothing to do
        # A read in the same transaction sees them all, in order.
        assert [r["y"] for r in await tx.fetch("SELECT y FROM t ORDER BY x")] == ["a", "B"]
        await tx.executemany_later("INSERT INTO t (x, y) VALUES (?, ?)", [(3, "c")])
    assert await scratch_rows(db) == [(1, "a"), (2, "B"), (3, "c")]


async def test_a_failing_deferred_statement_rolls_the_transaction_back(db: Engine) -> None:
    with pytest.raises((sqlite3.IntegrityError, asyncpg.UniqueViolationError)):
        async with db.write() as tx:
            await tx.executemany_later("INSERT INTO t (x, y) VALUES (?, ?)", [(1, "a")])
            await tx.executemany_later("INSERT INTO t (x, y) VALUES (?, ?)", [(1, "again")])
            await tx.executemany_later("INSERT INTO t (x, y) VALUES (?, ?)", [(2, "b")])
    assert await scratch_rows(db) == []
    async with db.write() as tx:  # the writer is usable again
        await tx.executemany_later("INSERT INTO t (x, y) VALUES (?, ?)", [(5, "e")])
    assert await scratch_rows(db) == [(5, "e")]


async def test_an_error_before_the_hand_over_leaves_nothing(db: Engine) -> None:
    """The caller fails right after queueing (before the statement reached the database's
    thread): the statement must not run after the rollback, outside any transaction."""
    with pytest.raises(RuntimeError):
        async with db.write() as tx:
            await tx.executemany_later("INSERT INTO t (x, y) VALUES (?, ?)", [(1, "a")])
            raise RuntimeError("the caller gave up")
    await asyncio.sleep(0.05)  # time enough for a stray statement to have run
    assert await scratch_rows(db) == []

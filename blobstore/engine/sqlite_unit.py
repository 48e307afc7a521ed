"""SQLite write transactions run as one unit on one thread (:meth:`Engine.write_unit`).

An aiosqlite transaction is a hand-off to the connection's thread per statement, and between two
hand-offs the caller waits for a turn of its event loop, which a busy server takes milliseconds to
give.  The writer lock (``BEGIN IMMEDIATE``) is held all that time, and every other process's
writer waits for it: with two workers, a group commit of 15 small files held it 17-18 ms, for
well under a millisecond of SQLite's own work and one WAL fsync (bench/README.md, scale).  A unit
is recorded first and then run in one call on the unit connection's thread, so the lock is held
only while SQLite (and the blob check that must run under it) works.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from blobstore.engine.base import SQLITE, Dialect, Row
from blobstore.errors import StorageFailure

# One operation of a unit: a statement with its rows of arguments, or a blocking check.
Operation = tuple[str, list[Sequence[object]]] | Callable[[], None]


class UnitTx:
    """Records a unit's operations; :func:`run_unit` runs them.  Statements whose results the
    caller would need cannot be part of a unit, so they are refused."""

    dialect: Dialect = SQLITE
    runs_later = True

    def __init__(self) -> None:
        self.operations: list[Operation] = []

    async def executemany_later(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        batch = list(rows)
        if batch:
            self.operations.append((sql, batch))

    async def check_later(self, check: Callable[[], None]) -> None:
        self.operations.append(check)

    async def lock(self, name: str, *, shared: bool = False) -> None:
        return None  # the unit holds SQLite's one writer lock

    async def execute(self, sql: str, *args: object) -> int:
        raise TypeError("a write unit only records: use executemany_later")

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        raise TypeError("a write unit only records: use executemany_later")

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        raise TypeError("a write unit cannot read: its statements run when the block ends")

    async def fetchrow(self, sql: str, *args: object) -> Row | None:
        raise TypeError("a write unit cannot read: its statements run when the block ends")

    def stream(self, sql: str, *args: object) -> AsyncIterator[Row]:
        raise TypeError("a write unit cannot read: its statements run when the block ends")


class UnitRunner:
    """A writer connection of its own (plain sqlite3) on one thread, for units.  The engine's
    asyncio write lock keeps it and the aiosqlite writer from both holding a transaction in one
    process; SQLite's file lock orders it with other processes."""

    def __init__(
        self, conn: sqlite3.Connection, pool: ThreadPoolExecutor, wal: Path | None
    ) -> None:
        self._conn = conn
        self._pool = pool
        self._wal = wal

    @classmethod
    async def open(cls, path: Path, pragmas: Sequence[str], *, synchronous: str) -> UnitRunner:
        """``synchronous`` is the engine's setting; FULL and EXTRA become NORMAL with the WAL
        synced after each unit's COMMIT (module docstring)."""
        sync_after = synchronous.upper() in ("FULL", "EXTRA")
        mode = "NORMAL" if sync_after else synchronous
        pool = ThreadPoolExecutor(1, thread_name_prefix="sqlite-unit")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(
                pool, _connect, path, [*pragmas, f"PRAGMA synchronous = {mode}"]
            )
        except BaseException:
            pool.shutdown(wait=False)
            raise
        return cls(conn, pool, path.with_name(path.name + "-wal") if sync_after else None)

    async def run(self, operations: list[Operation]) -> None:
        """Run the unit to its end, even when the caller is cancelled meanwhile (the thread
        cannot be stopped, and the caller's write lock must cover it until it ends)."""
        if not operations:
            return
        fut = asyncio.get_running_loop().run_in_executor(
            self._pool, _run_unit, self._conn, operations, self._wal
        )
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            if not fut.done():
                await asyncio.wait([fut])
            raise

    async def pragma(self, statement: str) -> None:
        """Set a connection setting on the unit's connection (as on the engine's writer:
        a limit the tests put on both writers to fill the database)."""
        await asyncio.get_running_loop().run_in_executor(self._pool, self._conn.execute, statement)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._conn.close)
        # Its one thread is idle now (units ran in order before the close): it ends at once.
        self._pool.shutdown(wait=False)


def _connect(path: Path, pragmas: list[str]) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        for pragma in pragmas:
            conn.execute(pragma)
    except BaseException:
        conn.close()
        raise
    return conn


def _run_unit(conn: sqlite3.Connection, operations: list[Operation], wal: Path | None) -> None:
    """On the unit's thread: BEGIN IMMEDIATE, every operation in order, COMMIT; on any error
    the whole transaction is rolled back and the error raised.  Then, with ``wal``, the WAL
    synced (the writer lock is free again meanwhile)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for op in operations:
            if isinstance(op, tuple):
                conn.executemany(op[0], op[1])
            else:
                op()
        conn.execute("COMMIT")
    except BaseException:
        # A failed COMMIT (SQLITE_FULL, IOERR) may leave the transaction open.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if wal is not None:
        _sync_wal(wal)


def _sync_wal(wal: Path) -> None:
    try:
        fd = os.open(wal, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        # Removed by the last connection's close, after a checkpoint that synced the database.
        return
    try:
        os.fdatasync(fd)
    except OSError as exc:
        raise StorageFailure(f"the metadata database's log could not be synced ({exc})") from None
    finally:
        os.close(fd)

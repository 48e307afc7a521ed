"""SQLite write transactions run as one unit on one thread (:meth:`Engine.write_unit`).

An aiosqlite transaction is a hand-off to the connection's thread per statement, and between two
hand-offs the caller waits for a turn of its event loop, which a busy server takes milliseconds to
give.  The writer lock (``BEGIN IMMEDIATE``) is held all that time, and every other process's
writer waits for it: with two workers, a group commit of 15 small files held it 17-18 ms, for
well under a millisecond of SQLite's own work and one WAL fsync (bench/README.md, scale).  A unit
is recorded first and then run in one call on the unit connection's thread, so the lock is held
only while SQLite (and the blob check that must run under it) works.

With ``synchronous`` FULL (the default) a unit commits in NORMAL mode and its WAL is then synced
by :class:`WalSync`, outside the writer lock and off the unit's thread: the next unit commits
while the last one's log is being flushed, and units that commit during one flush share the
next (each caller still returns only once a sync that started after its COMMIT has finished).
Under load the flush took a median of ~3 ms and a 90th percentile of ~100 ms, during which no
unit could commit before (bench/README.md, small uploads).

Units of different processes (``--workers N``) queue for the writer lock on an ``flock`` of a
file beside the database (``<db>-units.lock``) before ``BEGIN IMMEDIATE``: the kernel wakes the
next one the moment the lock is free, where SQLite's busy handler would retry after sleeping 1,
2, 5, 10 ... 100 ms.  SQLite's own lock still decides; the flock only orders the units.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
    process; SQLite's file lock orders it with other processes.

    Each hand-off between a thread and the event loop costs turns of a loop that a busy server
    is slow to give: the unit's thread answers the loop with one callback, and asks the WAL's
    flush itself, thread to thread, so a unit's callers wait for two answers, not a chain of
    futures (bench/README.md, 4 KiB uploads: turns of the loop)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        pool: ThreadPoolExecutor,
        wal: WalSync | None,
        queue: int | None = None,
    ) -> None:
        self._conn = conn
        self._pool = pool
        self._wal = wal
        self._queue = queue  # the flock's file, or None (no such file could be made)

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
        queue = await loop.run_in_executor(pool, _open_queue, path)
        wal = WalSync(path.with_name(path.name + "-wal"), loop) if sync_after else None
        return cls(conn, pool, wal, queue)

    async def run(
        self,
        operations: list[Operation],
        committed: Callable[[], None] | None = None,
        durable: Callable[[], None] | None = None,
    ) -> asyncio.Future[None] | None:
        """Run the unit to its COMMIT, even when the caller is cancelled meanwhile (the thread
        cannot be stopped, and the caller's write lock must cover it until it ends).  Returns
        None when nothing needs a flush (nothing was written, or SQLite syncs its own commits),
        else a future answered once the unit is durable: it must be awaited before anyone is
        told.  ``committed`` is called on the loop with the unit's answer (committed or failed),
        before this returns, and ``durable`` with the flush's answer when it succeeded; neither
        when there is nothing to run, nor ``durable`` when SQLite syncs its own commits."""
        if not operations:
            return None
        loop = asyncio.get_running_loop()
        # ``done`` is awaited, so a cancelled caller cancels it; ``ended`` is only waited for.
        done: asyncio.Future[asyncio.Future[None] | None] = loop.create_future()
        ended: asyncio.Future[None] = loop.create_future()
        flushed: asyncio.Future[None] | None = None if self._wal is None else loop.create_future()
        self._pool.submit(
            self._unit, loop, operations, _InFlight(done, ended, flushed, committed, durable)
        )
        try:
            return await done
        except asyncio.CancelledError:
            if flushed is not None:
                flushed.cancel()  # nobody will await it: its flush answers ``durable`` only
            if not ended.done():
                await asyncio.wait([ended])
            raise

    def _unit(
        self, loop: asyncio.AbstractEventLoop, operations: list[Operation], unit: _InFlight
    ) -> None:
        """On the unit's thread: the unit, the flush asked for, one answer to the loop."""
        try:
            _run_queued(self._conn, operations, self._queue)
        except BaseException as exc:
            loop.call_soon_threadsafe(unit.ran, exc)
            return
        if self._wal is not None:
            self._wal.ask(unit)
        loop.call_soon_threadsafe(unit.ran, None)

    async def pragma(self, statement: str) -> None:
        """Set a connection setting on the unit's connection (as on the engine's writer:
        a limit the tests put on both writers to fill the database)."""
        await asyncio.get_running_loop().run_in_executor(self._pool, self._conn.execute, statement)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._conn.close)
        if self._queue is not None:
            os.close(self._queue)
            self._queue = None
        # Its one thread is idle now (units ran in order before the close): it ends at once.
        self._pool.shutdown(wait=False)
        if self._wal is not None:
            await self._wal.close()


@dataclass(eq=False)
class _InFlight:
    """A unit on its way, as its thread and its flush answer it on the loop."""

    # The caller's: the flush future, or the unit's error (cancelled by a caller that gave up).
    done: asyncio.Future[asyncio.Future[None] | None]
    ended: asyncio.Future[None]  # the thread is done with the unit
    flushed: asyncio.Future[None] | None  # None when SQLite syncs its own commits
    committed: Callable[[], None] | None
    durable: Callable[[], None] | None

    def ran(self, error: BaseException | None) -> None:
        """On the loop: the unit's outcome."""
        self.ended.set_result(None)
        if not self.done.done():
            if error is None:
                self.done.set_result(self.flushed)
            else:
                self.done.set_exception(error)
        if self.committed is not None:
            self.committed()


def once(fn: Callable[[], None] | None) -> Callable[[], None]:
    """``fn`` to be called at most once, however often the result is (None: nothing)."""
    called = False

    def call() -> None:
        nonlocal called
        if not called and fn is not None:
            called = True
            fn()

    return call


def _connect(path: Path, pragmas: list[str]) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        for pragma in pragmas:
            conn.execute(pragma)
    except BaseException:
        conn.close()
        raise
    return conn


def _open_queue(path: Path) -> int | None:
    try:
        return os.open(
            path.with_name(path.name + "-units.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
    except OSError:
        return None  # units then wait in SQLite's busy handler alone


def _run_queued(conn: sqlite3.Connection, operations: list[Operation], queue: int | None) -> None:
    if queue is None:
        _run_unit(conn, operations)
        return
    fcntl.flock(queue, fcntl.LOCK_EX)
    try:
        _run_unit(conn, operations)
    finally:
        fcntl.flock(queue, fcntl.LOCK_UN)


def _run_unit(conn: sqlite3.Connection, operations: list[Operation]) -> None:
    """On the unit's thread: BEGIN IMMEDIATE, every operation in order, COMMIT; on any error
    the whole transaction is rolled back and the error raised."""
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


class WalSync:
    """Group flush of the WAL on a thread of its own.  The unit's thread asks for a flush right
    after each COMMIT (:meth:`ask`); a flush covers every ask made before it started, and
    answers their futures on the event loop with its outcome.  Units keep committing while a
    flush runs, and a flush starts as soon as the last one ended if anything was asked
    meanwhile.  Nothing of the loop is touched on the threads but the one callback per flush."""

    def __init__(self, wal: Path, loop: asyncio.AbstractEventLoop) -> None:
        self._wal = wal
        self._loop = loop
        self._cond = threading.Condition()
        self._asked: list[_InFlight] = []  # carried only: answered on the loop
        self._closing = False
        self._thread = threading.Thread(target=self._flusher, name="sqlite-wal-sync", daemon=True)
        self._thread.start()

    def ask(self, unit: _InFlight) -> None:
        """On a thread, after a COMMIT: the unit's ``flushed`` is answered by the next flush to
        start, and its ``durable`` called then if it succeeded."""
        with self._cond:
            self._asked.append(unit)
            self._cond.notify()

    def _flusher(self) -> None:
        while True:
            with self._cond:
                while not self._asked and not self._closing:
                    self._cond.wait()
                if not self._asked:
                    return
                covered, self._asked = self._asked, []
            error: BaseException | None = None
            try:
                _sync_wal(self._wal)
            except StorageFailure as exc:
                error = exc
            except BaseException:  # whatever it was, nothing is known to be durable
                error = StorageFailure("the metadata log sync stopped")
            try:
                self._loop.call_soon_threadsafe(_answer_flush, covered, error)
            except RuntimeError:
                return  # the loop is closed: nobody is left to answer

    async def close(self) -> None:
        """Let the flushes asked for finish (their callers are answered), then stop the
        thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        await asyncio.to_thread(self._thread.join)


def _answer_flush(covered: list[_InFlight], error: BaseException | None) -> None:
    """On the loop: a flush's outcome to every unit it covered (a caller that gave up has
    cancelled its future)."""
    for unit in covered:
        flushed = unit.flushed
        if flushed is not None and not flushed.done():
            if error is None:
                flushed.set_result(None)
            else:
                flushed.set_exception(error)
    if error is None:
        # Only once every future is answered: a callback that raised would end this loop.
        for unit in covered:
            if unit.durable is not None:
                unit.durable()


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

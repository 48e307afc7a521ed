"""SQLite, the embedded metadata engine (aiosqlite), shared by the blob store and the service.

One writer connection behind an asyncio lock (SQLite has one writer anyway, and statements of two
coroutines must never interleave inside one transaction; ``BEGIN IMMEDIATE`` takes the file's
writer lock, so writers in other processes wait too) and a pool of reader connections; WAL lets
readers see the last commit while a write is in progress.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import cast

import aiosqlite

from blobstore.engine.base import SQLITE, Dialect, Row
from blobstore.engine.sqlite_unit import UnitRunner, UnitTx, once
from blobstore.errors import StoreFull

# FULL: a commit is on disk before the caller is answered, so an acknowledged upload survives
# power loss as well as kill -9 (its blobs are fsynced too).  NORMAL is offered for benchmarks.
DEFAULT_SYNCHRONOUS = "FULL"
# Wait this long for a lock held by another process (the CLI, a second server) before failing.
BUSY_TIMEOUT_MS = 10_000
# Reader connections, each with its own thread: reads run in parallel with each other and with
# the writer (WAL).  A few suffice on 2 cores; each costs a thread and a file descriptor.
READERS = 4
# Rows fetched per thread hand-off when a query is streamed.
STREAM_BATCH = 1000
# Virtual-machine steps a statement of ``query`` may take on the event loop before it is
# interrupted and run on a reader thread instead: a file's view (a few rows from the page cache)
# takes a few hundred, about the cost of the thread hand-off it saves; a file with thousands of
# chunks goes to the thread.  Checked every INLINE_CHECK steps.
INLINE_STEPS = 20_000
INLINE_CHECK = 1_000
_SYNC_MODES = {"OFF", "NORMAL", "FULL", "EXTRA"}


class SqliteTx:
    """A transaction on one aiosqlite connection.

    :meth:`executemany_later` runs its statement at once here: statements queued behind one that
    failed (a full disk in the middle of a group commit) reached SQLite's thread anyway and were
    refused as API misuse, which no caller can translate; the error of the statement that failed
    must be the one raised."""

    dialect: Dialect = SQLITE
    runs_later = False

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, *args: object) -> int:
        cur = await self.conn.execute(sql, args)
        return cur.rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        batch = list(rows)
        if batch:
            await self.conn.executemany(sql, batch)

    async def executemany_later(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        await self.executemany(sql, rows)

    async def check_later(self, check: Callable[[], None]) -> None:
        await asyncio.to_thread(check)

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        # execute_fetchall: one hand-off to the database thread instead of three.
        return cast(list[Row], list(await self.conn.execute_fetchall(sql, args)))

    async def fetchrow(self, sql: str, *args: object) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def stream(self, sql: str, *args: object) -> AsyncIterator[Row]:
        async with self.conn.execute(sql, args) as cur:
            cur.arraysize = STREAM_BATCH
            async for row in cur:
                yield cast(Row, row)

    async def lock(self, name: str, *, shared: bool = False) -> None:
        return None  # the write transaction holds SQLite's one writer lock already


def is_full(exc: BaseException) -> bool:
    """True when SQLite failed for lack of space: ``SQLITE_FULL`` ("database or disk is full",
    also what ``max_page_count`` gives), or an I/O error whose cause was ENOSPC."""
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == sqlite3.SQLITE_FULL:
        return True
    return "disk is full" in str(exc)


@contextmanager
def _full_as_store_full() -> Iterator[None]:
    """Lack of space surfaces as the store's own StoreFull, so callers (and the HTTP layer's
    one error switch) treat a full database like a full blob store."""
    try:
        yield
    except BaseException as exc:
        if is_full(exc):
            raise StoreFull("no space left for the metadata database") from exc
        raise


class Database:
    """The SQLite file with its writer and reader connections."""

    dialect: Dialect = SQLITE

    def __init__(
        self, path: Path, *, synchronous: str = DEFAULT_SYNCHRONOUS, readers: int = READERS
    ) -> None:
        if synchronous.upper() not in _SYNC_MODES:
            raise ValueError(f"synchronous must be one of {sorted(_SYNC_MODES)}")
        self.path = path
        self._synchronous = synchronous.upper()
        self._writer: aiosqlite.Connection | None = None
        self._readers: list[aiosqlite.Connection] = []
        self._idle: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._reader_count = readers
        self._write_lock = asyncio.Lock()
        self._units: UnitRunner | None = None
        # A plain sqlite3 reader used on the event loop by ``query`` (see _query_inline).
        self._inline: sqlite3.Connection | None = None
        self._inline_checks = 0

    @property
    def ready(self) -> bool:
        return bool(self._readers)

    async def _connect(self, *, readonly: bool) -> aiosqlite.Connection:
        if readonly:
            conn = await aiosqlite.connect(
                f"{self.path.as_uri()}?mode=ro", uri=True, isolation_level=None
            )
        else:
            conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = aiosqlite.Row  # isolation_level None: we issue BEGIN/COMMIT
        try:
            await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if not readonly:
                await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            await conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            # "file is not a database" surfaces here; an unclosed connection's thread would
            # keep the process from exiting.
            await conn.close()
            raise
        return conn

    async def open(self, schema: Sequence[str] = ()) -> None:
        """Open the connections and apply ``schema`` (idempotent DDL) in one transaction.
        The service's schema comes from the migrations (:mod:`blobstore.engine.migrate`)."""
        # Absolute, for the read-only URI; getcwd is a system call, so off the loop.
        self.path = await asyncio.to_thread(self.path.absolute)
        await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
        self._writer = await self._connect(readonly=False)
        if schema:
            async with self.write() as tx:
                for ddl in schema:
                    await tx.execute(ddl)
        self._units = await UnitRunner.open(
            self.path,
            [f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}", "PRAGMA foreign_keys = ON"],
            synchronous=self._synchronous,
        )
        await self._open_readers()

    async def _open_readers(self) -> None:
        for _ in range(self._reader_count):
            conn = await self._connect(readonly=True)
            self._readers.append(conn)
            self._idle.put_nowait(conn)
        self._inline = await asyncio.to_thread(self._connect_inline)

    def _connect_inline(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            f"{self.path.as_uri()}?mode=ro",
            uri=True,
            isolation_level=None,
            check_same_thread=False,  # opened on a thread, used on the event loop's
        )
        conn.row_factory = sqlite3.Row
        # Never wait for a lock on the loop: a busy database sends the statement to a thread.
        conn.execute("PRAGMA busy_timeout = 0")
        conn.set_progress_handler(self._over_budget, INLINE_CHECK)
        return conn

    def _over_budget(self) -> int:
        self._inline_checks += 1
        return 1 if self._inline_checks * INLINE_CHECK > INLINE_STEPS else 0

    def _query_inline(
        self, conn: sqlite3.Connection, sql: str, args: tuple[object, ...]
    ) -> list[Row] | None:
        """The statement's rows, run on the caller's thread; None when it went over its budget
        of steps or met a lock (then nothing was returned and the caller runs it on a thread).

        A reader in WAL mode reads the last commit from the page cache without waiting for the
        writer; a few hundred steps cost less than handing the statement to a reader thread
        and back, which was the largest cost of a metadata GET (bench/README.md, reads)."""
        self._inline_checks = 0
        try:
            return cast(list[Row], conn.execute(sql, args).fetchall())
        except sqlite3.OperationalError as exc:
            # "interrupted" (over budget), "database is locked" (a checkpoint, a recovery)
            if exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_INTERRUPT, sqlite3.SQLITE_BUSY):
                return None
            raise

    async def open_readonly(self) -> None:
        """Open for reading only (fsck, stat): never creates or changes the file."""
        self.path = await asyncio.to_thread(self.path.absolute)
        if not await asyncio.to_thread(self.path.exists):
            raise FileNotFoundError(self.path)
        await self._open_readers()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[SqliteTx]:
        """A write transaction (BEGIN IMMEDIATE): committed on normal exit, rolled back on error."""
        if self._writer is None:
            raise RuntimeError("database is not open for writing")
        conn = self._writer
        async with self._write_lock:
            # BEGIN inside the try: a caller cancelled while it runs has not stopped it (the
            # connection's thread runs it anyway), so the rollback must follow it; a rollback
            # with no transaction open does nothing.  Statements run in order on the
            # connection's thread, so the rollback always comes after the BEGIN.
            tx = SqliteTx(conn)
            with _full_as_store_full():
                try:
                    await conn.execute("BEGIN IMMEDIATE")
                    yield tx
                except BaseException:
                    await asyncio.shield(conn.rollback())
                    raise
                try:
                    await asyncio.shield(conn.commit())
                except BaseException:
                    # A failed COMMIT (SQLITE_FULL, IOERR, a deferred constraint) may leave the
                    # transaction open, and then every later BEGIN would fail.  After a
                    # cancelled (still running) commit this is a no-op: it runs after it.
                    await asyncio.shield(conn.rollback())
                    raise

    @asynccontextmanager
    async def write_unit(
        self,
        *,
        committed: Callable[[], None] | None = None,
        durable: Callable[[], None] | None = None,
    ) -> AsyncIterator[UnitTx]:
        """A write transaction recorded in the block and run as one unit at its end
        (:mod:`blobstore.engine.sqlite_unit`): nothing is written when the block raises.  The
        writer lock is free again once the unit has committed; ``committed`` is called then (or
        when it failed), ``durable`` once its WAL flush has finished, both from the threads'
        answers themselves, and the block's exit waits until the unit is durable."""
        units = self._units
        if units is None:
            raise RuntimeError("database is not open for writing")
        tx = UnitTx()
        tell = once(committed)
        try:
            yield tx
            async with self._write_lock:
                with _full_as_store_full():
                    flushed = await units.run(tx.operations, tell, durable)
        finally:
            tell()
        if flushed is not None:
            await flushed
        elif durable is not None:
            durable()  # durable with its COMMIT (SQLite syncs), or nothing was written

    @asynccontextmanager
    async def read(self) -> AsyncIterator[SqliteTx]:
        """A consistent read snapshot (a deferred transaction on an idle reader connection)."""
        if not self._readers:
            raise RuntimeError("database is not open")
        conn = await self._idle.get()
        try:
            # BEGIN inside the try (see write): a cancelled BEGIN still runs, and the connection
            # must not go back to the pool inside a transaction.
            try:
                await conn.execute("BEGIN")
                yield SqliteTx(conn)
            finally:
                await asyncio.shield(conn.rollback())
        finally:
            self._idle.put_nowait(conn)

    async def query(self, sql: str, *args: object) -> list[Row]:
        if not self._readers:
            raise RuntimeError("database is not open")
        if self._inline is not None:
            rows = self._query_inline(self._inline, sql, args)
            if rows is not None:
                return rows
        conn = await self._idle.get()
        try:
            # Reader connections are in autocommit (isolation_level None): the statement is its
            # own transaction.  A caller cancelled here leaves it running on the connection's
            # thread; the next user of the connection queues behind it there.
            return cast(list[Row], list(await conn.execute_fetchall(sql, args)))
        finally:
            self._idle.put_nowait(conn)

    async def ping(self) -> None:
        async with self.read() as tx:
            await tx.fetch("SELECT 1")

    async def close(self) -> None:
        """Close the connections.  Idempotent."""
        for conn in [*self._readers, self._writer]:
            if conn is not None:
                await conn.close()
        units, self._units = self._units, None
        if units is not None:
            await units.close()
        inline, self._inline = self._inline, None
        if inline is not None:
            inline.close()
        self._readers = []
        self._idle = asyncio.Queue()
        self._writer = None


def is_sqlite_error(exc: BaseException) -> bool:
    """True for errors of the SQLite library (a damaged or foreign file, a locked database)."""
    return isinstance(exc, sqlite3.Error)

"""SQLite, the embedded metadata engine, shared by manifests and by the service's own tables.

One writer connection behind an asyncio lock (SQLite has one writer anyway, and statements of two
coroutines must never interleave inside one transaction) and one reader connection; WAL lets the
reader see the last commit while a write is in progress.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

# FULL: a commit is on disk before the caller is answered, so an acknowledged upload survives
# power loss as well as kill -9 (its blobs are fsynced too).  NORMAL is offered for benchmarks.
DEFAULT_SYNCHRONOUS = "FULL"
# Wait this long for a lock held by another process (the CLI, a second server) before failing.
BUSY_TIMEOUT_MS = 10_000
_SYNC_MODES = {"OFF", "NORMAL", "FULL", "EXTRA"}


class Database:
    """The SQLite file with its two connections."""

    def __init__(self, path: Path, *, synchronous: str = DEFAULT_SYNCHRONOUS) -> None:
        if synchronous.upper() not in _SYNC_MODES:
            raise ValueError(f"synchronous must be one of {sorted(_SYNC_MODES)}")
        self.path = path
        self._synchronous = synchronous.upper()
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()

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
        """Open both connections and apply ``schema`` (idempotent DDL) in one transaction."""
        await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
        self._writer = await self._connect(readonly=False)
        if schema:
            async with self.write() as conn:
                for ddl in schema:
                    await conn.execute(ddl)
        self._reader = await self._connect(readonly=True)

    async def open_readonly(self) -> None:
        """Open for reading only (fsck, stat): never creates or changes the file."""
        if not await asyncio.to_thread(self.path.exists):
            raise FileNotFoundError(self.path)
        self._reader = await self._connect(readonly=True)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction (BEGIN IMMEDIATE): committed on normal exit, rolled back on error."""
        if self._writer is None:
            raise RuntimeError("database is not open for writing")
        conn = self._writer
        async with self._write_lock:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                await asyncio.shield(conn.rollback())
                raise
            else:
                await asyncio.shield(conn.commit())

    @asynccontextmanager
    async def read(self) -> AsyncIterator[aiosqlite.Connection]:
        """A consistent read snapshot (a deferred transaction on the reader connection)."""
        if self._reader is None:
            raise RuntimeError("database is not open")
        conn = self._reader
        async with self._read_lock:
            await conn.execute("BEGIN")
            try:
                yield conn
            finally:
                await asyncio.shield(conn.rollback())

    async def close(self) -> None:
        """Close both connections.  Idempotent."""
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

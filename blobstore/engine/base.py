"""The one small database interface both metadata engines implement.

Every module that owns a table writes its SQL once, with ``?`` placeholders and the portable
subset SQLite and PostgreSQL share; what differs between the two (placeholder syntax, row locks,
``SKIP LOCKED``, advisory locks) is spelled here and in the two engines, nowhere else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import xxhash

from blobstore.errors import BlobStoreError

DialectName = Literal["sqlite", "postgresql"]


@dataclass(frozen=True)
class Dialect:
    """The few clauses the two engines spell differently."""

    name: DialectName
    # Appended to a SELECT that must lock the rows it reads until the transaction ends.  SQLite
    # has one writer: a write transaction holds every row already.
    for_update: str
    # Appended to a SELECT claiming queue rows: rows another transaction holds are passed over.
    skip_locked: str


SQLITE = Dialect("sqlite", for_update="", skip_locked="")
# NO KEY UPDATE: writers of one row exclude each other, while foreign-key checks of other
# transactions (which take KEY SHARE on the referenced row) are not blocked by it.
POSTGRESQL = Dialect(
    "postgresql", for_update=" FOR NO KEY UPDATE", skip_locked=" FOR UPDATE SKIP LOCKED"
)


class Row(Protocol):
    """A result row: by position or by column name (sqlite3.Row and asyncpg.Record both are)."""

    def __getitem__(self, key: int | str, /) -> Any: ...


class DatabaseUnavailable(BlobStoreError):
    """The metadata engine cannot be reached (connection refused or lost).  Transient: nothing
    of the transaction in progress was committed; the caller may retry later."""


class BadDatabaseUrl(ValueError):
    """``FILESVC_DB_URL`` names no engine this build can open."""


class Tx(Protocol):
    """A transaction: statements run in order, committed together or not at all."""

    dialect: Dialect
    # True in a transaction of :meth:`Engine.write_unit` on SQLite: nothing runs until the
    # block ends, so only the ``*_later`` operations (and ``lock``) may be used in it.
    runs_later: bool

    async def execute(self, sql: str, *args: object) -> int:
        """Run one statement; return the number of rows it changed."""

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        """Run one statement for each row of arguments."""

    async def executemany_later(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        """:meth:`executemany`, possibly still running when this returns: it runs before the
        transaction's next statement or commit, and its error is raised there (the
        transaction rolls back).  For a group commit's inserts, which nothing reads back."""

    async def check_later(self, check: Callable[[], None]) -> None:
        """Run ``check``, a short blocking function (a few file system calls), inside the
        transaction, in order with its statements and under its locks; what it raises rolls
        the transaction back and reaches the caller.  Like :meth:`executemany_later`, it may
        run only when the transaction's next statement or commit does."""

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        """Every row of a query."""

    async def fetchrow(self, sql: str, *args: object) -> Row | None:
        """The first row of a query, or None."""

    def stream(self, sql: str, *args: object) -> AsyncIterator[Row]:
        """The rows of a large query, a batch at a time (memory holds one batch)."""

    async def lock(self, name: str, *, shared: bool = False) -> None:
        """Take the named lock until the transaction ends.  ``shared`` holders exclude only an
        exclusive holder.  On SQLite a write transaction already excludes every other writer,
        so this does nothing there."""


class Engine(Protocol):
    """A metadata database: snapshots to read, transactions to write."""

    dialect: Dialect

    def read(self) -> AbstractAsyncContextManager[Tx]:
        """A consistent read-only snapshot."""

    def write(self) -> AbstractAsyncContextManager[Tx]:
        """A write transaction, committed on normal exit and rolled back on error."""

    def write_unit(
        self,
        *,
        committed: Callable[[], None] | None = None,
        durable: Callable[[], None] | None = None,
    ) -> AbstractAsyncContextManager[Tx]:
        """A write transaction made only of ``executemany_later``, ``check_later`` and
        ``lock``, run as one unit when the block ends: on SQLite, recorded and then run in one
        call on a database thread (BEGIN IMMEDIATE, each operation in order, COMMIT), so the
        writer lock is held for SQLite's own time, never across a turn of a busy event loop
        (the group commit of small uploads, :mod:`filesvc.creates`).  On PostgreSQL, where
        each statement is a round trip anyway and other transactions only wait for the rows
        and locks it takes, it is :meth:`write`.  ``committed`` is called on the event loop once
        the next unit may commit (this one has committed or failed), which can be before this
        one is durable; the block's exit always waits for durability.  ``durable`` is called on
        the event loop once the unit is durable, as early as the engine knows it and at the
        latest as the block exits normally (never when it raises): whoever waits on the unit can
        be answered from there, a turn before the block's own task resumes."""

    async def query(self, sql: str, *args: object) -> list[Row]:
        """Every row of one read-only statement, run outside an explicit transaction.  One
        statement is its own consistent snapshot, so a read that fits in one costs one round
        trip (one hand-off to a database thread) instead of the three of :meth:`read` (begin,
        statement, end).  The hot reads use it: a file's metadata, a download's chunks."""

    async def ping(self) -> None:
        """Raise DatabaseUnavailable unless a trivial query answers now."""

    @property
    def ready(self) -> bool:
        """True once the engine is connected and its schema is current."""

    async def close(self) -> None:
        """Release connections.  Idempotent."""


# Values in one ``IN (...)`` list at most: far below either engine's limit on parameters.
IN_BATCH = 500


async def fetch_in(tx: Tx, sql: str, values: Iterable[object]) -> list[Row]:
    """The rows of ``sql`` for every one of ``values``: ``sql`` ends with ``IN ({marks})``,
    filled with a batch of parameters at a time."""
    out: list[Row] = []
    batch = list(values)
    for i in range(0, len(batch), IN_BATCH):
        part = batch[i : i + IN_BATCH]
        out += await tx.fetch(sql.format(marks=", ".join("?" * len(part))), *part)
    return out


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for a lock name (PostgreSQL advisory locks take a bigint)."""
    return xxhash.xxh3_64_intdigest(name.encode()) - (1 << 63)
